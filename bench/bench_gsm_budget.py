"""GSM data budget (issue #13): a DTU with two arcm-ref detectors on a one-yuan SIM plan.

Three questions, each answered by a real Hub (gsm + arcm plugins, SQLite) polling a simulated
DTU over loopback:

1. What does a month cost at the defaults (status 10 s, measurements 5 min, setpoints at start,
   heartbeat 60 s), overhead included? The hub's own projection for a 31-day month, read from
   `GET /api/gsm/dtus`'s data (`traffic.projected_unstretched_mb`). Target: <= 30 MB.
2. Does the model match the bytes? The same site with every interval divided by 100 runs for
   a window; the billed bytes the hub accounted per second are compared with the model's rate
   at those intervals (ratio measured / model; 1.00 means the projection is honest).
3. How late is an alarm? From the moment the simulated detector's alarm bit goes on (random
   phase against the poll schedule) to the `device_condition` event, and to the alarm record
   (`alarm_raised`, when the core's alarm engine is present). Target: status interval + 2 s.

`GSM_BUDGET_SAMPLES` (default 6) and `GSM_BUDGET_FAST_SAMPLES` (default 12) set the alarm samples
at 10 s and 1 s status intervals; `GSM_BUDGET_WINDOW` (default 15 s) the compressed run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Self
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import voltwatch_gsm
from common import Result
from voltwatch_gsm.simulator import SimOptions, SimStats, SimulatedDtu

from hub.core.conditions import EVENT_DEVICE_CONDITION
from hub.core.events import Event, callback
from hub.core.plugins import PluginManager
from hub.hub import Hub

IMEI = "860000000000001"
UNITS = (1, 2)
BUDGET_MB = 30.0
SAMPLES = int(os.environ.get("GSM_BUDGET_SAMPLES", "6"))
FAST_SAMPLES = int(os.environ.get("GSM_BUDGET_FAST_SAMPLES", "12"))
WINDOW = float(os.environ.get("GSM_BUDGET_WINDOW", "15"))
JULY_1 = dt.datetime(2025, 7, 1, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()  # 31 days


class Site:
    """A hub with two detectors behind one simulated DTU."""

    def __init__(self, tmp: str, gsm: dict[str, Any], heartbeat: float) -> None:
        plugins = PluginManager()
        plugins.load_entrypoints(only=["gsm", "arcm", "modbus"])
        self.hub = Hub(tmp, plugin_manager=plugins, config={
            "database": {"url": f"sqlite+aiosqlite:///{Path(tmp) / 'hub.db'}"},
            "http": {"enabled": False},
            "gsm": {"port": 0, **gsm},
            "projects": [{"id": "market-1", "name": "中心市场"}],
            "devices": [{"id": f"dtu1-arcm-{unit}", "platform": "arcm", "project": "market-1",
                         "link": {"transport": "gsm", "imei": IMEI, "unit": unit}}
                        for unit in UNITS],
        })
        self.heartbeat = heartbeat
        self.sim: SimulatedDtu | None = None
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Self:
        await self.hub.async_start()
        self.server = voltwatch_gsm.get_server(self.hub)
        self.sim = SimulatedDtu(IMEI, list(UNITS), SimOptions(
            "127.0.0.1", self.server.port, heartbeat_interval=self.heartbeat), SimStats())
        self._task = asyncio.get_running_loop().create_task(self.sim.run())
        await self.server.wait_until(lambda: IMEI in self.server.dtus
                                     and self.server.dtus[IMEI].connected)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.sim is not None:
            self.sim.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.hub.async_stop()


async def _projection() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with Site(tmp, {}, heartbeat=60.0) as site:
            traffic = site.server.traffic
            traffic.clock = lambda: JULY_1  # the first second of a 31-day month
            traffic.settle()
            return traffic.report(IMEI)


async def _compressed(window: float) -> tuple[float, float]:
    """(accounted billed bytes/s, model bytes/s) with every interval divided by 100."""
    gsm = {"status_interval": 0.1, "measure_interval": 3.0, "heartbeat_interval": 0.6,
           "budget": "100GB"}
    with tempfile.TemporaryDirectory() as tmp:
        async with Site(tmp, gsm, heartbeat=0.6) as site:
            traffic = site.server.traffic
            loop = asyncio.get_running_loop()
            await asyncio.sleep(3.5)  # start-up reads (info, setpoints) stay out of the window
            traffic.settle()
            entry = traffic.entry(IMEI)
            before = entry.session.total(traffic.model.factor)
            started = loop.time()
            await asyncio.sleep(window)
            traffic.settle()
            measured = (entry.session.total(traffic.model.factor) - before) / (
                loop.time() - started)
            return measured, entry.rate


async def _latencies(status: float, samples: int) -> tuple[list[float], list[float]]:
    """Seconds from alarm bit to device_condition, and to the alarm record."""
    gsm = {"status_interval": status}
    conditions: dict[str, asyncio.Future[float]] = {}
    records: dict[str, asyncio.Future[float]] = {}
    cleared: dict[str, asyncio.Future[None]] = {}
    to_condition: list[float] = []
    to_record: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Site(tmp, gsm, heartbeat=60.0) as site:
            loop = asyncio.get_running_loop()
            bus = site.hub.bus

            @callback
            def on_condition(event: Event) -> None:
                data = event.data
                if data["type"] != "residual_current_high":
                    return
                waiters = conditions if data["active"] else cleared
                future = waiters.get(data["device_id"])
                if future is not None and not future.done():
                    future.set_result(loop.time() if data["active"] else None)

            @callback
            def on_record(event: Event) -> None:
                data = event.data
                future = records.get(str(data.get("device_id")))
                if data.get("type") == "residual_current_high" and future is not None \
                        and not future.done():
                    future.set_result(loop.time())

            bus.listen(EVENT_DEVICE_CONDITION, on_condition)
            bus.listen("alarm_raised", on_record)
            bus.listen("alarm_updated", on_record)  # a repeat of a record still open
            have_records = getattr(site.hub, "alarms", None) is not None
            from voltwatch_arcm import runtime_for

            arcm = runtime_for(site.hub)
            assert arcm is not None
            # Both detectors polled at least once (their first cycle reads everything).
            for detector in arcm.devices.values():
                while detector.good_polls < 1:
                    await asyncio.sleep(0.05)
            assert site.sim is not None
            # Detectors take turns, so one clears while the other is measured.
            hold = status + 1.5  # the bit stays on until the next status read has seen it
            for n in range(samples):
                unit = UNITS[n % len(UNITS)]
                device_id = f"dtu1-arcm-{unit}"
                if device_id in cleared:
                    await asyncio.wait_for(cleared[device_id], hold + status + 30)
                await asyncio.sleep(random.uniform(0, status))  # random phase
                conditions[device_id] = loop.create_future()
                records[device_id] = loop.create_future()
                cleared[device_id] = loop.create_future()
                raised_at = loop.time()
                site.sim.units[unit].raise_alarm(hold)
                seen = await asyncio.wait_for(conditions[device_id], status + 30)
                to_condition.append(seen - raised_at)
                if have_records:
                    try:
                        stored = await asyncio.wait_for(records[device_id], 10)
                        to_record.append(stored - raised_at)
                    except TimeoutError:
                        pass
    return to_condition, to_record


def run() -> list[Result]:
    report = asyncio.run(_projection())
    projected = report["full_month_unstretched_mb"]
    fit = report["fit_status_interval"]
    heartbeat = report["heartbeat"]["recommended"]
    print(f"  gsm budget: projected {projected} MB/month at defaults (budget {BUDGET_MB:g} MB), "
          f"status {report['status']}, fits at status_interval >= {fit}s; recommended "
          f"heartbeat {heartbeat}; stretched: {report['full_month_mb']} MB "
          f"({report['reason_en']})", file=sys.stderr)
    results = [
        Result("gsm budget: DTU + 2 detectors, defaults, 31-day month", projected, "MB",
               target=f"<= {BUDGET_MB:g} MB", met=projected <= BUDGET_MB),
        Result("gsm budget: status interval that fits 30 MB (2 detectors)", float(fit or 0),
               "s", target="-"),
    ]
    measured, model = asyncio.run(_compressed(WINDOW))
    print(f"  gsm budget: compressed x100: accounted {measured:.1f} B/s, model {model:.1f} B/s",
          file=sys.stderr)
    results.append(Result("gsm budget: accounted bytes/s, intervals / 100", measured, "B/s",
                          baseline=model, baseline_name="model", target="ratio 0.9-1.1",
                          met=0.9 <= measured / model <= 1.1 if model else None))
    for status, samples in ((10.0, SAMPLES), (1.0, FAST_SAMPLES)):
        if samples <= 0:
            continue
        to_condition, to_record = asyncio.run(_latencies(status, samples))
        limit = status + 2.0
        worst = max(to_condition)
        print(f"  gsm budget: status {status:g}s alarm latencies (s): "
              f"{[round(x, 2) for x in to_condition]}, to record: "
              f"{[round(x, 2) for x in to_record]}", file=sys.stderr)
        results.append(Result(f"gsm alarm bit -> device_condition, status {status:g}s, max",
                              worst * 1000, "ms", target=f"<= {limit * 1000:,.0f} ms",
                              met=worst <= limit))
        if to_record:
            worst_record = max(to_record)
            results.append(Result(f"gsm alarm bit -> alarm record, status {status:g}s, max",
                                  worst_record * 1000, "ms",
                                  target=f"<= {limit * 1000:,.0f} ms",
                                  met=worst_record <= limit))
    return results


if __name__ == "__main__":
    from common import HEADER

    rows = run()
    print(HEADER)
    for row in rows:
        print(row.row())
