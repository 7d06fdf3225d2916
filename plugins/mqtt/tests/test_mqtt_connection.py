"""The connection itself: device wills, broker restarts, the persistent session."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiomqtt
import voltwatch_mqtt
from mqtt_testkit import DEVICE, PushRecorder, conditions, make_hub, wait_until
from voltwatch_mqtt.testing import MosquittoBroker


async def test_device_will_marks_it_offline_when_its_connection_dies(
    tmp_path, mosquitto, recorder, hub
) -> None:
    seen = conditions(hub)
    # The CLI simulator in its own process, so it can die without a goodbye (SIGKILL).
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "simulate", "mqtt-device", "--host", mosquitto.host,
        "--port", str(mosquitto.port), "--device-id", DEVICE, "--interval", "3600",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert (await recorder.next("status", timeout=30)).payload == {"status": "online"}
        assert (await recorder.next("telemetry")).payload["values"].keys() == {
            "smoke_level", "battery", "temperature"}
        assert hub.states.get("binary_sensor.smoke_1_online").state == "on"

        os.kill(process.pid, signal.SIGKILL)

        assert (await recorder.next("status")).payload == {"status": "offline"}
        assert hub.states.get("binary_sensor.smoke_1_online").state == "off"
        assert (seen[-1]["type"], seen[-1]["active"]) == ("communication_lost", True)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_clean_simulator_stop_says_offline(tmp_path, mosquitto, recorder, hub) -> None:
    from voltwatch_mqtt.simulator import SimOptions, SimulatedDevice

    device = SimulatedDevice(DEVICE, SimOptions(host=mosquitto.host, port=mosquitto.port,
                                                interval=3600))
    task = asyncio.get_running_loop().create_task(device.run())
    assert (await recorder.next("status")).payload == {"status": "online"}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await recorder.next("status")).payload == {"status": "offline"}


async def test_reconnects_after_the_broker_restarts(tmp_path, mosquitto, recorder, hub) -> None:
    connection = voltwatch_mqtt.get_connection(hub)
    mosquitto.stop()
    await wait_until(lambda: not connection.connected)
    assert connection.stats()["connected"] == 0
    mosquitto.start()
    await wait_until(lambda: connection.ready)
    assert connection.reconnects == 1

    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(f"voltwatch/dev/{DEVICE}/telemetry",
                             json.dumps({"values": {"after": 1}}), qos=1)
    assert (await recorder.next("telemetry")).payload["values"] == {"after": 1}


async def test_persistent_session_delivers_what_was_published_while_away(tmp_path) -> None:
    broker = MosquittoBroker(tmp_path / "broker", persistence=True)
    broker.start()
    recorder = PushRecorder()
    try:
        hub = await make_hub(tmp_path / "hub", broker, recorder)
        connection = voltwatch_mqtt.get_connection(hub)
        await connection.stop()  # a clean disconnect: the broker keeps the session
        broker.restart()  # and keeps it across its own restart (persistence file)

        async with aiomqtt.Client(broker.host, broker.port) as client:
            for n in range(20):
                await client.publish(f"voltwatch/dev/{DEVICE}/telemetry",
                                     json.dumps({"values": {"n": n}}), qos=1)

        connection.start()
        await connection.wait_ready()
        got = [(await recorder.next("telemetry")).payload["values"]["n"] for _ in range(20)]
        assert got == list(range(20))
        await connection.stop()
    finally:
        broker.stop()


async def test_stable_client_id_is_kept_in_the_config_dir(tmp_path) -> None:
    from voltwatch_mqtt.settings import MqttSettings

    first = MqttSettings.from_config({}, tmp_path, "张家口示范")
    again = MqttSettings.from_config({}, tmp_path, "张家口示范")
    other = MqttSettings.from_config({}, tmp_path / "elsewhere", "张家口示范")
    assert first.client_id == again.client_id
    assert first.client_id != other.client_id
    assert first.client_id.startswith("vw-hub-")
    assert MqttSettings.from_config({"client_id": "mine"}, tmp_path).client_id == "mine"


async def test_tcp_nodelay_is_set_on_the_hub_s_socket_when_configured(tmp_path,
                                                                      mosquitto) -> None:
    """Without TCP_NODELAY a lone command or forwarded call waits for the broker's delayed ACK
    (Nagle), ~40 ms per hop measured here (docs/plugins/mqtt.md, "Latency"): always on for the
    priority lane, on the bulk lane with `mqtt.tcp_nodelay`."""
    import socket

    found = {}
    for name, wanted in (("off", False), ("on", True)):
        hub = await make_hub(tmp_path / name, mosquitto, client_id=f"nodelay-{name}",
                             tcp_nodelay=wanted)
        connection = voltwatch_mqtt.get_connection(hub)
        try:
            found[name] = {lane.name: lane.client._client.socket().getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY) for lane in connection.lanes}
        finally:
            await connection.stop()
    assert found == {"off": {"bulk": 0, "priority": 1}, "on": {"bulk": 1, "priority": 1}}
