"""`voltwatch simulate mqtt-device`: push detectors (smoke) speaking CONTRACTS §6 over MQTT.

Each simulated device holds its own MQTT connection, because the will is a property of a
connection: only one connection per device makes the broker publish *that* device's retained
`offline` when it drops. Mosquitto handles thousands of connections easily; for very large N
raise the process's file limit (`ulimit -n`). Connections are opened with a small stagger so
that a fleet does not hit the broker in one burst.

What a device does: on connect it publishes a retained `online` (its will is a retained
`offline`), then telemetry every `interval` (smoke level, battery, temperature), a
`smoke_alarm` event pair every `smoke_alarm_every` seconds, `low_battery` when the battery
runs low, and it acknowledges commands on `<prefix>/cmd/<id>` (or refuses them, for tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from hub.simkit import MqttSimulatedDevice, device_ids

from .credentials import device_password, read_secret

_LOGGER = logging.getLogger(__name__)

KNOWN_COMMANDS = ("mute", "self_test", "reset", "trip", "set")


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "voltwatch"
    interval: float = 30.0
    smoke_alarm_every: float = 0.0  # 0: never
    alarm_duration: float = 20.0
    refuse: bool = False
    qos: int = 1
    publish_on_connect: bool = True
    reconnect_interval: float = 2.0
    seed: int | None = None
    #: Broker credentials, user name = device id (CONTRACTS §6, docs/plugins/mqtt.md "Security"):
    #: the hub's device secret (each device derives its own password, as the hub does), or one
    #: password for a single device. Neither: connect without credentials.
    secret: bytes | None = None
    password: str | None = None


@dataclass
class SimStats:
    connects: int = 0
    telemetry: int = 0
    events: int = 0
    commands: list[dict[str, Any]] = field(default_factory=list)


class SimulatedDevice(MqttSimulatedDevice):
    """One push detector. `run()` serves until cancelled; tests may also drive it by hand."""

    def __init__(self, device_id: str, options: SimOptions) -> None:
        self.device_id = device_id
        self.options = options
        self.stats = SimStats()
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self._rng = random.Random(options.seed if options.seed is not None else device_id)
        self.smoke_level = self._rng.uniform(2, 8)
        self.battery = self._rng.uniform(80, 100)
        self.temperature = self._rng.uniform(18, 26)
        self.smoke_alarm = False
        self.low_battery = False
        self._alarm_at = time.monotonic() + options.smoke_alarm_every if options.smoke_alarm_every else None
        self._clear_at: float | None = None
        base = f"{options.prefix}/dev/{device_id}"
        self.topics = {kind: f"{base}/{kind}" for kind in ("telemetry", "event", "status", "ack")}
        self.command_topic = f"{options.prefix}/cmd/{device_id}"

    # -- what the device says -------------------------------------------------------------
    def reading(self) -> dict[str, Any]:
        rng = self._rng
        if self.smoke_alarm:
            self.smoke_level = min(100.0, self.smoke_level + rng.uniform(5, 15))
        else:
            self.smoke_level = max(0.0, min(15.0, self.smoke_level + rng.uniform(-1.5, 1.5)))
        self.battery = max(0.0, self.battery - rng.uniform(0.0, 0.05))
        self.temperature += rng.uniform(-0.3, 0.3)
        return {
            "ts": round(time.time(), 3),
            "values": {
                "smoke_level": round(self.smoke_level, 1),
                "battery": round(self.battery, 1),
                "temperature": round(self.temperature, 1),
            },
        }

    async def publish_telemetry(self, values: dict[str, Any] | None = None) -> None:
        payload = self.reading() if values is None else {"ts": round(time.time(), 3),
                                                          "values": values}
        await self._publish(self.topics["telemetry"], payload)
        self.stats.telemetry += 1

    async def publish_event(self, event: str, state: str | None = "active") -> None:
        payload: dict[str, Any] = {"ts": round(time.time(), 3), "event": event}
        if state is not None:
            payload["state"] = state
        await self._publish(self.topics["event"], payload)
        self.stats.events += 1

    async def _publish(self, topic: str, payload: Any, retain: bool = False) -> None:
        if self.client is None:
            raise RuntimeError(f"simulated device {self.device_id} is not connected")
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        await self.client.publish(topic, data, qos=self.options.qos, retain=retain)

    async def tick(self) -> None:
        """One interval: telemetry, and the smoke alarm / low battery transitions."""
        now = time.monotonic()
        if self._alarm_at is not None and now >= self._alarm_at and not self.smoke_alarm:
            self.smoke_alarm = True
            self._clear_at = now + self.options.alarm_duration
            self._alarm_at = now + self.options.smoke_alarm_every
            await self.publish_event("smoke_alarm", "active")
        elif self.smoke_alarm and self._clear_at is not None and now >= self._clear_at:
            self.smoke_alarm = False
            self.smoke_level = self._rng.uniform(2, 8)
            await self.publish_event("smoke_alarm", "cleared")
        await self.publish_telemetry()
        if self.battery < 20 and not self.low_battery:
            self.low_battery = True
            await self.publish_event("low_battery", "active")

    # -- commands -------------------------------------------------------------------------
    async def answer(self, payload: bytes) -> None:
        try:
            command = json.loads(payload)
            command_id = command["id"]
            name = command.get("command")
        except (ValueError, KeyError, TypeError):
            _LOGGER.warning("simulator %s: unreadable command %r", self.device_id, payload[:80])
            return
        self.stats.commands.append(command)
        ack: dict[str, Any] = {"id": command_id, "ts": round(time.time(), 3)}
        if self.options.refuse:
            ack.update(ok=False, error="refused by the simulator (--refuse)")
        elif name not in KNOWN_COMMANDS:
            ack.update(ok=False, error=f"unknown command {name!r}")
        else:
            ack["ok"] = True
        await self._publish(self.topics["ack"], ack)
        if ack["ok"] and name == "self_test":
            await self.publish_event("self_test", None)
        elif ack["ok"] and name == "reset" and self.smoke_alarm:
            self.smoke_alarm = False
            await self.publish_event("smoke_alarm", "cleared")

    # -- connection -----------------------------------------------------------------------
    def credentials(self) -> tuple[str | None, str | None]:
        opts = self.options
        if opts.secret is not None:
            return self.device_id, device_password(opts.secret, self.device_id)
        if opts.password is not None:
            return self.device_id, opts.password
        return None, None



async def run_devices(ids: list[str], options: SimOptions, stagger: float = 0.005) -> None:
    devices = [SimulatedDevice(device_id, options) for device_id in ids]
    tasks = []
    try:
        for device in devices:
            tasks.append(asyncio.create_task(device.run(), name=f"mqtt sim {device.device_id}"))
            if stagger and len(devices) > 1:
                await asyncio.sleep(stagger)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="broker host")
    parser.add_argument("--port", type=int, default=1883, help="broker port")
    parser.add_argument("--prefix", default="voltwatch", help="topic prefix (mqtt.topic_prefix)")
    parser.add_argument("--device-id", default="smoke-1",
                        help="device id; with --count N the trailing number counts up")
    parser.add_argument("--count", type=int, default=1, help="how many devices to simulate")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between readings")
    parser.add_argument("--smoke-alarm-every", type=float, default=0.0,
                        help="seconds between simulated smoke alarms (0: never)")
    parser.add_argument("--alarm-duration", type=float, default=20.0,
                        help="seconds a simulated smoke alarm lasts")
    parser.add_argument("--refuse", action="store_true", help="answer every command with ok false")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--secret-file", type=Path, default=None,
                        help="the hub's .mqtt_device_secret: log in as each device id with "
                             "its derived password (mqtt.broker_files)")
    parser.add_argument("--password", default=None,
                        help="log in as the device id with this password (one device)")


async def simulate(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = SimOptions(
        host=args.host, port=args.port, prefix=args.prefix.strip("/"), interval=args.interval,
        smoke_alarm_every=args.smoke_alarm_every, alarm_duration=args.alarm_duration,
        refuse=args.refuse, qos=args.qos, password=args.password,
        secret=read_secret(args.secret_file) if args.secret_file else None,
    )
    ids = device_ids(args.device_id, args.count)
    print(f"simulating {len(ids)} MQTT device(s) on {args.host}:{args.port} "
          f"({ids[0]}{' … ' + ids[-1] if len(ids) > 1 else ''})", flush=True)
    await run_devices(ids, options)
