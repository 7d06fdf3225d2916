"""The MQTT member of `voltwatch simulate fleet`: push detectors, many per connection.

Why many devices share a connection here while `simulate mqtt-device` gives each its own: the
will (a retained `offline`) is what needs a connection per device, and a load test of 100,000
detectors is about the hub's ingest, not about wills; 100,000 sockets would measure the
broker and the kernel instead. The payloads are exactly CONTRACTS §6 (the smoke platform's
telemetry and `smoke_alarm` events), so the hub does the same work as for real detectors.

Each connection publishes its devices' reports on a schedule spread over the interval, in
small batches whose QoS 1 acknowledgements are awaited together; a publish that fails (broker
gone) is counted as `mqtt_failed` and the connection dials in again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import time
from typing import Any

import aiomqtt

from hub.core.tasks import cancel_requested, run_together
from hub.fleet import FleetMember, FleetPlan

from .simulator import device_ids

_LOGGER = logging.getLogger(__name__)

#: aiomqtt warns on every publish beyond 10 pending; a batch of hundreds is the point here.
_QUIET = logging.getLogger(f"{__name__}.aiomqtt")
_QUIET.setLevel(logging.ERROR)
BATCH_PERIOD = 0.05  # seconds between two batches of one connection
SMOKE_PLATFORM = "smoke"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=0, help="MQTT smoke detectors (default 0)")
    parser.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                        help="the MQTT broker (default 127.0.0.1:1883)")
    parser.add_argument("--prefix", default="voltwatch", help="topic prefix (mqtt.topic_prefix)")
    parser.add_argument("--mqtt-id", default="fleet-smoke-1",
                        help="first MQTT device id; the trailing number counts up")
    parser.add_argument("--per-connection", type=int, default=1000,
                        help="MQTT devices sharing one connection (default 1000)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)


def broker_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--broker expects HOST:PORT, got {text!r}")
    return host, int(port)


def _ids(args: argparse.Namespace) -> list[str]:
    return device_ids(args.mqtt_id, args.devices) if args.devices > 0 else []


def devices(args: argparse.Namespace) -> list[dict[str, Any]]:
    interval = getattr(args, "interval", 30.0)
    return [{"id": device_id, "name": device_id, "platform": SMOKE_PLATFORM,
             "project": getattr(args, "project", "fleet"), "reporting_interval": interval,
             "link": {"transport": "mqtt"}}
            for device_id in _ids(args)]


class _Device:
    """What one detector reports; a few floats, no task of its own."""

    __slots__ = ("alarm", "battery", "device_id", "due", "rng", "smoke", "temperature")

    def __init__(self, device_id: str, due: float) -> None:
        self.device_id = device_id
        self.due = due
        self.rng = random.Random(device_id)
        self.smoke = self.rng.uniform(1, 6)
        self.battery = self.rng.uniform(60, 100)
        self.temperature = self.rng.uniform(18, 26)
        self.alarm = False

    def telemetry(self) -> bytes:
        rng = self.rng
        if self.alarm:
            self.smoke = min(100.0, self.smoke + rng.uniform(10, 25))
        else:
            self.smoke = max(0.0, min(12.0, self.smoke + rng.uniform(-1, 1)))
        self.temperature += rng.uniform(-0.2, 0.2)
        return json.dumps({"ts": round(time.time(), 3), "values": {
            "smoke_level": round(self.smoke, 1), "battery": round(self.battery, 1),
            "temperature": round(self.temperature, 1)}}).encode()


class _Connection:
    """One MQTT connection carrying the reports of a slice of the fleet."""

    def __init__(self, index: int, fleet: list[_Device], args: argparse.Namespace,
                 plan: FleetPlan) -> None:
        self.index = index
        self.fleet = fleet
        self.plan = plan
        self.host, self.port = broker_address(args.broker)
        self.prefix = args.prefix.strip("/")
        self.qos = args.qos
        self.alarmed = [d for d in fleet if d.device_id in plan.alarm_devices]
        self._next = 0

    def _topic(self, device: _Device, kind: str) -> str:
        return f"{self.prefix}/dev/{device.device_id}/{kind}"

    async def run(self) -> None:
        client = aiomqtt.Client(self.host, self.port, clean_session=True, keepalive=30,
                                identifier=f"fleet-{os.getpid()}-{self.index}",
                                max_inflight_messages=1000, max_queued_outgoing_messages=0,
                                logger=_QUIET)
        while True:
            try:
                async with client:
                    self.plan.count("mqtt_connects")
                    await self._publish_loop(client)
            except aiomqtt.MqttError as err:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise asyncio.CancelledError from err
                _LOGGER.info("fleet connection %d: %s; dialling in again", self.index, err)
            await asyncio.sleep(1.0)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        plan = self.plan
        fleet = self.fleet
        interval = plan.interval
        alarm_at = plan.started + plan.alarm_after
        clear_at = alarm_at + plan.alarm_duration if plan.alarm_duration > 0 else None
        while not cancel_requested():  # a cancel lost in aiomqtt's wait_for ends it too
            now = time.monotonic()
            sends: list[tuple[str, bytes, str]] = []
            for device in self.alarmed:
                if not device.alarm and alarm_at <= now and (clear_at is None or now < clear_at):
                    device.alarm = True
                    sends.append((self._topic(device, "event"), _event("active"), "alarms"))
                elif device.alarm and clear_at is not None and now >= clear_at:
                    device.alarm = False
                    sends.append((self._topic(device, "event"), _event("cleared"), "clears"))
            # Dues stay in cyclic order (each moves on by one interval), so only the devices
            # from `_next` on can be due: no scan of the whole slice per batch.
            for _ in range(len(fleet)):
                device = fleet[self._next]
                if device.due > now:
                    break
                device.due += interval
                self._next = (self._next + 1) % len(fleet)
                sends.append((self._topic(device, "telemetry"), device.telemetry(),
                              "mqtt_messages"))
            if sends:
                await self._send(client, sends)
            await asyncio.sleep(max(0.0, BATCH_PERIOD - (time.monotonic() - now)))

    async def _send(self, client: aiomqtt.Client, sends: list[tuple[str, bytes, str]]) -> None:
        results = await asyncio.gather(
            *(client.publish(topic, payload, qos=self.qos) for topic, payload, _ in sends),
            return_exceptions=True)
        failed: BaseException | None = None
        for (_, _, counter), result in zip(sends, results, strict=True):
            if isinstance(result, BaseException):
                self.plan.count("mqtt_failed")
                failed = failed or result
            else:
                self.plan.count(counter)
        if isinstance(failed, asyncio.CancelledError):
            raise failed
        if isinstance(failed, aiomqtt.MqttError):
            raise failed


def _event(state: str) -> bytes:
    return json.dumps({"ts": round(time.time(), 3), "event": "smoke_alarm",
                       "state": state}).encode()


async def run(args: argparse.Namespace, plan: FleetPlan) -> None:
    ids = _ids(args)
    start = time.monotonic()
    fleet = [_Device(device_id, start + plan.offset(n, len(ids))) for n, device_id in
             enumerate(ids)]
    # Device n goes to connection n % count, so every connection's reports are spread over
    # the whole interval instead of the connections taking turns.
    count = max(1, -(-len(fleet) // max(1, args.per_connection)))
    connections = [_Connection(index, fleet[index::count], args, plan) for index in range(count)]
    await run_together([asyncio.create_task(c.run(), name=f"fleet mqtt {c.index}")
                        for c in connections])


MEMBER = FleetMember(add_arguments=add_arguments, devices=devices, run=run)
