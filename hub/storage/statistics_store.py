"""Aggregates for the home page and monthly reports (hub/core/statistics.py).

Everything is computed by the database with GROUP BY and SUM/COUNT over the month's rows
(`ix_alarms_started_at`, `ix_alarms_project_started_at`, `ix_workorders_created_at`): a month
of a large site is hundreds of thousands of records, and none of them is loaded into Python.
Means are returned as (sum, count) so the caller can combine groups exactly.

`projects` None means every project; a sequence (even an empty one) means only those: the
API passes the caller's scope, and a scope with no project must count nothing, not everything.

Days are local days: the caller passes the local midnights as unix seconds and a CASE
expression buckets `started_at` by them, which is right across a DST change and the same SQL
on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, func, literal, literal_column, select

from .database import Database
from .schema import alarms, patrol_instances, workorders

KINDS = ("alarm", "fault", "event")
WAITING_WORKORDERS = ("created", "dispatched", "accepted")


class SqlAggregates:
    """What the statistics and the monthly report (report_store.py) share: one aggregate
    query at a time, and the month's alarm records in scope."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def _all(self, stmt: Any) -> list[Any]:
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    @staticmethod
    def _alarm_window(since: float, until: float, projects: Sequence[str] | None) -> list[Any]:
        where = [alarms.c.started_at >= since, alarms.c.started_at < until]
        if projects is not None:
            where.append(alarms.c.project.in_(list(projects)))
        return where


class SqlStatisticsStore(SqlAggregates):

    @staticmethod
    def _per_kind() -> list[Any]:
        return [func.sum(case((alarms.c.kind == kind, 1), else_=0)).label(kind)
                for kind in KINDS]

    async def alarm_counts(self, since: float, until: float, projects: Sequence[str] | None,
                           top: int, day_starts: Sequence[float]) -> dict[str, Any]:
        where = self._alarm_window(since, until, projects)
        by_type = await self._all(
            select(alarms.c.kind, alarms.c.type, func.count().label("n"))
            .where(*where).group_by(alarms.c.kind, alarms.c.type)
            .order_by(func.count().desc(), alarms.c.type))
        by_project = await self._all(
            select(alarms.c.project, *self._per_kind(), func.count().label("total"))
            .where(*where).group_by(alarms.c.project)
            .order_by(func.count().desc(), alarms.c.project))
        by_device = await self._all(
            select(alarms.c.device_id, func.max(alarms.c.device_name).label("device_name"),
                   func.max(alarms.c.project).label("project"), *self._per_kind(),
                   func.count().label("total"))
            .where(*where).group_by(alarms.c.device_id)
            .order_by(func.count().desc(), alarms.c.device_id).limit(top))
        day = case(*[(alarms.c.started_at < start, literal(index - 1))
                     for index, start in enumerate(day_starts[1:], start=1)],
                   else_=literal(len(day_starts) - 1)).label("day")
        daily = await self._all(
            select(day, alarms.c.kind, func.count().label("n"))
            # by the alias: PostgreSQL would not see two bound copies of the CASE as one
            .where(*where).group_by(literal_column("day"), alarms.c.kind))
        return {
            "by_type": [{"kind": k, "type": t, "count": int(n)} for k, t, n in by_type],
            "by_project": [_kind_row({"project": row[0]}, row[1:]) for row in by_project],
            "by_device": [_kind_row({"device_id": row[0], "device_name": row[1],
                                     "project": row[2]}, row[3:]) for row in by_device],
            "daily": [(int(d), k, int(n)) for d, k, n in daily],
        }

    async def acknowledge_times(self, since: float, until: float,
                                projects: Sequence[str] | None) -> dict[str, tuple[float, int]]:
        """kind -> (sum of acked_at - started_at, count) over acknowledged alarms and faults."""
        where = [*self._alarm_window(since, until, projects), alarms.c.acked_at.is_not(None),
                 alarms.c.kind.in_(("alarm", "fault"))]
        rows = await self._all(
            select(alarms.c.kind, func.sum(alarms.c.acked_at - alarms.c.started_at),
                   func.count()).where(*where).group_by(alarms.c.kind))
        return {kind: (float(total or 0.0), int(n)) for kind, total, n in rows}

    async def workorder_counts(self, since: float, until: float, projects: Sequence[str] | None,
                               now: float) -> dict[str, Any]:
        created = [workorders.c.created_at >= since, workorders.c.created_at < until]
        scope = [workorders.c.project.in_(list(projects))] if projects is not None else []
        by_status = await self._all(
            select(workorders.c.status, func.count())
            .where(*created, *scope).group_by(workorders.c.status))
        repair = await self._all(
            select(func.sum(workorders.c.repaired_at - workorders.c.created_at), func.count())
            .where(*created, *scope, workorders.c.repaired_at.is_not(None)))
        waiting = await self._all(
            select(func.count(),
                   func.sum(case((and_(workorders.c.due_at.is_not(None),
                                       workorders.c.due_at < now), 1), else_=0)))
            .where(*scope, workorders.c.status.in_(WAITING_WORKORDERS)))
        total, count = repair[0]
        open_now, overdue_now = waiting[0]
        return {
            "by_status": {status: int(n) for status, n in by_status},
            "repair": (float(total or 0.0), int(count or 0)),
            "waiting_now": int(open_now or 0),
            "overdue_now": int(overdue_now or 0),
        }

    async def patrol_counts(self, since: float, until: float,
                            projects: Sequence[str] | None) -> dict[str, int]:
        where = [patrol_instances.c.scheduled_at >= since, patrol_instances.c.scheduled_at < until]
        if projects is not None:
            where.append(patrol_instances.c.project.in_(list(projects)))
        rows = await self._all(
            select(func.count(),
                   func.sum(case((patrol_instances.c.status == "completed", 1), else_=0)),
                   func.sum(patrol_instances.c.failed_count)).where(*where))
        scheduled, completed, failed = rows[0]
        return {"scheduled": int(scheduled or 0), "completed": int(completed or 0),
                "failed_items": int(failed or 0)}


def _kind_row(head: dict[str, Any], values: Sequence[Any]) -> dict[str, Any]:
    row = dict(head)
    for kind, value in zip((*KINDS, "total"), values, strict=True):
        row[kind] = int(value or 0)
    return row
