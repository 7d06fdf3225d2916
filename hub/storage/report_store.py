"""The monthly report's figures that the statistics do not already give (hub/reports/).

Like hub/storage/statistics_store.py, everything is aggregated by the database: a month of
10,000 detectors is about 300,000 daily rollup rows and hundreds of thousands of alarm
records, and none of them is loaded into Python. Readings come from the 1-day rollups
(`state_rollups`, resolution 86400, whose buckets start at local midnight) so a month is
one row per entity and day whatever the raw retention; the per-device residual-current trend
is a least-squares slope computed with SUM aggregates in the same query.

`projects` None means every project; a sequence (even an empty one) means only those.
Readings are tied to a project through the entity registry (`entities.device_id`) and the
device registry (`devices.project`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select

from .schema import ROLLUP_1D, alarms, devices, entities, state_rollups, states_meta, workorders
from .statistics_store import SqlAggregates

HAZARD_WARNING = "hazard_warning"
#: Entity id patterns of the trend charts (LIKE; `_` matches any one character, harmlessly).
READINGS = {
    "residual_current": "sensor.%residual_current",
    "temperature": "sensor.%temperature%",
}
DAY = 86400.0


class SqlReportStore(SqlAggregates):
    # -- alarms ------------------------------------------------------------------------------
    async def risky_devices(self, since: float, until: float, projects: Sequence[str] | None,
                            top: int) -> list[dict[str, Any]]:
        """Devices with the most alarms, then hazard warnings, then faults in the month."""
        alarm_n = func.sum(case((alarms.c.kind == "alarm", 1), else_=0))
        warning_n = func.sum(case((alarms.c.type == HAZARD_WARNING, 1), else_=0))
        fault_n = func.sum(case((alarms.c.kind == "fault", 1), else_=0))
        rows = await self._all(
            select(alarms.c.device_id, func.max(alarms.c.device_name),
                   func.max(alarms.c.project), alarm_n.label("alarm"),
                   warning_n.label("warning"), fault_n.label("fault"))
            .where(*self._alarm_window(since, until, projects))
            .group_by(alarms.c.device_id)
            .having(or_(alarm_n > 0, warning_n > 0, fault_n > 0))
            .order_by(alarm_n.desc(), warning_n.desc(), fault_n.desc(), alarms.c.device_id)
            .limit(top))
        return [{"device_id": d, "device_name": name, "project": project,
                 "alarm": int(a or 0), "hazard_warning": int(w or 0), "fault": int(f or 0)}
                for d, name, project, a, w, f in rows]

    async def acknowledge_times(self, since: float, until: float,
                                projects: Sequence[str] | None
                                ) -> dict[str, tuple[float, int, float]]:
        """kind -> (sum, count, max) of acked_at - started_at over alarms and faults."""
        delay = alarms.c.acked_at - alarms.c.started_at
        rows = await self._all(
            select(alarms.c.kind, func.sum(delay), func.count(), func.max(delay))
            .where(*self._alarm_window(since, until, projects), alarms.c.acked_at.is_not(None),
                   alarms.c.kind.in_(("alarm", "fault")))
            .group_by(alarms.c.kind))
        return {kind: (float(total or 0.0), int(n), float(longest or 0.0))
                for kind, total, n, longest in rows}

    async def hazard_warnings(self, since: float, until: float, projects: Sequence[str] | None,
                              limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many hazard warnings the month had, and the latest `limit` of them."""
        where = [*self._alarm_window(since, until, projects), alarms.c.type == HAZARD_WARNING]
        count = await self._all(select(func.count()).where(*where))
        rows = await self._all(
            select(alarms.c.id, alarms.c.device_id, alarms.c.device_name, alarms.c.project,
                   alarms.c.entity_id, alarms.c.message, alarms.c.message_en,
                   alarms.c.started_at)
            .where(*where).order_by(alarms.c.started_at.desc(), alarms.c.id.desc())
            .limit(limit))
        return int(count[0][0] or 0), [dict(row._mapping) for row in rows]

    # -- work orders -------------------------------------------------------------------------
    async def workorder_month(self, since: float, until: float, projects: Sequence[str] | None,
                              now: float) -> dict[str, Any]:
        """Opened, closed (repaired / cancelled) and overdue in the month; repair times.

        Overdue: the due time fell in the month (before now) and the order was neither
        repaired nor closed by then. Repair time: opened (created_at) -> closed (closed_at)
        of the orders closed as repaired in the month.
        """
        wo = workorders.c
        scope = [wo.project.in_(list(projects))] if projects is not None else []
        opened = await self._all(
            select(func.count()).where(*scope, wo.created_at >= since, wo.created_at < until))
        closed_in = [*scope, wo.closed_at >= since, wo.closed_at < until]
        took = wo.closed_at - wo.created_at
        closed = await self._all(
            select(func.count(),
                   func.sum(case((wo.resolution == "repaired", 1), else_=0)),
                   func.sum(case((wo.resolution == "repaired", took), else_=literal(0.0))),
                   func.max(case((wo.resolution == "repaired", took), else_=None)))
            .where(*closed_in))
        done = func.coalesce(wo.repaired_at, wo.closed_at)
        overdue = await self._all(
            select(func.count()).where(
                *scope, wo.due_at >= since, wo.due_at < min(until, now),
                or_(done.is_(None), done > wo.due_at)))
        n_closed, n_repaired, repair_sum, repair_max = closed[0]
        n_repaired = int(n_repaired or 0)
        return {
            "opened": int(opened[0][0] or 0),
            "closed": int(n_closed or 0),
            "repaired": n_repaired,
            "cancelled": int(n_closed or 0) - n_repaired,
            "overdue": int(overdue[0][0] or 0),
            "repair": (float(repair_sum or 0.0), n_repaired, float(repair_max or 0.0)),
        }

    # -- readings (1-day rollups) ------------------------------------------------------------
    @staticmethod
    def _rollups(since: float, until: float, pattern: str,
                 projects: Sequence[str] | None) -> tuple[Any, list[Any]]:
        """FROM and WHERE of one reading kind's daily rollups in the month and scope."""
        source = (state_rollups
                  .join(states_meta, states_meta.c.metadata_id == state_rollups.c.metadata_id)
                  .join(entities, entities.c.entity_id == states_meta.c.entity_id)
                  .join(devices, devices.c.id == entities.c.device_id))
        where = [state_rollups.c.resolution == ROLLUP_1D, state_rollups.c.bucket_ts >= since,
                 state_rollups.c.bucket_ts < until, states_meta.c.entity_id.like(pattern)]
        if projects is not None:
            where.append(devices.c.project.in_(list(projects)))
        return source, where

    async def daily_readings(self, since: float, until: float, projects: Sequence[str] | None
                             ) -> dict[str, list[tuple[float, float, int, float]]]:
        """kind -> [(day start, sum, count, max)] over every entity of that kind in scope."""
        out: dict[str, list[tuple[float, float, int, float]]] = {}
        r = state_rollups.c
        for kind, pattern in READINGS.items():
            source, where = self._rollups(since, until, pattern, projects)
            rows = await self._all(
                select(r.bucket_ts, func.sum(r.value_sum), func.sum(r.value_count),
                       func.max(r.value_max))
                .select_from(source).where(*where).group_by(r.bucket_ts).order_by(r.bucket_ts))
            out[kind] = [(float(ts), float(s or 0.0), int(n or 0), float(m))
                         for ts, s, n, m in rows]
        return out

    async def residual_trends(self, since: float, until: float, projects: Sequence[str] | None,
                              top: int, device_ids: Sequence[str] | None = None
                              ) -> list[dict[str, Any]]:
        """Per device: the slope (mA/day, least squares) of its daily residual-current peaks
        in the month, with the peak; the `top` steepest rises, or those of `device_ids`."""
        r = state_rollups.c
        x = (r.bucket_ts - since) / DAY
        y = r.value_max
        n = func.count()
        sx, sy = func.sum(x), func.sum(y)
        denominator = n * func.sum(x * x) - sx * sx
        slope = ((n * func.sum(x * y) - sx * sy) / func.nullif(denominator, 0)).label("slope")
        source, where = self._rollups(since, until, READINGS["residual_current"], projects)
        if device_ids is not None:
            where.append(entities.c.device_id.in_(list(device_ids)))
        stmt = (select(entities.c.device_id, func.max(devices.c.name), func.max(devices.c.project),
                       slope, func.max(y), n)
                .select_from(source).where(*where).group_by(entities.c.device_id))
        if device_ids is None:
            stmt = stmt.having(and_(n >= 2, slope > 0)).order_by(
                slope.desc(), entities.c.device_id).limit(top)
        rows = await self._all(stmt)
        return [{"device_id": d, "device_name": name, "project": project,
                 "slope": None if s is None else float(s), "peak": float(peak), "days": int(days)}
                for d, name, project, s, peak, days in rows]
