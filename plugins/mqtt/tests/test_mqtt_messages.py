"""Incoming messages against a real Mosquitto: telemetry, events, status, bad input."""

from __future__ import annotations

import json
import logging

import aiomqtt
import pytest
import voltwatch_mqtt
from mqtt_testkit import DEVICE, PLATFORM, PushRecorder, conditions, make_hub, wait_until

from hub.core.push import PushMessage
from hub.hub import Hub

TELEMETRY = f"voltwatch/dev/{DEVICE}/telemetry"
EVENT = f"voltwatch/dev/{DEVICE}/event"
STATUS = f"voltwatch/dev/{DEVICE}/status"


async def test_telemetry_is_handed_to_the_platform_handler(
    hub: Hub, publisher: aiomqtt.Client, recorder: PushRecorder
) -> None:
    payload = {"ts": 1764480000.5, "values": {"smoke_level": 12, "battery": 87, "temperature": 25.1}}
    await publisher.publish(TELEMETRY, json.dumps(payload), qos=1)

    message = await recorder.next("telemetry")

    assert message.device_id == DEVICE
    assert message.payload == payload
    assert message.ts == 1764480000.5
    assert message.source == TELEMETRY
    stats = voltwatch_mqtt.stats(hub)
    assert stats["messages_telemetry"] == 1
    assert stats["malformed"] == 0


async def test_telemetry_without_ts_gets_the_arrival_time(
    hub: Hub, publisher: aiomqtt.Client, recorder: PushRecorder
) -> None:
    await publisher.publish(TELEMETRY, json.dumps({"values": {"battery": 50}}), qos=1)
    message = await recorder.next("telemetry")
    assert message.ts > 1_700_000_000


async def test_events_in_order(hub: Hub, publisher: aiomqtt.Client, recorder: PushRecorder) -> None:
    for state in ("active", "cleared"):
        await publisher.publish(EVENT, json.dumps({"ts": 1.0, "event": "smoke_alarm",
                                                   "state": state}), qos=1)
    first = await recorder.next("event")
    second = await recorder.next("event")
    assert [first.payload["state"], second.payload["state"]] == ["active", "cleared"]
    assert first.payload["event"] == "smoke_alarm"


async def test_coroutine_handler_is_awaited_in_order(tmp_path, mosquitto, publisher) -> None:
    seen: list[int] = []

    async def handle(device, message: PushMessage) -> None:
        seen.append(message.payload["values"]["n"])

    hub = await make_hub(tmp_path, mosquitto, None)
    hub.push_handlers[PLATFORM] = handle
    try:
        for n in range(50):
            await publisher.publish(TELEMETRY, json.dumps({"values": {"n": n}}), qos=1)
        await wait_until(lambda: len(seen) == 50)
        assert seen == list(range(50))
    finally:
        await voltwatch_mqtt.get_connection(hub).stop()


async def test_retained_status_sets_online_and_communication_lost(
    tmp_path, mosquitto, publisher
) -> None:
    # Retained before the hub connects: the hub learns it when it subscribes.
    await publisher.publish(STATUS, b"online", qos=1, retain=True)
    recorder = PushRecorder()
    hub = await make_hub(tmp_path, mosquitto, recorder, start=False)
    seen = conditions(hub)
    connection = voltwatch_mqtt.get_connection(hub)
    connection.start()
    try:
        await connection.wait_ready()
        await recorder.next("status")
        assert hub.states.get("binary_sensor.smoke_1_online").state == "on"
        # The first online after start clears a communication_lost left from before a restart.
        assert [(c["type"], c["active"]) for c in seen] == [("communication_lost", False)]

        await publisher.publish(STATUS, b"offline", qos=1, retain=True)
        assert (await recorder.next("status")).payload == {"status": "offline"}
        state = hub.states.get("binary_sensor.smoke_1_online")
        assert state.state == "off"
        assert state.attributes["device_class"] == "connectivity"
        raised = seen[-1]
        assert (raised["type"], raised["kind"], raised["active"]) == (
            "communication_lost", "fault", True)
        assert raised["device_id"] == DEVICE
        assert raised["entity_id"] == "binary_sensor.smoke_1_online"
        assert raised["message"].startswith("通讯中断")

        # A repeated offline is not a new condition (transitions only).
        await publisher.publish(STATUS, b"offline", qos=1, retain=True)
        await recorder.next("status")
        assert len(seen) == 2

        await publisher.publish(STATUS, b"online", qos=1, retain=True)
        await recorder.next("status")
        assert hub.states.get("binary_sensor.smoke_1_online").state == "on"
        assert [(c["type"], c["active"]) for c in seen[-1:]] == [("communication_lost", False)]
        assert voltwatch_mqtt.stats(hub)["devices_online"] == 1
        await wait_until(lambda: hub.entities.get("binary_sensor.smoke_1_online") is not None)
    finally:
        await connection.stop()


async def test_malformed_payloads_are_counted_and_logged_with_the_topic(
    hub: Hub, publisher: aiomqtt.Client, recorder: PushRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voltwatch_mqtt")
    await publisher.publish(TELEMETRY, b"{not json", qos=1)
    await publisher.publish(TELEMETRY, b"\xff\xfe", qos=1)
    await publisher.publish(TELEMETRY, b"[1, 2]", qos=1)
    await publisher.publish(TELEMETRY, json.dumps({"smoke_level": 3}), qos=1)
    await publisher.publish(TELEMETRY, json.dumps({"ts": "yesterday", "values": {}}), qos=1)
    await publisher.publish(EVENT, json.dumps({"state": "active"}), qos=1)
    await publisher.publish(EVENT, json.dumps({"event": "smoke_alarm", "state": "maybe"}), qos=1)
    await publisher.publish(STATUS, b"sleeping", qos=1)
    await publisher.publish(TELEMETRY, json.dumps({"values": {"battery": 80}}), qos=1)

    good = await recorder.next()

    assert good.kind == "telemetry"
    assert good.payload == {"values": {"battery": 80}}
    assert recorder.messages == [good]
    stats = voltwatch_mqtt.stats(hub)
    assert stats["malformed_bad_json"] == 2
    assert stats["malformed_bad_shape"] == 5
    assert stats["malformed_bad_status"] == 1
    assert stats["malformed"] == 8
    logged = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(logged) == 8
    assert all(DEVICE in line for line in logged)
    assert any(TELEMETRY in line and "bad_json" in line for line in logged)
    assert any(STATUS in line and "bad_status" in line for line in logged)


async def test_bad_topics_are_counted_without_a_broker(hub: Hub) -> None:
    connection = voltwatch_mqtt.get_connection(hub)
    connection.handle_message("voltwatch/dev/smoke-1/weather", b"{}")
    connection.handle_message("voltwatch/other", b"{}")
    connection.handle_message("voltwatch/dev//telemetry", b"{}")
    assert connection.stats()["malformed_bad_topic"] == 3


async def test_unknown_device_is_counted_and_logged_once(
    hub: Hub, publisher: aiomqtt.Client, recorder: PushRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voltwatch_mqtt")
    for _ in range(3):
        await publisher.publish("voltwatch/dev/ghost-9/telemetry",
                                json.dumps({"values": {"x": 1}}), qos=1)
    await publisher.publish(TELEMETRY, json.dumps({"values": {"x": 2}}), qos=1)

    await recorder.next("telemetry")

    assert voltwatch_mqtt.stats(hub)["unknown_device"] == 3
    lines = [r.getMessage() for r in caplog.records if "ghost-9" in r.getMessage()]
    assert len(lines) == 1
    assert "unknown device" in lines[0]


async def test_device_with_another_transport_is_not_fed(hub: Hub, publisher, recorder) -> None:
    await hub.devices.async_upsert(id="arcm-1", platform=PLATFORM,
                                   link={"transport": "modbus_tcp", "host": "x"})
    await publisher.publish("voltwatch/dev/arcm-1/telemetry", json.dumps({"values": {}}), qos=1)
    await publisher.publish(TELEMETRY, json.dumps({"values": {}}), qos=1)
    message = await recorder.next()
    assert message.device_id == DEVICE
    assert voltwatch_mqtt.stats(hub)["unknown_device"] == 1


async def test_raising_handler_is_counted_and_the_loop_goes_on(
    tmp_path, mosquitto, publisher, caplog
) -> None:
    handled: list[int] = []

    def handle(device, message: PushMessage) -> None:
        if message.payload["values"]["n"] == 0:
            raise RuntimeError("decoder bug")
        handled.append(message.payload["values"]["n"])

    async def handle_async(device, message: PushMessage) -> None:
        handle(device, message)

    for handler in (handle, handle_async):
        handled.clear()
        hub = await make_hub(tmp_path / handler.__name__, mosquitto, None)
        hub.push_handlers[PLATFORM] = handler
        try:
            for n in range(3):
                await publisher.publish(TELEMETRY, json.dumps({"values": {"n": n}}), qos=1)
            await wait_until(lambda: handled == [1, 2])
            assert voltwatch_mqtt.stats(hub)["handler_errors"] == 1
            assert "decoder bug" in caplog.text
        finally:
            await voltwatch_mqtt.get_connection(hub).stop()


async def test_platform_without_handler_is_counted_and_logged_once(
    tmp_path, mosquitto, publisher, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="voltwatch_mqtt")
    hub = await make_hub(tmp_path, mosquitto, None)  # no push handler for the platform
    try:
        for _ in range(3):
            await publisher.publish(TELEMETRY, json.dumps({"values": {"x": 1}}), qos=1)
        connection = voltwatch_mqtt.get_connection(hub)
        await wait_until(lambda: connection.unhandled == 3)
        lines = [r.getMessage() for r in caplog.records if "no installed plugin" in r.getMessage()]
        assert len(lines) == 1
        assert PLATFORM in lines[0] and DEVICE in lines[0]
    finally:
        await voltwatch_mqtt.get_connection(hub).stop()


async def test_shared_subscription_splits_one_stream(tmp_path, mosquitto, publisher) -> None:
    first, second = PushRecorder(), PushRecorder()
    hub_a = await make_hub(tmp_path / "a", mosquitto, first, shared_group="hubs", client_id="hub-a")
    hub_b = await make_hub(tmp_path / "b", mosquitto, second, shared_group="hubs",
                           client_id="hub-b")
    try:
        connection = voltwatch_mqtt.get_connection(hub_a)
        assert connection.subscriptions()[0] == "$share/hubs/voltwatch/dev/+/telemetry"
        for n in range(40):
            await publisher.publish(TELEMETRY, json.dumps({"values": {"n": n}}), qos=1)
        await wait_until(lambda: len(first.messages) + len(second.messages) >= 40)
        got = sorted(m.payload["values"]["n"] for m in first.messages + second.messages)
        assert got == list(range(40))  # every message exactly once across the group
    finally:
        await voltwatch_mqtt.get_connection(hub_a).stop()
        await voltwatch_mqtt.get_connection(hub_b).stop()
