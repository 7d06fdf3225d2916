"""Per-device broker credentials and ACLs, TLS to the broker, payload limits (issue #14).

A real Mosquitto runs with the password and ACL files the hub generated from its registry
(hashed by the real `mosquitto_passwd`), and with a TLS listener whose certificate the test
makes with the real `openssl`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import voltwatch_mqtt
from mqtt_testkit import PLATFORM, PushRecorder, mqtt_section
from voltwatch_mqtt.brokerlog import BrokerLog
from voltwatch_mqtt.credentials import ACL_FILE, PASSWD_FILE, device_password, device_secret
from voltwatch_mqtt.testing import MosquittoBroker, free_port, refused_connect

from hub.hub import Hub

HUB_USER, HUB_PASSWORD = "hub", "hub-password-1"
DEVICE_A, DEVICE_B = "smoke-a", "smoke-b"


async def _stop(hub: Hub) -> None:
    await voltwatch_mqtt.voltwatch_shutdown(hub=hub)
    for task in list(hub._tasks):
        task.cancel()
    await asyncio.gather(*hub._tasks, return_exceptions=True)


async def _hub(config_dir: Path, broker: MosquittoBroker, recorder: PushRecorder,
               **extra: object) -> Hub:
    hub = Hub(config_dir, config={"hub": {"name": "test"},
                                  "mqtt": mqtt_section(broker, **extra)})
    hub.loop = asyncio.get_running_loop()
    hub.bus.bind_loop(hub.loop)
    for device_id in (DEVICE_A, DEVICE_B):
        await hub.devices.async_upsert(id=device_id, platform=PLATFORM,
                                       link={"transport": "mqtt"})
    hub.push_handlers[PLATFORM] = recorder.handle
    await voltwatch_mqtt.voltwatch_setup(hub=hub, config=hub.config)
    return hub


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[Hub, MosquittoBroker, PushRecorder]]:
    """The hub writes the files, then Mosquitto starts with them and no anonymous access."""
    files = tmp_path / "hub" / "broker"
    broker = MosquittoBroker(tmp_path / "mosquitto", anonymous=False, log_topic=True, extra=[
        f"password_file {files / PASSWD_FILE}", f"acl_file {files / ACL_FILE}"])
    recorder = PushRecorder()
    hub = await _hub(tmp_path / "hub", broker, recorder, broker_files="broker",
                     broker_pid_file=str(broker.pid_path),
                     username=HUB_USER, password=HUB_PASSWORD)
    broker.start()
    try:
        await voltwatch_mqtt.get_connection(hub).wait_ready()
        yield hub, broker, recorder
    finally:
        await _stop(hub)
        broker.stop()


def _client(broker: MosquittoBroker, user: str | None, password: str | None) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                          identifier=f"test-{user}", protocol=aiomqtt.ProtocolVersion.V311)


async def test_device_a_cannot_publish_or_read_as_device_b(
    secured: tuple[Hub, MosquittoBroker, PushRecorder],
) -> None:
    hub, broker, recorder = secured
    secret = device_secret(hub.config_dir)
    acl = (hub.config_dir / "broker" / ACL_FILE).read_text()
    assert f"topic write voltwatch/dev/{DEVICE_A}/#" in acl
    passwd = (hub.config_dir / "broker" / PASSWD_FILE).read_text()
    assert device_password(secret, DEVICE_A) not in passwd  # hashed by mosquitto_passwd
    assert f"{DEVICE_A}:$7$" in passwd

    async with _client(broker, DEVICE_A, device_password(secret, DEVICE_A)) as device_a:
        # Forged first, own second, same connection: the broker keeps their order, so had
        # the forgery passed, the hub would have received it before A's own message.
        await device_a.publish(f"voltwatch/dev/{DEVICE_B}/telemetry",
                               json.dumps({"values": {"smoke_level": 999}}), qos=1)
        await device_a.publish(f"voltwatch/dev/{DEVICE_A}/telemetry",
                               json.dumps({"values": {"smoke_level": 1}}), qos=1)
        first = await recorder.next("telemetry")
        assert first.device_id == DEVICE_A
        assert all(m.device_id != DEVICE_B for m in recorder.messages)

        # Commands: A subscribes to every device's commands but only gets its own.
        await device_a.subscribe("voltwatch/cmd/#", qos=1)
        async with _client(broker, HUB_USER, HUB_PASSWORD) as hub_side:
            await hub_side.publish(f"voltwatch/cmd/{DEVICE_B}", '{"id": "b", "command": "mute"}',
                                   qos=1)
            await hub_side.publish(f"voltwatch/cmd/{DEVICE_A}", '{"id": "a", "command": "mute"}',
                                   qos=1)
        async for message in device_a.messages:
            assert message.topic.value == f"voltwatch/cmd/{DEVICE_A}"
            break

    # A wrong password and no password at all are refused by the broker.
    for user, password in ((DEVICE_A, "guess"), (None, None)):
        with pytest.raises(aiomqtt.MqttError):
            async with _client(broker, user, password):
                pass


async def test_only_hub_workers_can_send_or_read_calls_between_workers(
    secured: tuple[Hub, MosquittoBroker, PushRecorder],
) -> None:
    """A control call forwarded between workers (`<prefix>/hub/call/<worker>`, peers.py) is
    run as the user who made it, unchecked by the owner: with the ACL the hub writes, a device
    can neither forge one nor read one (or its answer)."""
    hub, broker, _recorder = secured
    secret = device_secret(hub.config_dir)
    call_topic = "voltwatch/hub/call/worker-a"
    async with aiomqtt.Client(broker.host, broker.port, username=HUB_USER,
                              password=HUB_PASSWORD, identifier="worker-a",
                              protocol=aiomqtt.ProtocolVersion.V311) as worker_a, \
            _client(broker, DEVICE_A, device_password(secret, DEVICE_A)) as device_a:
        await worker_a.subscribe(call_topic, qos=1)
        await device_a.subscribe("voltwatch/hub/#", qos=1)
        await device_a.subscribe(f"voltwatch/cmd/{DEVICE_A}", qos=1)
        # Forged first, the hub's own second, each on one connection in order: had the forgery
        # passed, worker a would have received it first.
        await device_a.publish(call_topic, '{"id": "forged", "reply_to": "x"}', qos=1)
        await worker_a.publish(call_topic, '{"id": "real", "reply_to": "worker-b"}', qos=1)
        async for message in worker_a.messages:
            assert json.loads(message.payload)["id"] == "real"
            break
        # The device never got "real" (its hub/# subscription reads nothing): the first message
        # it gets is this marker on its own command topic, sent after "real" on one connection.
        await worker_a.publish(f"voltwatch/cmd/{DEVICE_A}", '{"id": "marker"}', qos=1)
        async for message in device_a.messages:
            assert message.topic.value == f"voltwatch/cmd/{DEVICE_A}"
            break


async def test_a_device_added_later_gets_credentials(
    secured: tuple[Hub, MosquittoBroker, PushRecorder],
) -> None:
    hub, broker, recorder = secured
    files = voltwatch_mqtt._BROKER_FILES[hub]
    writes = files.writes
    await hub.devices.async_upsert(id="smoke-c", platform=PLATFORM, link={"transport": "mqtt"})
    await files.wait_written("smoke-c")  # the rewrite the registry event started
    assert files.writes == writes + 1
    assert "user smoke-c" in (hub.config_dir / "broker" / ACL_FILE).read_text()
    # The hub itself sent the broker SIGHUP (mqtt.broker_pid_file); Mosquitto logs the reload
    # and has re-read the files before it serves the next client, no restart, no operator.
    assert files.reloads >= 1
    log = voltwatch_mqtt.get_connection(hub).broker_log
    await log.wait_for(lambda log: log.reloads >= 1)
    async with _client(broker, "smoke-c", files.password("smoke-c")) as device_c:
        await device_c.publish("voltwatch/dev/smoke-c/telemetry",
                               json.dumps({"values": {"smoke_level": 3}}), qos=1)
        assert (await recorder.next("telemetry")).device_id == "smoke-c"



async def test_a_wrong_password_is_a_refusal_the_admin_sees(
    secured: tuple[Hub, MosquittoBroker, PushRecorder],
) -> None:
    hub, broker, _recorder = secured
    connection = voltwatch_mqtt.get_connection(hub)
    peer, code = await asyncio.to_thread(refused_connect, broker, DEVICE_A, "guess")
    assert code == 5  # the broker said: not authorised
    await connection.broker_log.wait_for(lambda log: log.counts["not_authorised"] >= 1)
    (refusal,) = connection.describe()["refusals"]
    assert refusal["peer"] == peer and refusal["reason"] == "not_authorised"
    assert "refused the credentials" in refusal["message"]
    metrics = voltwatch_mqtt.voltwatch_metrics(hub=hub)
    assert metrics["mqtt_refused_not_authorised_total"] == 1
    assert metrics["mqtt_refused_total"] == 1
    # The right password is no refusal.
    secret = device_secret(hub.config_dir)
    async with _client(broker, DEVICE_B, device_password(secret, DEVICE_B)):
        pass
    assert connection.stats()["refused"] == 1


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca_crt), "-days", "2", "-subj", "/CN=Voltwatch test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return ca_crt, crt, key


async def test_hub_connects_over_tls_with_the_configured_ca(tmp_path: Path) -> None:
    ca, crt, key = _make_certificates(tmp_path / "pki")
    broker = MosquittoBroker(tmp_path / "mosquitto", port=free_port(), extra=[
        f"cafile {ca}", f"certfile {crt}", f"keyfile {key}"])
    broker.start()
    recorder = PushRecorder()
    hub = await _hub(tmp_path / "hub", broker, recorder, tls={"ca_file": str(ca)})
    try:
        connection = voltwatch_mqtt.get_connection(hub)
        await connection.wait_ready()  # the listener speaks only TLS
        assert connection.settings.tls is not None
        # A plain client is not served by a TLS-only listener.
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, timeout=5):
                pass
    finally:
        await _stop(hub)
        broker.stop()


async def test_payload_over_the_limit_is_dropped_counted_and_logged(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = PushRecorder()
    hub = await _hub(tmp_path / "hub", mosquitto, recorder, max_payload=1024)
    try:
        connection = voltwatch_mqtt.get_connection(hub)
        await connection.wait_ready()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as device:
            big = json.dumps({"values": {"blob": "x" * 4096}})
            await device.publish(f"voltwatch/dev/{DEVICE_A}/telemetry", big, qos=1)
            await device.publish(f"voltwatch/dev/{DEVICE_A}/telemetry",
                                 json.dumps({"values": {"smoke_level": 2}}), qos=1)
            message = await recorder.next("telemetry")
        assert message.payload["values"] == {"smoke_level": 2}
        assert connection.stats()["malformed_too_large"] == 1
        assert f"voltwatch/dev/{DEVICE_A}/telemetry" in caplog.text and "too_large" in caplog.text
    finally:
        await _stop(hub)


def test_counters_reach_metrics_with_prometheus_names(tmp_path: Path) -> None:
    hub = Hub(tmp_path, config={"hub": {"name": "test"}, "mqtt": {"client_id": "m"}})
    connection = voltwatch_mqtt.get_connection(hub)
    connection.handle_message("voltwatch/dev/x/telemetry", b"x" * (64 * 1024 + 1))
    numbers = voltwatch_mqtt.voltwatch_metrics(hub=hub)
    assert numbers["mqtt_malformed_too_large_total"] == 1
    assert numbers["mqtt_messages_total"] == 1 and numbers["mqtt_connected"] == 0


def test_broker_log_names_the_peer_of_each_refusal_in_turn() -> None:
    """Lines as Mosquitto 2.0.11 writes them: two logins being set up at once, one succeeds,
    two fail; each refusal names a peer still being set up, never the one that got in, and
    says when it had to choose."""
    log = BrokerLog()
    for line in (
        "1796048691: New connection from 10.0.0.5:40001 on port 1883.",
        "1796048691: New connection from 10.0.0.6:40002 on port 1883.",
        "1796048691: New connection from 10.0.0.7:40003 on port 1883.",
        ("1796048691: New client connected from 10.0.0.6:40002 as smoke-a (p2, c1, k60, "
         "u'smoke-a')."),
        "1796048691: Client <unknown> disconnected, not authorised.",
        "1796048692: Client <unknown> disconnected, not authorised.",
        "1796048692: Saving in-memory database to /var/lib/mosquitto/mosquitto.db.",
    ):
        log.feed(line.encode())
    first, second = log.recent
    assert (first["peer"], second["peer"]) == ("10.0.0.5:40001", "10.0.0.7:40003")
    assert "2 connections were being set up" in first["message"]
    assert "connections were being set up" not in second["message"]
    assert first["claimed"] is None and first["reason"] == "not_authorised"
    assert log.stats()["refused"] == 2 and log.stats()["broker_log_lines"] == 7
