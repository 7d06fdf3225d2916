"""Commands through the `mqtt` link: ack, refusal, timeout, offline and broker-down cases."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest
import voltwatch_mqtt
from mqtt_testkit import DEVICE, PushRecorder, make_hub, wait_until
from voltwatch_mqtt.simulator import SimOptions, SimulatedDevice

from hub.core.push import CommandError, CommandLink
from hub.hub import Hub


def sim_options(broker, **extra) -> SimOptions:
    return SimOptions(host=broker.host, port=broker.port, interval=3600, publish_on_connect=False,
                      **extra)


async def start_device(run_task, broker, device_id: str = DEVICE, **extra) -> SimulatedDevice:
    device = SimulatedDevice(device_id, sim_options(broker, **extra))
    run_task(device.run())
    await asyncio.wait_for(device.connected.wait(), 10)
    return device


def link(hub: Hub) -> CommandLink:
    return hub.links.acquire({"transport": "mqtt"})


@pytest.fixture(autouse=True)
def _links(hub: Hub) -> None:
    """What Hub.async_start does with the voltwatch_link_factories hook."""
    hub.links.factories.update(voltwatch_mqtt.voltwatch_link_factories(hub))


async def test_command_is_acknowledged(hub: Hub, mosquitto, run_task, recorder) -> None:
    device = await start_device(run_task, mosquitto)
    mqtt_link = link(hub)
    assert isinstance(mqtt_link, CommandLink)
    assert mqtt_link.key == "mqtt"

    ack = await mqtt_link.command(DEVICE, "mute", {"duration": 60})

    assert ack["ok"] is True
    [sent] = device.stats.commands
    assert sent["command"] == "mute"
    assert sent["params"] == {"duration": 60}
    assert sent["id"] == ack["id"]
    stats = voltwatch_mqtt.stats(hub)
    assert (stats["commands_sent"], stats["commands_acked"], stats["commands_failed"]) == (1, 1, 0)
    # The device plugin hears the ack too.
    assert (await recorder.next("ack")).payload["id"] == ack["id"]


async def test_self_test_command_is_followed_by_the_device_event(
    hub: Hub, mosquitto, run_task, recorder
) -> None:
    await start_device(run_task, mosquitto)
    await link(hub).command(DEVICE, "self_test")
    event = await recorder.next("event")
    assert event.payload["event"] == "self_test"


async def test_refused_command_raises_with_the_reason(hub: Hub, mosquitto, run_task) -> None:
    await start_device(run_task, mosquitto, refuse=True)
    with pytest.raises(CommandError, match="refused by the device.*--refuse"):
        await link(hub).command(DEVICE, "trip")
    stats = voltwatch_mqtt.stats(hub)
    assert (stats["commands_refused"], stats["commands_failed"]) == (1, 1)


async def test_unknown_command_is_refused(hub: Hub, mosquitto, run_task) -> None:
    await start_device(run_task, mosquitto)
    with pytest.raises(CommandError, match="unknown command 'dance'"):
        await link(hub).command(DEVICE, "dance")


async def test_command_without_ack_times_out(hub: Hub, publisher: aiomqtt.Client) -> None:
    await publisher.subscribe(f"voltwatch/cmd/{DEVICE}", qos=1)  # received, never answered
    with pytest.raises(CommandError, match="no ack within 0.2s"):
        await link(hub).command(DEVICE, "reset", timeout=0.2)
    message = await asyncio.wait_for(anext(publisher.messages), 10)
    assert json.loads(message.payload)["command"] == "reset"
    stats = voltwatch_mqtt.stats(hub)
    assert (stats["commands_timed_out"], stats["commands_pending"]) == (1, 0)


async def test_late_ack_is_ignored(hub: Hub, publisher: aiomqtt.Client) -> None:
    connection = voltwatch_mqtt.get_connection(hub)
    await publisher.publish(f"voltwatch/dev/{DEVICE}/ack", json.dumps({"id": "old", "ok": True}),
                            qos=1)
    await publisher.publish(f"voltwatch/dev/{DEVICE}/telemetry", json.dumps({"values": {}}), qos=1)
    await wait_until(lambda: connection.kinds["telemetry"] == 1)
    assert connection.acks_unmatched == 1


async def test_command_timeout_from_the_device_link(hub: Hub, publisher) -> None:
    await hub.devices.async_upsert(id="slow-1", platform="testpush",
                                   link={"transport": "mqtt", "command_timeout": 0.1})
    assert voltwatch_mqtt.get_connection(hub).command_timeout("slow-1") == 0.1
    assert voltwatch_mqtt.get_connection(hub).command_timeout(DEVICE) == 10.0
    with pytest.raises(CommandError, match="no ack within 0.1s"):
        await link(hub).command("slow-1", "mute")


async def test_command_to_an_offline_device_fails_fast(hub: Hub, publisher, recorder) -> None:
    await publisher.publish(f"voltwatch/dev/{DEVICE}/status", b"offline", qos=1, retain=True)
    await recorder.next("status")
    with pytest.raises(CommandError, match="offline"):
        await link(hub).command(DEVICE, "trip")


async def test_command_without_broker_fails_fast(tmp_path, mosquitto) -> None:
    hub = await make_hub(tmp_path, mosquitto, PushRecorder())
    connection = voltwatch_mqtt.get_connection(hub)
    try:
        mosquitto.stop()
        await wait_until(lambda: not connection.connected)
        with pytest.raises(CommandError, match="not connected"):
            await connection.link.command(DEVICE, "trip")
    finally:
        await connection.stop()


async def test_waiting_for_an_ack_inside_a_handler_is_refused(
    tmp_path, mosquitto, publisher
) -> None:
    errors: list[str] = []

    async def handle(device, message) -> None:
        if message.kind == "telemetry":
            try:
                await voltwatch_mqtt.get_connection(hub).link.command(device.id, "mute")
            except CommandError as err:
                errors.append(str(err))

    hub = await make_hub(tmp_path, mosquitto, None)
    hub.push_handlers["testpush"] = handle
    try:
        await publisher.publish(f"voltwatch/dev/{DEVICE}/telemetry", json.dumps({"values": {}}),
                                qos=1)
        await wait_until(lambda: bool(errors))
        assert "hub.create_task" in errors[0]
    finally:
        await voltwatch_mqtt.get_connection(hub).stop()
