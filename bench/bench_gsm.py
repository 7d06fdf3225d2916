"""GSM DTU server at site scale: N DTUs dialled in, two arcm-ref detectors each, polled every 30 s.

The issue asks for 5,000 DTUs with 2 detectors each polled every 30 s (333 polls/s). The DTUs
run in a separate process (`voltwatch simulate dtu --count N`), so the CPU and memory figures
are the hub side's alone. The poller mirrors a detector plugin: one task per detector, each
reading the 22 measurement registers through `hub.links.acquire(...)` every 30 s, phases spread
over the interval.

The baseline is the poll rate the schedule asks for; the ratio is achieved / expected.
`GSM_BENCH_DTUS` (default 5000) and `GSM_BENCH_WINDOW` (seconds, default 60) change the load.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import voltwatch_gsm
from common import Result

from hub.core.links import LinkError
from hub.hub import Hub

DTUS = int(os.environ.get("GSM_BENCH_DTUS", "5000"))
WINDOW = float(os.environ.get("GSM_BENCH_WINDOW", "60"))
UNITS = (1, 2)
INTERVAL = 30.0
FIRST_IMEI = 860000000000001
CPU_TARGET = 50.0  # % of one core for the whole DTU fleet, leaving room for the rest of the hub


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _poller(link: Any, unit: int, phase: float, stop_at: float,
                  tally: dict[str, int], latencies: list[float]) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time() + phase
    while True:
        if next_at >= stop_at:
            return
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        try:
            sent = time.perf_counter()
            values = await link.read_holding_registers(unit, 0, 22)
            latencies.append(time.perf_counter() - sent)
            tally["ok"] += len(values) == 22
        except LinkError:
            tally["failed"] += 1
        next_at += INTERVAL


async def _run(dtus: int, window: float) -> list[Result]:
    imeis = [str(FIRST_IMEI + n) for n in range(dtus)]
    with tempfile.TemporaryDirectory() as tmp:
        devices = [
            {"id": f"d{n}-{unit}", "platform": "arcm", "project": "bench",
             "link": {"transport": "gsm", "imei": imei, "unit": unit}}
            for n, imei in enumerate(imeis) for unit in UNITS
        ]
        # Every simulated DTU dials in from 127.0.0.1: lift the per-address connection rate
        # (a real fleet comes from many addresses); packet/byte rates stay at the defaults.
        hub = Hub(tmp, config={"gsm": {"port": 0, "heartbeat_timeout": "180s",
                                       "connection_rate": f"{10 * dtus}/min"},
                               "devices": devices})
        loop = asyncio.get_running_loop()
        hub.bus.bind_loop(loop)
        for entry in devices:
            await hub.devices.async_upsert(**entry, source="config")
        hub.links.factories.update(voltwatch_gsm.voltwatch_link_factories(hub))
        server = voltwatch_gsm.get_server(hub)
        await server.async_start()
        links = {imei: hub.links.acquire({"transport": "gsm", "imei": imei}) for imei in imeis}

        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "simulate", "dtu", "--port", str(server.port),
            "--imei", imeis[0], "--count", str(dtus), "--units", "1-2", "--heartbeat", "60",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            started = time.perf_counter()
            await server.wait_until(
                lambda: sum(d.connected for d in server.dtus.values()) >= dtus, timeout=300)
            connect_time = time.perf_counter() - started

            tally = {"ok": 0, "failed": 0}
            latencies: list[float] = []
            rng = random.Random(1)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            stop_at = loop.time() + window
            await asyncio.gather(*(
                _poller(links[imei], unit, rng.uniform(0, INTERVAL), stop_at, tally,
                        latencies)
                for imei in imeis for unit in UNITS
            ))
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            rss = _rss_mb()
            stats = server.stats()
        finally:
            sim.terminate()
            await sim.wait()
            await server.async_stop()

    expected = dtus * len(UNITS) / INTERVAL
    achieved = tally["ok"] / window
    cpu_pct = 100.0 * cpu / wall
    latencies.sort()
    p99_ms = 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    label = f"{dtus} DTUs x {len(UNITS)} detectors, every {INTERVAL:g}s, {window:g}s window"
    return [
        Result(f"gsm polls/s ({label})", achieved, "polls/s", baseline=expected,
               baseline_name="expected by schedule", target=">= 99% of expected, 0 failed",
               met=achieved >= 0.99 * expected and tally["failed"] == 0
               and stats["gsm_crc_errors_total"] == 0),
        Result(f"gsm hub CPU ({label})", cpu_pct, "% of one core", target=f"< {CPU_TARGET:g}%",
               met=cpu_pct < CPU_TARGET),
        Result(f"gsm poll latency p99 ({label})", p99_ms, "ms",
               target="< 2000 ms (the request timeout)", met=p99_ms < 2000),
        Result(f"gsm hub RSS ({dtus} DTUs connected)", rss, "MB", target="informational"),
        Result(f"gsm DTUs connected per second ({dtus} dialling in at once)",
               dtus / connect_time, "DTU/s", target="informational"),
    ]


def run() -> list[Result]:
    return asyncio.run(_run(DTUS, WINDOW))


if __name__ == "__main__":
    for result in run():
        print(result.row())
