"""The DTU member of `voltwatch simulate fleet`: DTUs dialling in, arcm-ref units behind each.

A DTU is one TCP socket by nature (the hub polls it as Modbus master), so here "many devices
per connection" means several RS485 units behind each DTU (`--units 1-4`). The DTUs are this
plugin's own `SimulatedDtu` (real registration, heartbeats and CRC-checked Modbus-RTU), not a
copy: the fleet only adds the device list, the alarm plan and the shared counters.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from hub.fleet import FleetMember, FleetPlan

from .simulator import SimOptions, SimStats, SimulatedDtu, consecutive_imeis, parse_units

COUNTERS = ("connects", "requests", "replies", "bad_crc", "heartbeats")
ARCM_PLATFORM = "arcm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtus", type=int, default=0, help="DTUs dialling in (default 0)")
    parser.add_argument("--dtu", default="127.0.0.1:9502", metavar="HOST:PORT",
                        help="the hub's (or load balancer's) DTU listener, gsm.port")
    parser.add_argument("--units", type=parse_units, default=[1],
                        help="arcm-ref units behind each DTU, e.g. 1-4 (default 1)")
    parser.add_argument("--imei", default="860000000000001", help="first IMEI; counts up")
    parser.add_argument("--dtu-heartbeat", type=float, default=60.0,
                        help="seconds between two heartbeats of a DTU")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--dtu expects HOST:PORT, got {text!r}")
    return host, int(port)


def device_id(imei: str, unit: int) -> str:
    return f"fleet-{imei}-{unit}"


def devices(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.dtus <= 0:
        return []
    return [{"id": device_id(imei, unit), "name": device_id(imei, unit),
             "platform": ARCM_PLATFORM, "profile": "arcm-ref",
             "project": getattr(args, "project", "fleet"),
             "poll_interval": getattr(args, "interval", 30.0),
             "link": {"transport": "gsm", "imei": imei, "unit": unit}}
            for imei in consecutive_imeis(args.imei, args.dtus) for unit in args.units]


async def run(args: argparse.Namespace, plan: FleetPlan) -> None:
    host, port = _address(args.dtu)
    options = SimOptions(host=host, port=port, heartbeat_interval=args.dtu_heartbeat)
    stats = SimStats()
    dtus = [SimulatedDtu(imei, args.units, options, stats)
            for imei in consecutive_imeis(args.imei, args.dtus)]
    alarmed = [(dtu.units[unit], device_id(dtu.imei, unit)) for dtu in dtus for unit in dtu.units
               if device_id(dtu.imei, unit) in plan.alarm_devices]
    tasks: list[asyncio.Task[Any]] = []
    try:
        for index, dtu in enumerate(dtus):
            tasks.append(asyncio.create_task(dtu.run(), name=f"fleet dtu {dtu.imei}"))
            if index % 200 == 199:
                await asyncio.sleep(0)  # let the connects just started make progress
        if alarmed:
            await asyncio.sleep(max(0.0, plan.started + plan.alarm_after - time.monotonic()))
            seconds = plan.alarm_duration if plan.alarm_duration > 0 else 10 * 365 * 86400.0
            for unit, _ in alarmed:
                unit.raise_alarm(seconds)
            plan.count("alarms", len(alarmed))
        while True:
            _publish(stats, plan)
            await asyncio.sleep(1.0)
    finally:
        _publish(stats, plan)
        for dtu in dtus:
            dtu.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _publish(stats: SimStats, plan: FleetPlan) -> None:
    """The DTUs count into their own SimStats; the fleet report reads them from the plan."""
    for name in COUNTERS:
        plan.counters[f"dtu_{name}"] = getattr(stats, name)


MEMBER = FleetMember(add_arguments=add_arguments, devices=devices, run=run)
