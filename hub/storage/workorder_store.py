"""SQL persistence for work orders, their history (transitions, comments) and photos.

Rows travel as plain dicts keyed by column names, so hub/core/workorders.py never imports
SQLAlchemy. The rules that keep several writers honest (two browsers, an automation and a
person, two hubs on one PostgreSQL):

* a transition is a conditional update (`WHERE status = <the status it was decided from>`),
  written in one transaction with its history row: of two people accepting the same order
  at once, one wins and the other learns the order moved on;
* one open work order per alarm is a partial unique index; an insert that collides raises
  `DuplicateOpenWorkOrder` and the caller returns the order that won.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..core.workorders import DuplicateOpenWorkOrder
from .database import Database
from .schema import workorder_events, workorder_photos, workorders

COLUMNS: tuple[str, ...] = tuple(c.name for c in workorders.columns)
#: statuses in which a work order waits for someone and can therefore be overdue
WAITING = ("created", "dispatched", "accepted")


@dataclass(slots=True)
class WorkOrderQuery:
    """Filters of GET /api/workorders (all optional; `now` decides what is overdue).

    `projects` None means every project; a sequence (even an empty one) means only those, so
    a caller whose scope holds no project gets nothing rather than everything.
    """

    statuses: Sequence[str] = ()
    projects: Sequence[str] | None = None
    assignees: Sequence[str] = ()
    devices: Sequence[str] = ()
    alarm_id: int | None = None
    patrol_id: int | None = None
    overdue: bool | None = None
    now: float = 0.0
    limit: int = 1000
    offset: int = 0


class SqlWorkOrderStore:
    """Work orders on the hub's database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- work orders ------------------------------------------------------------------------
    async def insert(self, row: dict[str, Any], events: Sequence[dict[str, Any]]) -> int:
        values = {name: row.get(name) for name in COLUMNS if name != "id"}
        try:
            async with self._db.engine.begin() as conn:
                result = await conn.execute(
                    insert(workorders).values(**values).returning(workorders.c.id))
                workorder_id = int(result.scalar_one())
                await self._add_events(conn, workorder_id, events)
                return workorder_id
        except IntegrityError as err:
            if row.get("alarm_id") is not None:
                raise DuplicateOpenWorkOrder(f"alarm {row['alarm_id']}") from err
            raise

    async def get(self, workorder_id: int) -> dict[str, Any] | None:
        async with self._db.engine.connect() as conn:
            found = (await conn.execute(
                select(workorders).where(workorders.c.id == workorder_id))).mappings().first()
            return dict(found) if found is not None else None

    async def open_for_alarm(self, alarm_id: int) -> dict[str, Any] | None:
        async with self._db.engine.connect() as conn:
            found = (await conn.execute(
                select(workorders).where(workorders.c.alarm_id == alarm_id,
                                         workorders.c.status != "closed")
            )).mappings().first()
            return dict(found) if found is not None else None

    async def any_for_alarm(self, alarm_id: int) -> bool:
        async with self._db.engine.connect() as conn:
            found = await conn.execute(
                select(workorders.c.id).where(workorders.c.alarm_id == alarm_id).limit(1))
            return found.first() is not None

    async def change(self, workorder_id: int, expected_status: str, changes: dict[str, Any],
                     events: Sequence[dict[str, Any]],
                     expected_assignee: str | None = None) -> bool:
        """Apply `changes` if the order is still in `expected_status` (and, when given, still
        assigned to `expected_assignee`: an assignee's own move must not land on an order
        that was given to someone else meanwhile); False when it is not."""
        values = {name: value for name, value in changes.items() if name in COLUMNS}
        where = [workorders.c.id == workorder_id, workorders.c.status == expected_status]
        if expected_assignee is not None:
            where.append(workorders.c.assignee == expected_assignee)
        async with self._db.engine.begin() as conn:
            result = await conn.execute(update(workorders).where(*where).values(**values))
            if result.rowcount != 1:
                return False
            await self._add_events(conn, workorder_id, events)
            return True

    async def add_event(self, workorder_id: int, event: dict[str, Any], at: float) -> None:
        """A history row that changes nothing else (a comment, a photo); touches updated_at."""
        async with self._db.engine.begin() as conn:
            await conn.execute(update(workorders).where(workorders.c.id == workorder_id)
                               .values(updated_at=at))
            await self._add_events(conn, workorder_id, [event])

    @staticmethod
    async def _add_events(conn: Any, workorder_id: int,
                          events: Sequence[dict[str, Any]]) -> None:
        if events:
            await conn.execute(insert(workorder_events),
                               [{**event, "workorder_id": workorder_id} for event in events])

    async def history(self, workorder_id: int) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            result = await conn.execute(
                select(workorder_events)
                .where(workorder_events.c.workorder_id == workorder_id)
                .order_by(workorder_events.c.at, workorder_events.c.id)
            )
            return [dict(row) for row in result.mappings()]

    async def query(self, q: WorkOrderQuery) -> list[dict[str, Any]]:
        """Newest first."""
        conditions: list[Any] = []
        if q.statuses:
            conditions.append(workorders.c.status.in_(list(q.statuses)))
        if q.projects is not None:
            conditions.append(workorders.c.project.in_(list(q.projects)))
        if q.assignees:
            conditions.append(workorders.c.assignee.in_(list(q.assignees)))
        if q.devices:
            conditions.append(workorders.c.device_id.in_(list(q.devices)))
        if q.alarm_id is not None:
            conditions.append(workorders.c.alarm_id == q.alarm_id)
        if q.patrol_id is not None:
            conditions.append(workorders.c.patrol_id == q.patrol_id)
        overdue = and_(workorders.c.status.in_(WAITING), workorders.c.due_at.is_not(None),
                       workorders.c.due_at < q.now)
        if q.overdue is True:
            conditions.append(overdue)
        elif q.overdue is False:
            conditions.append(~overdue)
        stmt = select(workorders)
        if conditions:
            stmt = stmt.where(and_(*conditions))
        stmt = stmt.order_by(workorders.c.created_at.desc(), workorders.c.id.desc())
        stmt = stmt.limit(q.limit).offset(q.offset)
        async with self._db.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(stmt)).mappings()]

    # -- photos -----------------------------------------------------------------------------
    async def add_photo(self, row: dict[str, Any], event: dict[str, Any]) -> int:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                insert(workorder_photos).values(**row).returning(workorder_photos.c.id))
            photo_id = int(result.scalar_one())
            event = {**event, "data": {**(event.get("data") or {}), "photo_id": photo_id}}
            await conn.execute(update(workorders)
                               .where(workorders.c.id == row["workorder_id"])
                               .values(updated_at=row["uploaded_at"]))
            await self._add_events(conn, row["workorder_id"], [event])
            return photo_id

    async def photos(self, workorder_id: int) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            result = await conn.execute(
                select(workorder_photos)
                .where(workorder_photos.c.workorder_id == workorder_id)
                .order_by(workorder_photos.c.id)
            )
            return [dict(row) for row in result.mappings()]

    async def photo(self, workorder_id: int, photo_id: int) -> dict[str, Any] | None:
        async with self._db.engine.connect() as conn:
            found = (await conn.execute(
                select(workorder_photos).where(workorder_photos.c.id == photo_id,
                                               workorder_photos.c.workorder_id == workorder_id)
            )).mappings().first()
            return dict(found) if found is not None else None

    async def photo_count(self, workorder_id: int) -> int:
        async with self._db.engine.connect() as conn:
            result = await conn.execute(
                select(func.count()).select_from(workorder_photos)
                .where(workorder_photos.c.workorder_id == workorder_id))
            return int(result.scalar_one())
