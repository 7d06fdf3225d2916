"""MQTT telemetry through the mqtt plugin vs a raw aiomqtt subscriber, same broker, same run.

What is compared: how many telemetry messages per second a subscriber gets through.
(a) raw: an aiomqtt subscriber doing `json.loads` per message and nothing else;
(b) plugin: the mqtt plugin's connection decoding each message (topic split, JSON, shape
    checks, device registry lookup, PushMessage) and a push handler that sets 3 states with
    `hub.states.async_set` (values change every message, so each is a real state_changed).

How: a private Mosquitto (own port, `max_inflight_messages 1000`, unlimited queue). Each
subscriber first registers a persistent session (QoS 1 subscription) and disconnects; then
N QoS 1 telemetry messages from 100 devices are published into that session; then the
subscriber reconnects and the clock runs until it has handled all N. The publisher is done
before the clock starts, so only the consuming side is measured, and both sides get the same
broker, the same QoS and the same delivery pattern. Best of `MQTT_BENCH_ROUNDS` rounds.

Target: plugin >= 0.5x raw. `MQTT_BENCH_MESSAGES` (default 50000) and `MQTT_BENCH_ROUNDS`
(default 2) change the load.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt
import voltwatch_mqtt
from common import Result
from voltwatch_mqtt.testing import MosquittoBroker

from hub.core.push import PushMessage
from hub.core.registries import DeviceEntry
from hub.hub import Hub

MESSAGES = int(os.environ.get("MQTT_BENCH_MESSAGES", "50000"))
ROUNDS = int(os.environ.get("MQTT_BENCH_ROUNDS", "2"))
DEVICES = 100
PREFIX = "bench"
QOS = 1


def _payloads(count: int) -> list[tuple[str, bytes]]:
    rng = random.Random(4)
    out = []
    for n in range(count):
        device = f"smoke-{n % DEVICES}"
        body = {"ts": 1764480000.0 + n, "values": {
            "smoke_level": round(rng.uniform(0, 20), 1),
            "battery": round(rng.uniform(50, 100), 1),
            "temperature": round(rng.uniform(15, 30), 1)}}
        out.append((f"{PREFIX}/dev/{device}/telemetry", json.dumps(body).encode()))
    return out


async def _fill(broker: MosquittoBroker, payloads: list[tuple[str, bytes]]) -> None:
    """Publish everything at QoS 1 and wait for every PUBACK (the broker has queued it)."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-publisher",
                              max_inflight_messages=1000) as client:
        client.pending_calls_threshold = 2000  # 1000 concurrent publishes are intended here
        for start in range(0, len(payloads), 1000):
            await asyncio.gather(*(client.publish(topic, body, qos=QOS, timeout=60)
                                   for topic, body in payloads[start:start + 1000]))


async def _raw_round(broker: MosquittoBroker, payloads: list[tuple[str, bytes]]) -> float:
    client = aiomqtt.Client(broker.host, broker.port, identifier="bench-raw", clean_session=False)
    async with client:
        await client.subscribe(f"{PREFIX}/dev/+/telemetry", qos=QOS)
    await _fill(broker, payloads)
    count, total = 0, len(payloads)
    started = time.perf_counter()
    async with client:
        async for message in client.messages:
            json.loads(message.payload)
            count += 1
            if count == total:
                break
    return total / (time.perf_counter() - started)


async def _plugin_round(broker: MosquittoBroker, payloads: list[tuple[str, bytes]],
                        config_dir: str) -> float:
    hub = Hub(config_dir, config={"mqtt": {
        "host": broker.host, "port": broker.port, "topic_prefix": PREFIX,
        "client_id": "bench-hub", "qos": QOS}})
    hub.loop = asyncio.get_running_loop()
    hub.bus.bind_loop(hub.loop)
    for n in range(DEVICES):
        await hub.devices.async_upsert(id=f"smoke-{n}", platform="smoke",
                                       link={"transport": "mqtt"})
    total = len(payloads)
    done = hub.loop.create_future()
    handled = 0
    entity_ids = {f"smoke-{n}": (f"sensor.smoke_{n}_smoke_level", f"sensor.smoke_{n}_battery",
                                 f"sensor.smoke_{n}_temperature") for n in range(DEVICES)}
    async_set = hub.states.async_set

    def handle(device: DeviceEntry, message: PushMessage) -> None:
        nonlocal handled
        values = message.payload["values"]
        smoke, battery, temperature = entity_ids[device.id]
        async_set(smoke, values["smoke_level"], timestamp=message.ts)
        async_set(battery, values["battery"], timestamp=message.ts)
        async_set(temperature, values["temperature"], timestamp=message.ts)
        handled += 1
        if handled == total:
            done.set_result(None)

    hub.push_handlers["smoke"] = handle
    connection = voltwatch_mqtt.get_connection(hub)
    connection.start()
    await connection.wait_ready()
    await connection.stop()  # session registered; now fill it while the hub is away
    await _fill(broker, payloads)
    started = time.perf_counter()
    connection.start()
    await asyncio.wait_for(done, 600)
    rate = total / (time.perf_counter() - started)
    await connection.stop()
    stats = connection.stats()
    assert stats["malformed"] == 0 and stats["unknown_device"] == 0, stats
    assert len(hub.states) == 3 * DEVICES
    return rate


async def _run(messages: int, rounds: int) -> tuple[float, float]:
    payloads = _payloads(messages)
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp) / "broker", extra=[
            "max_inflight_messages 1000", "max_queued_messages 0", "max_queued_bytes 0"])
        broker.start()
        try:
            raw, plugin = 0.0, 0.0
            for n in range(rounds):
                raw = max(raw, await _raw_round(broker, payloads))
                plugin = max(plugin, await _plugin_round(broker, payloads, f"{tmp}/hub{n}"))
        finally:
            broker.stop()
    return raw, plugin


def run() -> list[Result]:
    raw, plugin = asyncio.run(_run(MESSAGES, ROUNDS))
    return [Result(
        name=f"MQTT telemetry, {MESSAGES:,} QoS {QOS} msgs through decode + 3 states each",
        value=plugin, unit="msg/s", baseline=raw,
        baseline_name="raw aiomqtt subscriber + json.loads",
        target=">= 0.5x raw", met=plugin >= 0.5 * raw,
    )]


if __name__ == "__main__":
    from common import HEADER

    print(HEADER)
    for result in run():
        print(result.row())
