"""The broker's ACL denials, made visible in the hub (issue #14): `mqtt.broker_log_file`.

Mosquitto 2.0.11 logs `Denied PUBLISH from <client id> ...` at debug level only, never on
`$SYS/broker/log`, so a real broker here writes its log to a file (`log_dest file`, with
`log_type debug`) that the hub tails; its subscriptions (`log_type subscribe`) and refused
logins still come on the topic. Files as the hub generates them (`mqtt.broker_files`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import voltwatch_mqtt
from mqtt_testkit import PLATFORM, PushRecorder, conditions, mqtt_section
from voltwatch_mqtt.brokerlog import BrokerLog, BrokerLogTail
from voltwatch_mqtt.credentials import ACL_FILE, PASSWD_FILE, device_password, device_secret
from voltwatch_mqtt.testing import MosquittoBroker, refused_connect

from hub.hub import Hub

HUB_USER, HUB_PASSWORD = "hub", "hub-password-1"
DEVICE_A, DEVICE_B = "smoke-a", "smoke-b"
LOG_TYPES = ("error", "warning", "notice", "information", "subscribe", "debug")

Setup = tuple[Hub, MosquittoBroker, PushRecorder]


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Setup]:
    files = tmp_path / "hub" / "broker"
    log_file = tmp_path / "mosquitto" / "broker.log"
    broker = MosquittoBroker(tmp_path / "mosquitto", anonymous=False, log_topic=True, extra=[
        f"password_file {files / PASSWD_FILE}", f"acl_file {files / ACL_FILE}",
        f"log_dest file {log_file}", *(f"log_type {kind}" for kind in LOG_TYPES)])
    recorder = PushRecorder()
    hub = Hub(tmp_path / "hub", config={"hub": {"name": "test"}, "mqtt": mqtt_section(
        broker, broker_files="broker", broker_log_file=str(log_file),
        username=HUB_USER, password=HUB_PASSWORD)})
    hub.loop = asyncio.get_running_loop()
    hub.bus.bind_loop(hub.loop)
    for device_id in (DEVICE_A, DEVICE_B):
        await hub.devices.async_upsert(id=device_id, platform=PLATFORM,
                                       link={"transport": "mqtt"})
    hub.push_handlers[PLATFORM] = recorder.handle
    connection = voltwatch_mqtt.get_connection(hub)
    assert connection.broker_log_tail is not None
    connection.broker_log_tail.interval = 0.05  # the poll period only, no test waits on it
    await voltwatch_mqtt.voltwatch_setup(hub=hub, config=hub.config)  # writes the files
    broker.start()
    try:
        await connection.wait_ready()
        yield hub, broker, recorder
    finally:
        await voltwatch_mqtt.voltwatch_shutdown(hub=hub)
        for task in list(hub._tasks):
            task.cancel()
        await asyncio.gather(*hub._tasks, return_exceptions=True)
        broker.stop()


def _device(broker: MosquittoBroker, hub: Hub, device_id: str) -> aiomqtt.Client:
    password = device_password(device_secret(hub.config_dir), device_id)
    return aiomqtt.Client(broker.host, broker.port, username=device_id, password=password,
                          identifier=f"client-{device_id}", protocol=aiomqtt.ProtocolVersion.V311)


async def test_device_a_publishing_as_b_is_a_refusal_naming_a(watched: Setup) -> None:
    hub, broker, recorder = watched
    connection = voltwatch_mqtt.get_connection(hub)
    raised = conditions(hub)
    forged = f"voltwatch/dev/{DEVICE_B}/telemetry"
    async with _device(broker, hub, DEVICE_A) as device_a, \
            _device(broker, hub, DEVICE_B) as device_b:
        for _ in range(2):  # two denials, one 疑似冒充 event (held back within the interval)
            await device_a.publish(forged, json.dumps({"values": {"smoke_level": 999}}), qos=1)
        await device_a.subscribe(f"voltwatch/cmd/{DEVICE_B}", qos=1)
        await device_a.subscribe(f"voltwatch/cmd/{DEVICE_A}", qos=1)  # its own: no refusal
        # B's data path is untouched: its own telemetry arrives, A's forgery never does.
        await device_b.publish(forged, json.dumps({"values": {"smoke_level": 2}}), qos=1)
        message = await recorder.next("telemetry")
        assert message.device_id == DEVICE_B
        await connection.broker_log.wait_for(
            lambda log: log.counts["publish_denied"] >= 2 and log.counts["subscribe_denied"] >= 1)
    assert [m.device_id for m in recorder.messages] == [DEVICE_B]

    refusals = {r["reason"]: r for r in connection.describe()["refusals"]}
    denied = refusals["publish_denied"]
    assert denied["claimed"] == f"client-{DEVICE_A}" and denied["username"] == DEVICE_A
    assert denied["topic"] == forged and denied["peer"].startswith("127.0.0.1:")
    assert f"a topic of device {DEVICE_B}" in denied["message"] and denied["device"] == DEVICE_B
    # The device posed as gets the security event the alarm list shows: 疑似冒充, naming A.
    (event,) = [c for c in raised if c["type"] == "impostor"]
    assert event["device_id"] == DEVICE_B and event["source"] == "mqtt"
    assert DEVICE_A in event["detail"] and denied["peer"] in event["detail"]
    subscribed = refusals["subscribe_denied"]
    assert subscribed["username"] == DEVICE_A and subscribed["topic"] == f"voltwatch/cmd/{DEVICE_B}"
    assert subscribed["peer"] == denied["peer"]
    metrics = voltwatch_mqtt.voltwatch_metrics(hub=hub)
    assert metrics["mqtt_refused_publish_denied_total"] == 2
    assert metrics["mqtt_refused_subscribe_denied_total"] == 1
    assert metrics["mqtt_refused_not_authorised_total"] == 0
    assert metrics["mqtt_broker_log_file_lines_total"] >= 3
    assert connection.describe()["broker_log_file"]["error"] is None



async def test_a_wrong_password_names_the_peer_once(watched: Setup) -> None:
    """Debug logging on and the file tailed: the refusal is still counted once (from the
    topic), with the peer; the client id and user claimed are in no line the broker writes."""
    hub, broker, _recorder = watched
    connection = voltwatch_mqtt.get_connection(hub)
    peer, code = await asyncio.to_thread(refused_connect, broker, DEVICE_A, "guess")
    assert code == 5
    await connection.broker_log.wait_for(lambda log: log.counts["not_authorised"] >= 1)
    # A later, accepted client read from the file proves the file got past the refusal.
    async with _device(broker, hub, DEVICE_B) as device_b:
        await device_b.publish("voltwatch/dev/smoke-x/telemetry", b"{}", qos=1)
        await connection.broker_log.wait_for(lambda log: log.counts["publish_denied"] >= 1)
    (refusal,) = [r for r in connection.describe()["refusals"] if r["reason"] == "not_authorised"]
    assert refusal["peer"] == peer and refusal["claimed"] is None
    assert "does not log the client id or user name" in refusal["message"]
    assert "impostor-1" not in broker.log_tail(200)  # what the broker never wrote, not guessed
    assert voltwatch_mqtt.voltwatch_metrics(hub=hub)["mqtt_refused_not_authorised_total"] == 1


def _line(text: str, stamp: str = "1796064085") -> bytes:
    return f"{stamp}: {text}\n".encode()


def test_file_lines_are_parsed_and_cannot_be_forged() -> None:
    log = BrokerLog("voltwatch", HUB_USER)
    log.feed_file(b"".join([
        _line("New connection from 10.0.0.5:40001 on port 1883."),
        _line("New client connected from 10.0.0.5:40001 as dev a (p2, c1, k60, u'smoke-a')."),
        _line("Received PUBLISH from evil: Denied PUBLISH from x (d0, q1, r0, m1, 'voltwatch/"
              "dev/smoke-b/event', ... (1 bytes))"),
        _line("Sending PUBLISH to hub (d0, q0, r0, m0, '1: Denied PUBLISH from y (d0, q0, r0, "
              "m0, 't', ... (1 bytes))', ... (2 bytes))"),
        _line("Denied PUBLISH from dev a (d0, q1, r0, m7, 'voltwatch/dev/smoke-b/event', ... "
              "(12 bytes))", stamp="2026-11-30T18:00:00"),
        _line("Client dev a disconnected."),
        _line("Denied PUBLISH from dev a (d0, q0, r0, m0, 'other/topic', ... (1 bytes))"),
    ]))
    first, second = log.recent
    assert (first["claimed"], first["username"], first["peer"]) == ("dev a", "smoke-a",
                                                                   "10.0.0.5:40001")
    assert first["topic"] == "voltwatch/dev/smoke-b/event" and "device smoke-b" in first["message"]
    assert second["username"] is None and "user unknown" in second["message"]
    assert log.stats()["refused_publish_denied"] == 2 and log.stats()["refused"] == 2


def test_the_tail_starts_at_the_end_and_follows_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.log"
    denied = _line("Denied PUBLISH from c (d0, q1, r0, m1, 'voltwatch/dev/b/telemetry', ... "
                   "(1 bytes))")
    path.write_bytes(denied)  # history: not news
    log = BrokerLog("voltwatch")
    tail = BrokerLogTail(path, log)
    tail.poll()
    assert log.counts["publish_denied"] == 0
    with path.open("ab") as handle:
        handle.write(denied + denied[:20])  # one whole line and the start of another
    tail.poll()
    assert log.counts["publish_denied"] == 1
    with path.open("ab") as handle:
        handle.write(denied[20:])  # the rest of it, then logrotate renames the file
    os.rename(path, tmp_path / "mosquitto.log.1")
    tail.poll()  # no file: reported, not fatal
    assert tail.error is not None and "mosquitto.log" in tail.error
    path.write_bytes(denied)  # the broker reopened it after its SIGHUP
    tail.poll()
    assert log.counts["publish_denied"] == 3 and tail.error is None
    # A rotated file's tail is read before the new file; `copytruncate` starts over.
    with path.open("ab") as handle:
        handle.write(denied)
    os.rename(path, tmp_path / "mosquitto.log.2")
    path.write_bytes(denied)
    tail.poll()
    assert log.counts["publish_denied"] == 5 and tail.reopens == 1
    path.write_bytes(b"")
    tail.poll()
    path.write_bytes(denied)
    tail.poll()
    assert log.counts["publish_denied"] == 6 and tail.reopens == 2


def test_subscriptions_are_judged_by_the_acl_the_hub_wrote() -> None:
    """`$SYS/broker/log/M/subscribe` lines: only a device's own cmd topic is allowed; the hub,
    and clients whose connect the hub never saw, are not judged. Ids and topics with spaces."""
    log = BrokerLog("voltwatch", HUB_USER)
    sub = "$SYS/broker/log/M/subscribe"
    for text in ("New client connected from 10.0.0.5:1 as id 1 a (p2, c1, k60, u'smoke-a').",
                 "New client connected from 10.0.0.9:2 as hub-1 (p2, c0, k60, u'hub')."):
        log.feed(_line(text), "$SYS/broker/log/N")
    for text in ("id 1 a 1 voltwatch/cmd/smoke-a", "hub-1 1 voltwatch/dev/+/telemetry",
                 "stranger 0 voltwatch/cmd/#", "id 1 a 1 voltwatch/cmd/smoke b",
                 "id 1 a 0 $SYS/#"):
        log.feed(_line(text), sub)
    assert [(r["claimed"], r["username"], r["topic"], r["peer"]) for r in log.recent] == [
        ("id 1 a", "smoke-a", "voltwatch/cmd/smoke b", "10.0.0.5:1"),
        ("id 1 a", "smoke-a", "$SYS/#", "10.0.0.5:1")]
    assert log.stats()["refused_subscribe_denied"] == 2
    log.feed(_line("Client id 1 a disconnected."), "$SYS/broker/log/N")
    log.feed(_line("id 1 a 1 voltwatch/cmd/smoke-b"), sub)  # gone: no longer attributed
    assert log.stats()["refused_subscribe_denied"] == 2
