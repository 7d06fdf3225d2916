"""An alarm is not queued behind readings (issue 12): the priority lane and the intake lag.

Measured before these tests existed (bench/bench_alarm_sms.py, 10,000 detectors at 2,000
msg/s on 2 cores): the hub fell behind its telemetry, the broker's session queue filled, and
the broker dropped a smoke alarm that was queued behind the readings. Here the ordering half
of it in miniature and without timing: the hub's telemetry handler is held (a hub that has
fallen behind) with readings queued after it, and an event must still arrive. On one
connection it waits behind them. (The broker's overflow needs a CPU-bound hub, whose loop
reads its socket no faster than it handles messages; the benchmark shows that part.)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import voltwatch_mqtt
from mqtt_testkit import DEVICE, PLATFORM, make_hub, wait_until
from voltwatch_mqtt.lag import FRESH_FOR, IntakeLag
from voltwatch_mqtt.testing import MosquittoBroker

from hub.core.push import PushMessage

TELEMETRY = f"voltwatch/dev/{DEVICE}/telemetry"
EVENT = f"voltwatch/dev/{DEVICE}/event"


class HeldHub:
    """A push handler whose telemetry handling is held until released: a hub behind."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.telemetry: list[int] = []
        self.events: list[str] = []

    async def handle(self, device: object, message: PushMessage) -> None:
        if message.kind == "telemetry":
            self.holding.set()
            await self.release.wait()
            self.telemetry.append(message.payload["values"]["n"])
        elif message.kind == "event":
            self.events.append(message.payload["state"])


async def test_an_alarm_overtakes_a_backlog_of_readings(tmp_path: Path,
                                                      mosquitto: MosquittoBroker) -> None:
    broker = mosquitto
    held = HeldHub()
    hub = await make_hub(tmp_path / "hub", broker)
    hub.push_handlers[PLATFORM] = held.handle
    connection = voltwatch_mqtt.get_connection(hub)
    try:
        async with aiomqtt.Client(broker.host, broker.port, identifier="fleet") as device:
            await device.publish(TELEMETRY, json.dumps({"values": {"n": 0}}), qos=1)
            await held.holding.wait()  # the hub is now stuck on reading 0
            for n in range(1, 200):
                await device.publish(TELEMETRY, json.dumps({"values": {"n": n}}), qos=1)
            await device.publish(EVENT, json.dumps({"event": "smoke_alarm",
                                                    "state": "active"}), qos=1)
            await wait_until(lambda: held.events == ["active"])
            # The alarm came while every reading after the first still waited.
            assert held.telemetry == []
            assert connection.stats()["messages_event"] == 1
        held.release.set()
        await wait_until(lambda: len(held.telemetry) == 200)
        assert held.telemetry == list(range(200))  # and the readings lost nothing, in order
    finally:
        held.release.set()
        await connection.stop()


async def test_two_lanes_two_sessions_and_one_upgraded_session(tmp_path: Path,
                                                               mosquitto: MosquittoBroker) -> None:
    # A session left by the one-connection version also holds the event subscription; the
    # bulk lane drops it, so an event is handed over once, not once per lane.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-hub",
                              clean_session=False) as old:
        await old.subscribe([(t, 1) for t in ("voltwatch/dev/+/telemetry",
                                              "voltwatch/dev/+/event")])
    seen: list[PushMessage] = []
    hub = await make_hub(tmp_path, mosquitto)
    hub.push_handlers[PLATFORM] = lambda device, message: seen.append(message)
    connection = voltwatch_mqtt.get_connection(hub)
    try:
        lanes = connection.describe()["lanes"]
        assert lanes["bulk"]["client_id"] == "test-hub"
        assert lanes["priority"]["client_id"] == "test-hub-events"
        assert "voltwatch/dev/+/telemetry" in lanes["bulk"]["subscriptions"]
        assert "voltwatch/dev/+/event" in lanes["priority"]["subscriptions"]
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as device:
            await device.publish(EVENT, json.dumps({"event": "smoke_alarm"}), qos=1)
            await device.publish(TELEMETRY, json.dumps({"values": {"n": 1}}), qos=1)
        await wait_until(lambda: {m.kind for m in seen} == {"event", "telemetry"})
        # Both came. A probe sent after them has come back through the bulk lane's queue too,
        # so a second copy of the event on that lane would have arrived by now.
        returned = connection.lag.returned
        await wait_until(lambda: connection.lag.returned >= returned + 2)
        assert sorted(m.kind for m in seen) == ["event", "telemetry"]
    finally:
        await connection.stop()


def test_intake_lag_is_the_age_of_the_oldest_probe_not_back() -> None:
    now = [100.0]
    lag = IntakeLag(clock=lambda: now[0])
    assert lag.seconds() == 0.0
    first = lag.next_probe()
    now[0] += 0.004
    lag.returned_probe(first)
    assert round(lag.seconds(), 3) == 0.004  # a hub that keeps up: milliseconds
    waiting = lag.next_probe()  # sent at 100.004, and the hub falls behind
    now[0] += 1.0
    lag.next_probe()
    now[0] += 29.0
    assert round(lag.seconds(), 3) == 30.0  # still growing while nothing comes back
    lag.returned_probe(waiting)
    assert round(lag.seconds(), 3) == 30.0  # measured, and the next one is 29 s old
    lag.returned_probe(b"not a number")  # someone else's message on our topic: ignored
    lag.returned_probe(b"0123abcd:" + waiting.split(b":")[1])  # an earlier process's: ignored
    assert round(lag.seconds(), 3) == 30.0
    now[0] += FRESH_FOR + 1
    lag.returned_probe(lag.next_probe())
    assert lag.seconds() == 0.0
    lag.next_probe()
    lag.disconnected()  # the hub hears nothing at all: not "behind"
    now[0] += 100
    assert lag.seconds() == 0.0
    assert lag.stats()["intake_lag_max_seconds"] == 30.0
