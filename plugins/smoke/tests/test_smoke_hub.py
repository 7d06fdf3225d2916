"""The smoke plugin in a real, started Hub on a private Mosquitto: telemetry, alarms, commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from smoke_testkit import (
    EventWaiter,
    hub_config,
    plugins,
    ready,
    smoke_device,
    start_detector,
    stop_task,
    wait_state,
)
from voltwatch_mqtt.testing import MosquittoBroker, find_mosquitto
from voltwatch_smoke import runtime_for

from hub.core.config import ConfigError
from hub.core.services import ServiceError, ServiceValidationError
from hub.hub import Hub


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (make test installs it with apt-get)")
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
async def hub(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[Hub]:
    hub = Hub(tmp_path, config=hub_config(tmp_path, broker, [smoke_device()]),
              plugin_manager=plugins())
    await hub.async_start()
    try:
        assert hub.plugins.failures == []
        await ready(hub)
        yield hub
    finally:
        await hub.async_stop()


async def test_telemetry_becomes_entities(hub: Hub, broker: MosquittoBroker) -> None:
    detector, task = await start_detector(broker)
    try:
        await detector.publish_telemetry({"smoke_level": 12, "battery": 87, "temperature": 25.1,
                                          "humidity": 40})
        state = await wait_state(hub, "sensor.smoke_1_temperature", lambda s: s.state == "25.1")
        assert state.attributes["unit_of_measurement"] == "°C"
        assert state.attributes["friendly_name"] == "厨房烟感 温度"
        assert hub.states.get("sensor.smoke_1_smoke_level").state == "12"
        battery = hub.states.get("sensor.smoke_1_battery")
        assert battery.state == "87" and battery.attributes["unit_of_measurement"] == "%"
        await wait_state(hub, "sensor.smoke_1_humidity", lambda s: s.state == "40")
        assert hub.states.get("binary_sensor.smoke_1_smoke").state == "unknown"
        assert hub.entities.get("sensor.smoke_1_battery") is not None
        await wait_state(hub, "binary_sensor.smoke_1_online", lambda s: s.state == "on")
    finally:
        await stop_task(task)


async def test_smoke_alarm_becomes_an_alarm_record(hub: Hub, broker: MosquittoBroker) -> None:
    raised = EventWaiter(hub, "alarm_raised")
    cleared = EventWaiter(hub, "alarm_cleared")
    detector, task = await start_detector(broker)
    try:
        await detector.publish_event("smoke_alarm", "active")
        record = await raised.wait(lambda r: r["type"] == "smoke")
        assert record["kind"] == "alarm" and record["severity"] == "critical"
        assert record["message"] == "烟雾报警" and record["message_en"] == "Smoke alarm"
        assert record["device_id"] == "smoke-1" and record["project"] == "school-1-b"
        assert record["location"] == "厨房" and record["sources"] == ["smoke"]
        assert hub.states.get("binary_sensor.smoke_1_smoke").state == "on"
        await hub.alarms.async_flush()
        stored = await hub.alarms.store.get(record["id"])
        assert stored["status"] == "active" and stored["message"] == "烟雾报警"

        await detector.publish_event("smoke_alarm", "active")  # a repeat is not a new alarm
        await detector.publish_event("smoke_alarm", "cleared")
        done = await cleared.wait(lambda r: r["type"] == "smoke")
        assert done["id"] == record["id"] and done["status"] == "cleared"
        assert len([e for e in raised.seen if e.data["type"] == "smoke"]) == 1
        assert hub.states.get("binary_sensor.smoke_1_smoke").state == "off"
    finally:
        await stop_task(task)


async def test_low_battery_and_tamper_are_faults(hub: Hub, broker: MosquittoBroker) -> None:
    raised = EventWaiter(hub, "alarm_raised")
    cleared = EventWaiter(hub, "alarm_cleared")
    detector, task = await start_detector(broker)
    try:
        # From the percentage (below low_battery_level, 20 % by default) ...
        await detector.publish_telemetry({"battery": 15})
        low = await raised.wait(lambda r: r["type"] == "low_battery")
        assert low["kind"] == "fault" and low["message"] == "电池欠压 15.0%"
        assert low["sources"] == ["smoke_battery"]
        # ... and the detector's own event join one record; both must let go to clear it.
        await detector.publish_event("low_battery", "active")
        await detector.publish_telemetry({"battery": 100})
        await detector.publish_event("low_battery", "cleared")
        assert (await cleared.wait(lambda r: r["type"] == "low_battery"))["id"] == low["id"]

        await detector.publish_event("tamper", "active")
        tamper = await raised.wait(lambda r: r["type"] == "tamper")
        assert tamper["kind"] == "fault" and tamper["message"] == "防拆"
        assert hub.states.get("binary_sensor.smoke_1_tamper").state == "on"
        await detector.publish_event("fault", "active", code=7)
        fault = await raised.wait(lambda r: r["type"] == "device_fault")
        assert fault["message"] == "设备故障：故障码 7"
        await detector.publish_event("tamper", "cleared")
        await cleared.wait(lambda r: r["type"] == "tamper")
        assert hub.states.get("binary_sensor.smoke_1_tamper").state == "off"
    finally:
        await stop_task(task)


async def test_retained_offline_is_communication_lost(hub: Hub, broker: MosquittoBroker) -> None:
    raised = EventWaiter(hub, "alarm_raised")
    cleared = EventWaiter(hub, "alarm_cleared")
    async with aiomqtt.Client(broker.host, broker.port, identifier="bridge") as client:
        await client.publish("voltwatch/dev/smoke-1/status", b"offline", qos=1, retain=True)
        lost = await raised.wait(lambda r: r["type"] == "communication_lost")
        assert lost["message"].startswith("通讯中断") and lost["sources"] == ["mqtt"]
        await wait_state(hub, "binary_sensor.smoke_1_online", lambda s: s.state == "off")
        await client.publish("voltwatch/dev/smoke-1/status", b"online", qos=1, retain=True)
        assert (await cleared.wait(lambda r: r["type"] == "communication_lost"))["id"] == \
            lost["id"]


async def test_silence_longer_than_the_interval_is_communication_lost(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    # 0.2 s reporting interval: silent for 0.5 s (2.5 x) is lost. No retained status at all,
    # so only the watchdog can notice.
    hub = Hub(tmp_path, config=hub_config(tmp_path, broker, [
        smoke_device("smoke-9", reporting_interval="200ms")]), plugin_manager=plugins())
    raised = EventWaiter(hub, "alarm_raised")
    cleared = EventWaiter(hub, "alarm_cleared")
    await hub.async_start()
    try:
        await ready(hub)
        lost = await raised.wait(lambda r: r["type"] == "communication_lost")
        assert lost["device_id"] == "smoke-9" and lost["sources"] == ["smoke"]
        assert lost["message"] == "通讯中断：超过0.5秒未上报"
        assert hub.states.get("binary_sensor.smoke_9_online").state == "off"
        async with aiomqtt.Client(broker.host, broker.port, identifier="bridge") as client:
            await client.publish("voltwatch/dev/smoke-9/telemetry",
                                 b'{"values": {"smoke_level": 3}}', qos=1)
            done = await cleared.wait(lambda r: r["type"] == "communication_lost")
        assert done["id"] == lost["id"]
        assert runtime_for(hub).detectors["smoke-9"].silence_limit == 0.5
    finally:
        await hub.async_stop()


async def test_a_hub_behind_on_its_readings_does_not_call_its_detectors_silent(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    # Issue 12: a hub that fell behind its telemetry declared thousands of detectors lost
    # (their reports waited in its own queue), and those false alarms pushed it further
    # behind. The bulk lane's lag probe tells the watchdog how far behind the hub is.
    import asyncio

    import voltwatch_mqtt

    hub = Hub(tmp_path, config=hub_config(tmp_path, broker, [
        smoke_device("smoke-9", reporting_interval="1s")]), plugin_manager=plugins())
    raised = EventWaiter(hub, "alarm_raised")
    await hub.async_start()
    release = asyncio.Event()
    try:
        await ready(hub)
        detector = runtime_for(hub).detectors["smoke-9"]
        lag = voltwatch_mqtt.get_connection(hub).lag
        handle = hub.push_handlers["smoke"]

        async def behind(device: Any, message: Any) -> None:  # the hub's CPU, busy elsewhere
            if message.kind == "telemetry" and message.payload["values"].get("held"):
                await release.wait()
            handle(device, message)

        hub.push_handlers["smoke"] = behind
        async with aiomqtt.Client(broker.host, broker.port, identifier="bridge") as client:
            await client.publish("voltwatch/dev/smoke-9/telemetry",
                                 b'{"values": {"smoke_level": 1}}', qos=1)
            await wait_state(hub, "sensor.smoke_9_smoke_level", lambda s: s.state == "1")
            await client.publish("voltwatch/dev/smoke-9/telemetry",
                                 b'{"values": {"smoke_level": 2, "held": 1}}', qos=1)
            # Well past the 2.5 s silence limit counted from the last handled report.
            deadline = asyncio.get_running_loop().time() + 20  # a failure bound only
            while lag.seconds() <= 2 * detector.silence_limit:
                assert asyncio.get_running_loop().time() < deadline, "no lag measured"
                await asyncio.sleep(0.05)
            assert detector.silent is False
            assert [r for r in raised.seen if r.data["type"] == "communication_lost"] == []
            release.set()
            await wait_state(hub, "sensor.smoke_9_smoke_level", lambda s: s.state == "2")
        assert detector.silent is False
        assert lag.stats()["intake_lag_max_seconds"] > 2 * detector.silence_limit
    finally:
        release.set()
        await hub.async_stop()


async def test_silence_watchdogs_start_when_the_hub_serves_not_during_set_up(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    # A long start (100,000 devices) must not count as silence: every detector's entities
    # are registered during set-up, but its watchdog is armed only at hub_started.
    hub = Hub(tmp_path, config=hub_config(tmp_path, broker, [
        smoke_device("smoke-1"), smoke_device("smoke-2", name="走廊烟感", location="走廊")]),
        plugin_manager=plugins())
    at_started: dict[str, bool] = {}

    def started(event: Any) -> None:  # subscribed before the plugin's own listener
        at_started.update({device_id: detector._timer is not None
                           for device_id, detector in runtime_for(hub).detectors.items()})

    hub.bus.listen("hub_started", started)
    await hub.async_start()
    try:
        assert at_started == {"smoke-1": False, "smoke-2": False}
        detectors = runtime_for(hub).detectors
        assert all(d._timer is not None for d in detectors.values())
        assert hub.entities.get("sensor.smoke_2_battery").device_id == "smoke-2"
        assert hub.states.get("binary_sensor.smoke_2_smoke").state == "unknown"
        assert hub.states.get("binary_sensor.smoke_2_muted").state == "off"
    finally:
        await hub.async_stop()


async def test_mute_and_self_test_answer_after_the_ack(hub: Hub, broker: MosquittoBroker) -> None:
    raised = EventWaiter(hub, "alarm_raised")
    detector, task = await start_detector(broker)
    try:
        await wait_state(hub, "binary_sensor.smoke_1_online", lambda s: s.state == "on")
        context = hub.context(user_id="alice")
        result = await hub.services.async_call("smoke", "mute", {"device_id": "smoke-1"},
                                               context=context, return_response=True)
        assert result["confirmed"] is True and result["ack"]["ok"] is True
        assert detector.stats.commands[-1]["command"] == "mute"
        assert hub.states.get("binary_sensor.smoke_1_muted").state == "on"
        muted = await raised.wait(lambda r: r["type"] == "muted")
        assert muted["kind"] == "event" and muted["message"] == "消音"

        result = await hub.services.async_call("smoke", "self_test", {"device_id": "smoke-1"},
                                               return_response=True)
        assert result["command"] == "self_test"
        test = await raised.wait(lambda r: r["type"] == "self_test")
        assert test["message"] == "自检：通过"
        await wait_state(hub, "sensor.smoke_1_self_test", lambda s: s.state == "pass")

        detector.options.self_test_fails = True
        await hub.services.async_call("smoke", "self_test", {"device_id": "smoke-1"})
        fault = await raised.wait(lambda r: r["type"] == "device_fault")
        assert fault["message"] == "设备故障：自检失败"

        detector.options.refuse = True
        with pytest.raises(ServiceError, match="refused by the device"):
            await hub.services.async_call("smoke", "mute", {"device_id": "smoke-1"})
        with pytest.raises(ServiceValidationError):
            await hub.services.async_call("smoke", "mute", {"device_id": "nobody"})
    finally:
        await stop_task(task)
    # The detector went away (its retained offline): a command fails at once with the reason.
    await wait_state(hub, "binary_sensor.smoke_1_online", lambda s: s.state == "off")
    with pytest.raises(ServiceError, match="offline"):
        await hub.services.async_call("smoke", "self_test", {"device_id": "smoke-1"})


async def test_a_new_alarm_ends_the_mute(hub: Hub, broker: MosquittoBroker) -> None:
    detector, task = await start_detector(broker)
    try:
        await wait_state(hub, "binary_sensor.smoke_1_online", lambda s: s.state == "on")
        await hub.services.async_call("smoke", "mute", {"device_id": "smoke-1"})
        assert hub.states.get("binary_sensor.smoke_1_muted").state == "on"
        await detector.start_alarm()
        await wait_state(hub, "binary_sensor.smoke_1_smoke", lambda s: s.state == "on")
        assert hub.states.get("binary_sensor.smoke_1_muted").state == "off"
    finally:
        await stop_task(task)


async def test_device_schema_is_checked(tmp_path: Path, broker: MosquittoBroker) -> None:
    hub = Hub(tmp_path, config=hub_config(tmp_path, broker, [
        smoke_device(reporting_interval="never")]), plugin_manager=plugins())
    with pytest.raises(ConfigError, match="reporting_interval"):
        await hub.async_start()
