"""Statistics for the home page and monthly reports: hazards and faults by kind, type,
project and device, a daily series, mean time to acknowledge and to repair.

Definitions (also in docs/hazards.md), for a calendar month in the hub's time zone:

* counts: alarm records whose `started_at` falls in the month, by `kind` (alarm = hazard,
  fault, event), by `type`, by project, by device (top N), per local day;
* MTTA: mean of `acked_at − started_at` over the month's alarms and faults that were
  acknowledged (events are not acknowledged by anyone, so they are left out);
* MTTR: mean of `repaired_at − created_at` over the month's work orders that were repaired
  (a cancelled order repaired nothing and is left out);
* work orders: created in the month, by status; open and overdue now;
* patrols: rounds scheduled in the month, completed, failed items.

Reports are cached per (month, projects, top): the home page asks for one at every load,
and with 10,000 records of the month its aggregates cost 100–300 ms of database time. Any
alarm, work-order or patrol event makes every cached report stale (those events fire after
their rows are written), and so does age (`CACHE_TTL`: "overdue now" moves with the clock).
After a change, the reports asked for recently are computed again in the background once the
burst settles (`WARM_DELAY`), so the next home page finds them ready.

The month is local because that is how a report is read ("November" at a Shanghai site
starts at 00:00 +08:00); the SQL stays in hub/storage/statistics_store.py so the core never
imports SQLAlchemy, and nothing here loads rows.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .states import iso

#: The time source (the default month is the current one); tests may replace it.
CLOCK: Callable[[], float] = time.time
DEFAULT_TOP = 10
#: Seconds a cached report is served when nothing changed (work orders turn overdue by time).
CACHE_TTL = 60.0
#: Seconds without a change before recently asked reports are computed again.
WARM_DELAY = 2.0
#: A report asked within this many seconds is kept warm; at most CACHE_SIZE reports are kept.
WARM_KEEP = 600.0
CACHE_SIZE = 64
#: Events after which the month's numbers may differ (alarm records, work orders, patrols).
CHANGE_EVENTS = ("alarm_raised", "alarm_updated", "alarm_acknowledged", "alarm_handled",
                 "alarm_cleared", "workorder_created", "workorder_updated", "patrol_due",
                 "patrol_completed")

_Key = tuple[int, int, tuple[str, ...] | None, int, str | None]


class StatisticsStore(Protocol):
    async def alarm_counts(self, since: float, until: float, projects: Sequence[str] | None,
                           top: int, day_starts: Sequence[float]) -> dict[str, Any]: ...

    async def acknowledge_times(self, since: float, until: float,
                                projects: Sequence[str] | None) -> dict[str, tuple[float, int]]: ...

    async def workorder_counts(self, since: float, until: float, projects: Sequence[str] | None,
                               now: float) -> dict[str, Any]: ...

    async def patrol_counts(self, since: float, until: float,
                            projects: Sequence[str] | None) -> dict[str, int]: ...


def zone_of(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def month_days(year: int, month: int, zone: ZoneInfo) -> list[float]:
    """Unix seconds of each local midnight of the month, then the next month's first."""
    starts = []
    day = datetime(year, month, 1, tzinfo=zone)
    while day.month == month:
        starts.append(day.timestamp())
        day = datetime.fromordinal(day.toordinal() + 1).replace(tzinfo=zone)
    starts.append(day.timestamp())
    return starts


def _mean(total: float, count: int) -> float | None:
    return round(total / count, 3) if count else None


class Statistics:
    """`hub.statistics`: one report per (month, projects)."""

    def __init__(self, hub: Any, store: StatisticsStore,
                 clock: Callable[[], float] | None = None) -> None:
        self.hub = hub
        self.store = store
        self.clock: Callable[[], float] = clock or (lambda: CLOCK())
        #: key -> (generation when computed, clock when computed, last asked, report)
        self._cache: OrderedDict[_Key, tuple[int, float, float, dict[str, Any]]] = OrderedDict()
        self._inflight: dict[_Key, asyncio.Future[dict[str, Any]]] = {}
        self._generation = 0
        self._unsubs: list[Callable[[], None]] = []
        self._warm_task: asyncio.Task[None] | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._changed_at = 0.0
        self.hits = 0
        self.misses = 0

    def async_start(self) -> None:
        """Listen for the changes that make cached reports stale."""
        from .events import callback

        @callback
        def changed(_event: Any) -> None:
            self.invalidate()

        @callback
        def started(_event: Any) -> None:
            # The platform-wide month (what a super_admin's home page asks first) is ready
            # before anyone asks; from then on it is kept warm like any report asked for.
            self._start_task = asyncio.get_running_loop().create_task(
                self._warm_default(), name="statistics first report")

        bus = getattr(self.hub, "bus", None)
        if bus is not None:
            self._unsubs = [bus.listen(event_type, changed) for event_type in CHANGE_EVENTS]
            self._unsubs.append(bus.listen("hub_started", started))

    async def async_stop(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []
        for task in (self._start_task, self._warm_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._start_task = self._warm_task = None

    async def _warm_default(self) -> None:
        year, month = self.current_month()
        try:
            await self._report((year, month, None, DEFAULT_TOP, None))
        except Exception:  # noqa: BLE001 - the first request computes it (and reports why not)
            return

    def invalidate(self) -> None:
        """Every cached report is stale from now; recent ones are warmed once things settle."""
        self._generation += 1
        self._changed_at = time.monotonic()
        if self._unsubs and self._cache and (self._warm_task is None or self._warm_task.done()):
            self._warm_task = asyncio.get_running_loop().create_task(
                self._warm(), name="statistics warm-up")

    async def _warm(self) -> None:
        """Recompute the reports asked for recently, after WARM_DELAY without a change."""
        while (wait := self._changed_at + WARM_DELAY - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        now = self.clock()
        for key, (generation, _computed, asked, _report) in list(self._cache.items()):
            if generation != self._generation and now - asked <= WARM_KEEP:
                try:
                    await self._report(key)
                except Exception:  # noqa: BLE001 - a request will compute (and report) it
                    return

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(getattr(self.hub, "time_zone", None))

    def current_month(self) -> tuple[int, int]:
        now = datetime.fromtimestamp(self.clock(), self.zone)
        return now.year, now.month

    async def async_month(self, year: int | None = None, month: int | None = None,
                          projects: Sequence[str] | None = None, top: int = DEFAULT_TOP,
                          project_label: str | None = None) -> dict[str, Any]:
        """The month's report over `projects` (None: every project; an empty sequence: none,
        which is what a caller whose scope holds no project must get)."""
        if year is None or month is None:
            year, month = self.current_month()
        key: _Key = (year, month, None if projects is None else tuple(sorted(projects)), top,
                     project_label)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None:
            generation, computed, _asked, report = cached
            self._cache[key] = (generation, computed, now, report)
            if generation == self._generation and 0 <= now - computed < CACHE_TTL:
                self.hits += 1
                return report
        self.misses += 1
        return await self._report(key)

    async def _report(self, key: _Key) -> dict[str, Any]:
        """Compute one report; callers asking for the same one meanwhile share the query."""
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        generation = self._generation
        try:
            year, month, projects, top, label = key
            report = await self._compute(year, month, projects, top, label)
        except BaseException as err:
            if not future.done():
                future.set_exception(err)
                future.exception()  # retrieved: only the first caller raises it
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(report)
        asked = self._cache.get(key, (0, 0.0, self.clock(), report))[2]
        self._cache[key] = (generation, self.clock(), asked, report)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return report

    async def _compute(self, year: int, month: int, projects: Sequence[str] | None, top: int,
                       project_label: str | None) -> dict[str, Any]:
        zone = self.zone
        starts = month_days(year, month, zone)
        since, until = starts[0], starts[-1]
        now = self.clock()
        counts = await self.store.alarm_counts(since, until, projects, top, starts[:-1])
        ack = await self.store.acknowledge_times(since, until, projects)
        orders = await self.store.workorder_counts(since, until, projects, now)
        patrols = await self.store.patrol_counts(since, until, projects)

        totals = dict.fromkeys(("alarm", "fault", "event"), 0)
        for row in counts["by_type"]:
            totals[row["kind"]] = totals.get(row["kind"], 0) + row["count"]
        days = len(starts) - 1
        daily = [
            {"date": datetime.fromtimestamp(starts[i], zone).date().isoformat(),
             "alarm": 0, "fault": 0, "event": 0}
            for i in range(days)
        ]
        for index, kind, count in counts["daily"]:
            if 0 <= index < days:
                daily[index][kind] = daily[index].get(kind, 0) + count
        ack_total = sum(total for total, _ in ack.values())
        ack_count = sum(n for _, n in ack.values())
        repair_total, repair_count = orders["repair"]
        return {
            "month": f"{year:04d}-{month:02d}",
            "project": project_label,
            "time_zone": zone.key,
            "since": datetime.fromtimestamp(since, UTC).isoformat(),
            "until": datetime.fromtimestamp(until, UTC).isoformat(),
            "generated_at": iso(now),
            "totals": {**totals, "total": sum(totals.values())},
            "by_type": counts["by_type"],
            "by_project": counts["by_project"],
            "by_device": counts["by_device"],
            "daily": daily,
            "mtta": {
                "seconds": _mean(ack_total, ack_count),
                "count": ack_count,
                "by_kind": {kind: {"seconds": _mean(total, n), "count": n}
                            for kind, (total, n) in sorted(ack.items())},
            },
            "mttr": {"seconds": _mean(repair_total, repair_count), "count": repair_count},
            "workorders": {
                "created": sum(orders["by_status"].values()),
                "by_status": orders["by_status"],
                "open_now": orders["waiting_now"],
                "overdue_now": orders["overdue_now"],
            },
            "patrols": patrols,
        }
