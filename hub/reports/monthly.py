"""The monthly report of a project (月度报告): what a maintenance company hands its client.

Built on the month's statistics (hub/core/statistics.py: counts by kind and type, daily
series, work orders) plus the figures only a report needs (hub/storage/report_store.py): the
riskiest devices, how fast alarms were acknowledged and work orders closed, overdue orders,
the month's residual-current and temperature levels from the daily rollups, and the hazard
warnings (隐患预警). One dict, rendered to HTML and PDF by hub/reports/render.py, so both
formats always say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from ..core.statistics import month_days

DEFAULT_TOP = 10
WARNINGS_LISTED = 50


class ReportStore(Protocol):
    async def risky_devices(self, since: float, until: float, projects: Sequence[str] | None,
                            top: int) -> list[dict[str, Any]]: ...

    async def acknowledge_times(self, since: float, until: float,
                                projects: Sequence[str] | None
                                ) -> dict[str, tuple[float, int, float]]: ...

    async def hazard_warnings(self, since: float, until: float, projects: Sequence[str] | None,
                              limit: int) -> tuple[int, list[dict[str, Any]]]: ...

    async def workorder_month(self, since: float, until: float, projects: Sequence[str] | None,
                              now: float) -> dict[str, Any]: ...

    async def daily_readings(self, since: float, until: float, projects: Sequence[str] | None
                             ) -> dict[str, list[tuple[float, float, int, float]]]: ...

    async def residual_trends(self, since: float, until: float, projects: Sequence[str] | None,
                              top: int, device_ids: Sequence[str] | None = None
                              ) -> list[dict[str, Any]]: ...


def _times(total: float, count: int, longest: float) -> dict[str, Any]:
    return {"mean": round(total / count, 3) if count else None, "count": count,
            "max": round(longest, 3) if count else None}


def project_names(tree: Sequence[dict[str, Any]] | None) -> dict[str, str]:
    """id -> name over the configured project tree (a project without a name keeps its id)."""
    names: dict[str, str] = {}

    def walk(items: Sequence[dict[str, Any]]) -> None:
        for item in items:
            names[item["id"]] = item.get("name") or item["id"]
            walk(item.get("children") or [])

    walk(tree or [])
    return names


async def build_monthly(hub: Any, store: ReportStore, year: int, month: int,
                        projects: Sequence[str] | None, project_ids: Sequence[str] = (),
                        top: int = DEFAULT_TOP) -> dict[str, Any]:
    """The month's report over `projects` (None: all; the caller has cut it to its scope);
    `project_ids` are the projects asked for, named in the title."""
    statistics = hub.statistics
    zone = statistics.zone
    starts = month_days(year, month, zone)
    since, until = starts[0], starts[-1]
    now = statistics.clock()
    label = ",".join(project_ids) or None
    report = await statistics.async_month(year, month, projects, top, project_label=label)

    names = project_names(getattr(hub, "config", {}).get("projects"))
    report["project_names"] = [names.get(p, p) for p in project_ids]
    report["hub_name"] = getattr(hub, "config", {}).get("hub", {}).get("name")

    risky = await store.risky_devices(since, until, projects, top)
    trends = {row["device_id"]: row for row in await store.residual_trends(
        since, until, projects, top, [row["device_id"] for row in risky])}
    for row in risky:
        trend = trends.get(row["device_id"], {})
        row["residual_peak"] = trend.get("peak")
        row["residual_slope"] = trend.get("slope")
    report["risky_devices"] = risky
    report["rising_residual"] = await store.residual_trends(since, until, projects, top)

    ack = await store.acknowledge_times(since, until, projects)
    report["response_times"] = {
        **_times(sum(t for t, _, _ in ack.values()), sum(n for _, n, _ in ack.values()),
                 max((m for _, _, m in ack.values()), default=0.0)),
        "by_kind": {kind: _times(*values) for kind, values in sorted(ack.items())},
    }
    orders = await store.workorder_month(since, until, projects, now)
    report["repair_times"] = _times(*orders.pop("repair"))
    report["workorder_month"] = {**orders, "open_now": report["workorders"]["open_now"],
                                 "overdue_now": report["workorders"]["overdue_now"]}

    day_index = {start: i for i, start in enumerate(starts[:-1])}
    readings = await store.daily_readings(since, until, projects)
    report["trends"] = {}
    for kind, rows in readings.items():
        mean: list[float | None] = [None] * (len(starts) - 1)
        peak: list[float | None] = [None] * (len(starts) - 1)
        for start, total, count, high in rows:
            i = day_index.get(start)
            if i is not None and count:
                mean[i], peak[i] = round(total / count, 3), round(high, 3)
        known = [p for p in peak if p is not None]
        means = [(total, count) for _, total, count, _ in rows if count]
        report["trends"][kind] = {
            "mean": mean, "max": peak,
            "month_max": max(known) if known else None,
            "month_mean": (round(sum(t for t, _ in means) / sum(n for _, n in means), 3)
                           if means else None),
        }

    count, warnings = await store.hazard_warnings(since, until, projects, WARNINGS_LISTED)
    for item in warnings:
        item["started_local"] = datetime.fromtimestamp(item["started_at"], zone).strftime(
            "%Y-%m-%d %H:%M")
    report["hazard_warnings"] = {"count": count, "items": warnings}
    report["generated_local"] = datetime.fromtimestamp(now, zone).strftime("%Y-%m-%d %H:%M")
    return report
