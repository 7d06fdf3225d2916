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

The month is local because that is how a report is read ("November" at a Shanghai site
starts at 00:00 +08:00); the SQL stays in hub/storage/statistics_store.py so the core never
imports SQLAlchemy, and nothing here loads rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .states import iso

#: The time source (the default month is the current one); tests may replace it.
CLOCK: Callable[[], float] = time.time
DEFAULT_TOP = 10


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
