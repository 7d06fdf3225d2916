"""`voltwatch simulate fleet`: one asyncio process speaking for thousands of devices at once.

Why a runner in the hub and the devices in plugins: a load test needs MQTT detectors and DTUs
in one process and one report, yet the wire formats belong to the transport plugins (the core
never imports a plugin). So each plugin contributes a `FleetMember` through the
`voltwatch_fleet_members` hook (mqtt: push detectors, many per connection; gsm: DTUs, one
socket each, several Modbus units behind each), and this module owns only what they share: the
command line, the alarm plan, the counters and the configuration file that makes a hub know the
simulated devices (`--devices-out`).

Reports are spread evenly over the interval (device n of N first reports at n/N of it), so a
fleet of 100,000 at 30 s is a steady 3,333 msg/s rather than a burst every 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_LOGGER = logging.getLogger(__name__)

DEFAULT_PROJECT = "fleet"


@dataclass(frozen=True)
class FleetMember:
    """One kind of simulated device a plugin brings to the fleet.

    `add_arguments(parser)` adds the kind's own options (`--devices`, `--dtus`, ...);
    `devices(args)` returns the configuration entries of the devices it will simulate (empty
    when the kind is not asked for); `run(args, plan)` serves them until cancelled.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    devices: Callable[[argparse.Namespace], list[dict[str, Any]]]
    run: Callable[[argparse.Namespace, FleetPlan], Awaitable[None]]


@dataclass
class FleetPlan:
    """What every member shares: timing, which devices raise alarms, and the counters."""

    interval: float = 30.0
    alarm_devices: frozenset[str] = frozenset()
    alarm_after: float = 0.0  # seconds after the fleet starts
    alarm_duration: float = 60.0  # 0: the alarm never clears
    project: str = DEFAULT_PROJECT
    counters: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def offset(self, index: int, total: int) -> float:
        """When device `index` of `total` first reports, seconds after the start."""
        return self.interval * index / max(1, total)

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount


def add_arguments(parser: argparse.ArgumentParser, members: dict[str, FleetMember]) -> None:
    parser.add_argument("--interval", type=float, default=30.0,
                        help="seconds between two reports of one device (default 30)")
    parser.add_argument("--alarm", action="append", default=[], metavar="DEVICE_ID",
                        help="raise an alarm on this device (repeat for several)")
    parser.add_argument("--alarm-after", type=float, default=0.0,
                        help="seconds after the start when the --alarm devices raise it")
    parser.add_argument("--alarm-duration", type=float, default=60.0,
                        help="seconds an alarm lasts before it clears (0: never)")
    parser.add_argument("--project", default=DEFAULT_PROJECT,
                        help="project of the devices written by --devices-out")
    parser.add_argument("--devices-out", default=None, metavar="FILE",
                        help="write the simulated devices as a YAML list for the hub's "
                             "configuration (devices: !include FILE) and go on")
    parser.add_argument("--report-every", type=float, default=10.0,
                        help="seconds between two counter lines on stdout (0: none)")
    for name in sorted(members):
        group = parser.add_argument_group(f"{name} devices")
        members[name].add_arguments(group)  # type: ignore[arg-type]


def plan_from_args(args: argparse.Namespace) -> FleetPlan:
    if args.interval <= 0:
        raise SystemExit("--interval must be more than 0 seconds")
    return FleetPlan(interval=args.interval, alarm_devices=frozenset(args.alarm),
                     alarm_after=args.alarm_after, alarm_duration=args.alarm_duration,
                     project=args.project)


def device_entries(members: dict[str, FleetMember], args: argparse.Namespace) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for name in sorted(members):
        entries.extend(members[name].devices(args))
    return entries


def write_devices(path: Path, entries: list[dict[str, Any]]) -> None:
    """A YAML list the hub includes as its `devices:` (one flow mapping a line: diff-friendly)."""
    lines = [yaml.safe_dump(entry, default_flow_style=True, allow_unicode=True, width=10_000)
             .strip() for entry in entries]
    path.write_text("".join(f"- {line}\n" for line in lines) or "[]\n", encoding="utf-8")


async def run_fleet(members: dict[str, FleetMember], args: argparse.Namespace,
                    plan: FleetPlan) -> None:
    """Run every member that has devices until cancelled; one member failing stops all."""
    active = {name: member for name, member in members.items() if member.devices(args)}
    if not active:
        raise SystemExit("nothing to simulate: give --devices N (MQTT) and/or --dtus N (DTU)")
    tasks = [asyncio.create_task(member.run(args, plan), name=f"fleet {name}")
             for name, member in sorted(active.items())]
    if args.report_every > 0:
        tasks.append(asyncio.create_task(_report(plan, args.report_every), name="fleet report"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _report(plan: FleetPlan, every: float) -> None:
    last = Counter(plan.counters)
    while True:
        await asyncio.sleep(every)
        now = Counter(plan.counters)
        rates = ", ".join(f"{name} {now[name]} (+{(now[name] - last[name]) / every:.0f}/s)"
                          for name in sorted(now))
        print(f"fleet: {rates}", flush=True)
        last = now


def add_fleet_parser(sims: argparse._SubParsersAction, members: dict[str, FleetMember]) -> None:
    """`voltwatch simulate fleet`, with the options of every installed member."""
    parser = sims.add_parser("fleet", help="many MQTT and DTU devices in one process (load test)")
    add_arguments(parser, members)
    parser.set_defaults(func=lambda args: _main(members, args))


def _main(members: dict[str, FleetMember], args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    entries = device_entries(members, args)
    if args.devices_out:
        write_devices(Path(args.devices_out), entries)
        print(f"wrote {len(entries)} device(s) to {args.devices_out}", flush=True)
    kinds = Counter(str(entry.get("platform")) for entry in entries)
    print(f"fleet: {len(entries)} device(s) ({', '.join(f'{n} {k}' for k, n in kinds.items())}), "
          f"one report each every {plan.interval:g} s", flush=True)
    try:
        asyncio.run(run_fleet(members, args, plan))
    except KeyboardInterrupt:
        pass
    # The totals as the last line (a benchmark stops the fleet with SIGINT and compares what
    # was published with what the hub handled: messages lost).
    print("fleet total: " + ", ".join(f"{name} {plan.counters[name]}"
                                      for name in sorted(plan.counters)), flush=True)
    return 0
