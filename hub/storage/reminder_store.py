"""What is past its threshold, and which reminders were already sent (hub/core/reminders.py).

The candidate queries run every reminder interval, so each one is a single indexed query
that returns only what is late: active unacknowledged alarms (`ix_alarms_status`), waiting
work orders past their due time (`ix_workorders_status_due_at`), pending patrol rounds past
theirs (`ix_patrol_instances_status_due_at`).

`claim` is how a reminder is "sent once per crossing" even with a restart in between or two
hubs on one database: an upsert on (reason, object) that only writes when the object has no
row yet, crossed a different threshold than the one recorded, or is due a repeat; the rows it
returns are the reminders this caller won and must fire. Rows of objects no longer late are
deleted by `release_others`, which re-arms them for their next crossing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, delete, false, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from .database import Database
from .schema import ALARM_ACTIVE, alarms, patrol_instances, reminders_sent, workorders

WAITING_WORKORDERS = ("created", "dispatched", "accepted")


class SqlReminderStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(stmt)).mappings()]

    # -- what is late -----------------------------------------------------------------------
    async def unacknowledged_alarms(self, started_before: float,
                                    kinds: Sequence[str]) -> list[dict[str, Any]]:
        return await self._rows(
            select(alarms.c.id, alarms.c.project, alarms.c.device_id, alarms.c.device_name,
                   alarms.c.kind, alarms.c.type, alarms.c.severity, alarms.c.message,
                   alarms.c.message_en, alarms.c.started_at, alarms.c.area, alarms.c.location)
            .where(alarms.c.status == ALARM_ACTIVE, alarms.c.acked_at.is_(None),
                   alarms.c.kind.in_(list(kinds)), alarms.c.started_at <= started_before)
            .order_by(alarms.c.started_at)
        )

    async def overdue_workorders(self, now: float) -> list[dict[str, Any]]:
        return await self._rows(
            select(workorders.c.id, workorders.c.project, workorders.c.device_id,
                   workorders.c.title, workorders.c.assignee, workorders.c.status,
                   workorders.c.priority, workorders.c.alarm_id, workorders.c.due_at)
            .where(workorders.c.status.in_(WAITING_WORKORDERS), workorders.c.due_at < now)
            .order_by(workorders.c.due_at)
        )

    async def overdue_patrols(self, now: float) -> list[dict[str, Any]]:
        return await self._rows(
            select(patrol_instances.c.id, patrol_instances.c.project, patrol_instances.c.name,
                   patrol_instances.c.assignee, patrol_instances.c.template_id,
                   patrol_instances.c.scheduled_at, patrol_instances.c.due_at)
            .where(patrol_instances.c.status == "pending", patrol_instances.c.due_at < now)
            .order_by(patrol_instances.c.due_at)
        )

    # -- sent -------------------------------------------------------------------------------
    async def claim(self, reason: str, thresholds: dict[int, float], now: float,
                    repeat: float) -> dict[int, int]:
        """Record reminders for these objects; {object_id: count} of the ones this call won.

        count 1 is the first reminder of a crossing, more is a repeat.
        """
        if not thresholds:
            return {}
        table = reminders_sent
        insert_fn = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        won: dict[int, int] = {}
        async with self._db.engine.begin() as conn:
            for object_id, threshold in thresholds.items():
                stmt = insert_fn(table).values(
                    reason=reason, object_id=object_id, threshold_at=threshold,
                    first_sent_at=now, last_sent_at=now, count=1)
                crossed_again = table.c.threshold_at != stmt.excluded.threshold_at
                repeat_due = (table.c.last_sent_at <= now - repeat if repeat > 0
                              else false())
                stmt = stmt.on_conflict_do_update(
                    index_elements=[table.c.reason, table.c.object_id],
                    set_={
                        "threshold_at": stmt.excluded.threshold_at,
                        "first_sent_at": case((crossed_again, stmt.excluded.first_sent_at),
                                              else_=table.c.first_sent_at),
                        "last_sent_at": stmt.excluded.last_sent_at,
                        "count": case((crossed_again, 1), else_=table.c.count + 1),
                    },
                    where=or_(crossed_again, repeat_due),
                ).returning(table.c.object_id, table.c.count)
                row = (await conn.execute(stmt)).first()
                if row is not None:
                    won[int(row[0])] = int(row[1])
        return won

    async def release_others(self, reason: str, keep: Sequence[int]) -> int:
        """Forget the reminders of objects no longer late (acknowledged, repaired, done)."""
        stmt = delete(reminders_sent).where(reminders_sent.c.reason == reason)
        if keep:
            stmt = stmt.where(reminders_sent.c.object_id.not_in(list(keep)))
        async with self._db.engine.begin() as conn:
            return int((await conn.execute(stmt)).rowcount or 0)

    async def sent(self, reason: str) -> list[dict[str, Any]]:
        return await self._rows(
            select(reminders_sent).where(reminders_sent.c.reason == reason)
            .order_by(reminders_sent.c.object_id))
