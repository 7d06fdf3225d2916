"""`voltwatch simulate smoke`: smoke detectors speaking CONTRACTS §6 over MQTT, like real ones.

Why a simulator of our own next to the mqtt plugin's generic `mqtt-device`: a smoke detector has
more to say than a generic push device (tamper, its own fault, a self-test result, mute), and
plugins never import each other, so the smoke plugin owns the behaviour of its detectors.

Each detector holds its own connection, because the will (a retained `offline`) belongs to a
connection. Scenarios come from options (`--smoke-alarm-every`, `--tamper-every`, a battery
that starts low), and tests drive a `SimulatedSmokeDetector` by hand (`publish_event`,
`publish_telemetry`, `refuse`, `silent`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from hub.core.tasks import run_together
from hub.simkit import MqttSimulatedDevice, device_ids

_LOGGER = logging.getLogger(__name__)

COMMANDS = ("mute", "self_test", "reset")


@dataclass
class SmokeSimOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "voltwatch"
    interval: float = 60.0  # seconds between telemetry reports (the device's reporting_interval)
    smoke_alarm_every: float = 0.0  # 0: never
    alarm_duration: float = 20.0
    tamper_every: float = 0.0  # 0: never; the detector is lifted off its base for 10 s
    battery: float | None = None  # starting battery %, random 60-100 when None
    self_test_fails: bool = False
    refuse: bool = False
    publish_on_connect: bool = True
    reconnect_interval: float = 2.0
    seed: int | None = None


@dataclass
class SmokeSimStats:
    connects: int = 0
    telemetry: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)


class SimulatedSmokeDetector(MqttSimulatedDevice):
    """One detector. `run()` serves until cancelled."""

    def __init__(self, device_id: str, options: SmokeSimOptions) -> None:
        self.device_id = device_id
        self.options = options
        self.stats = SmokeSimStats()
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self.rng = random.Random(options.seed if options.seed is not None else device_id)
        self.smoke_level = self.rng.uniform(1, 6)
        self.battery = options.battery if options.battery is not None else \
            self.rng.uniform(60, 100)
        self.temperature = self.rng.uniform(18, 26)
        self.alarm = False
        self.muted = False
        self.low_battery = False
        #: When True the detector keeps its connection but stops reporting (a stuck radio).
        self.silent = False
        now = time.monotonic()
        self._alarm_at = now + options.smoke_alarm_every if options.smoke_alarm_every else None
        self._tamper_at = now + options.tamper_every if options.tamper_every else None
        self._clear_at: float | None = None
        self._tamper_until: float | None = None
        base = f"{options.prefix}/dev/{device_id}"
        self.topics = {kind: f"{base}/{kind}" for kind in ("telemetry", "event", "status", "ack")}
        self.command_topic = f"{options.prefix}/cmd/{device_id}"

    # -- what the detector says -----------------------------------------------------------
    def reading(self) -> dict[str, Any]:
        rng = self.rng
        if self.alarm:
            self.smoke_level = min(100.0, self.smoke_level + rng.uniform(10, 25))
        else:
            self.smoke_level = max(0.0, min(12.0, self.smoke_level + rng.uniform(-1, 1)))
        self.battery = max(0.0, self.battery - rng.uniform(0.0, 0.02))
        self.temperature += rng.uniform(-0.2, 0.2) + (0.8 if self.alarm else 0.0)
        return {"smoke_level": round(self.smoke_level, 1), "battery": round(self.battery, 1),
                "temperature": round(self.temperature, 1)}

    async def publish_telemetry(self, values: dict[str, Any] | None = None) -> None:
        payload = {"ts": round(time.time(), 3), "values": values or self.reading()}
        await self._publish(self.topics["telemetry"], payload)
        self.stats.telemetry += 1

    async def publish_event(self, event: str, state: str | None = "active",
                            **extra: Any) -> None:
        payload: dict[str, Any] = {"ts": round(time.time(), 3), "event": event, **extra}
        if state is not None:
            payload["state"] = state
        await self._publish(self.topics["event"], payload)
        self.stats.events.append(payload)

    async def _publish(self, topic: str, payload: Any, retain: bool = False) -> None:
        if self.client is None:
            raise RuntimeError(f"simulated smoke detector {self.device_id} is not connected")
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        await self.client.publish(topic, data, qos=1, retain=retain)

    async def tick(self) -> None:
        """One reporting interval: scenario transitions, then telemetry."""
        if self.silent:
            return
        now = time.monotonic()
        opts = self.options
        if self._alarm_at is not None and now >= self._alarm_at and not self.alarm:
            self._alarm_at = now + opts.smoke_alarm_every
            self._clear_at = now + opts.alarm_duration
            await self.start_alarm()
        elif self.alarm and self._clear_at is not None and now >= self._clear_at:
            await self.end_alarm()
        if self._tamper_at is not None and now >= self._tamper_at and self._tamper_until is None:
            self._tamper_at = now + opts.tamper_every
            self._tamper_until = now + 10.0
            await self.publish_event("tamper", "active")
        elif self._tamper_until is not None and now >= self._tamper_until:
            self._tamper_until = None
            await self.publish_event("tamper", "cleared")
        await self.publish_telemetry()
        if self.battery < 20 and not self.low_battery:
            self.low_battery = True
            await self.publish_event("low_battery", "active")

    async def start_alarm(self) -> None:
        self.alarm = True
        self.muted = False
        await self.publish_event("smoke_alarm", "active")

    async def end_alarm(self) -> None:
        self.alarm = False
        self._clear_at = None
        self.smoke_level = self.rng.uniform(1, 6)
        await self.publish_event("smoke_alarm", "cleared")

    # -- commands -------------------------------------------------------------------------
    async def answer(self, payload: bytes) -> None:
        try:
            command = json.loads(payload)
            command_id = command["id"]
            name = command.get("command")
        except (ValueError, KeyError, TypeError):
            _LOGGER.warning("smoke simulator %s: unreadable command %r", self.device_id,
                            payload[:80])
            return
        self.stats.commands.append(command)
        ack: dict[str, Any] = {"id": command_id, "ts": round(time.time(), 3)}
        if self.options.refuse:
            ack.update(ok=False, error="refused by the simulator (--refuse)")
        elif name not in COMMANDS:
            ack.update(ok=False, error=f"unknown command {name!r}")
        else:
            ack["ok"] = True
        await self._publish(self.topics["ack"], ack)
        if not ack["ok"]:
            return
        if name == "mute":
            self.muted = True
            await self.publish_event("mute", "active")
        elif name == "self_test":
            await self.publish_event("self_test", None,
                                     result="fail" if self.options.self_test_fails else "pass")
        elif name == "reset" and self.alarm:
            await self.end_alarm()

    # -- connection (hub.simkit.MqttSimulatedDevice.run) ----------------------------------
    def identifier(self) -> str:
        return f"sim-smoke-{self.device_id}"



async def run_detectors(ids: list[str], options: SmokeSimOptions) -> None:
    detectors = [SimulatedSmokeDetector(device_id, options) for device_id in ids]
    await run_together([asyncio.create_task(d.run(), name=f"smoke sim {d.device_id}")
                        for d in detectors])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="broker host")
    parser.add_argument("--port", type=int, default=1883, help="broker port")
    parser.add_argument("--prefix", default="voltwatch", help="topic prefix (mqtt.topic_prefix)")
    parser.add_argument("--device-id", default="smoke-1",
                        help="device id; with --count N the trailing number counts up")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds between reports (match the device's reporting_interval)")
    parser.add_argument("--smoke-alarm-every", type=float, default=0.0,
                        help="seconds between simulated smoke alarms (0: never)")
    parser.add_argument("--alarm-duration", type=float, default=20.0)
    parser.add_argument("--tamper-every", type=float, default=0.0,
                        help="seconds between lifting the detector off its base (0: never)")
    parser.add_argument("--battery", type=float, default=None, help="starting battery %%")
    parser.add_argument("--self-test-fails", action="store_true")
    parser.add_argument("--refuse", action="store_true", help="answer every command with ok false")


async def run(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = SmokeSimOptions(
        host=args.host, port=args.port, prefix=args.prefix.strip("/"), interval=args.interval,
        smoke_alarm_every=args.smoke_alarm_every, alarm_duration=args.alarm_duration,
        tamper_every=args.tamper_every, battery=args.battery,
        self_test_fails=args.self_test_fails, refuse=args.refuse,
    )
    ids = device_ids(args.device_id, args.count)
    print(f"simulating {len(ids)} smoke detector(s) on {args.host}:{args.port} "
          f"({ids[0]}{' … ' + ids[-1] if len(ids) > 1 else ''})", flush=True)
    await run_detectors(ids, options)
