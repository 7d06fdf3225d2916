"""SQL persistence for patrol templates and rounds (hub/core/patrols.py).

Generating a round is one transaction that moves the template's `next_due_at` on only if it
still holds the value the generator read (`WHERE next_due_at = <old>`) and inserts the round;
the unique index on (template_id, scheduled_at) backs that up. So a restart, a generator
running twice, or two hubs on one PostgreSQL produce each round exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .database import Database
from .schema import patrol_instances, patrol_templates

TEMPLATE_COLUMNS = tuple(c.name for c in patrol_templates.columns)
INSTANCE_COLUMNS = tuple(c.name for c in patrol_instances.columns)


@dataclass(slots=True)
class PatrolQuery:
    """Filters of GET /api/patrols; `projects` None = every project, a sequence (even empty)
    = only those, so an empty scope yields nothing rather than everything."""

    statuses: Sequence[str] = ()
    projects: Sequence[str] | None = None
    assignees: Sequence[str] = ()
    template_id: int | None = None
    overdue: bool | None = None
    now: float = 0.0
    limit: int = 1000
    offset: int = 0


class SqlPatrolStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(stmt)).mappings()]

    # -- templates --------------------------------------------------------------------------
    async def insert_template(self, row: dict[str, Any]) -> int:
        values = {k: row.get(k) for k in TEMPLATE_COLUMNS if k != "id"}
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                insert(patrol_templates).values(**values).returning(patrol_templates.c.id))
            return int(result.scalar_one())

    async def template(self, template_id: int) -> dict[str, Any] | None:
        rows = await self._rows(select(patrol_templates)
                                .where(patrol_templates.c.id == template_id))
        return rows[0] if rows else None

    async def templates(self, projects: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Templates of `projects` (None: all; empty: none)."""
        stmt = select(patrol_templates).order_by(patrol_templates.c.id)
        if projects is not None:
            stmt = stmt.where(patrol_templates.c.project.in_(list(projects)))
        return await self._rows(stmt)

    async def update_template(self, template_id: int, changes: dict[str, Any]) -> None:
        values = {k: v for k, v in changes.items() if k in TEMPLATE_COLUMNS and k != "id"}
        async with self._db.engine.begin() as conn:
            await conn.execute(update(patrol_templates)
                               .where(patrol_templates.c.id == template_id).values(**values))

    async def due_templates(self, now: float) -> list[dict[str, Any]]:
        return await self._rows(
            select(patrol_templates)
            .where(patrol_templates.c.enabled.is_(True), patrol_templates.c.next_due_at <= now)
            .order_by(patrol_templates.c.next_due_at))

    async def next_due(self) -> float | None:
        async with self._db.engine.connect() as conn:
            value = (await conn.execute(
                select(func.min(patrol_templates.c.next_due_at))
                .where(patrol_templates.c.enabled.is_(True)))).scalar_one()
            return float(value) if value is not None else None

    async def advance(self, template_id: int, expected_next: float, new_next: float,
                      instance: dict[str, Any]) -> int | None:
        """Move the template on and insert its round; None when another writer did it."""
        values = {k: instance.get(k) for k in INSTANCE_COLUMNS if k != "id"}
        try:
            async with self._db.engine.begin() as conn:
                moved = await conn.execute(
                    update(patrol_templates)
                    .where(patrol_templates.c.id == template_id,
                           patrol_templates.c.next_due_at == expected_next)
                    .values(next_due_at=new_next))
                if moved.rowcount != 1:
                    return None
                result = await conn.execute(
                    insert(patrol_instances).values(**values).returning(patrol_instances.c.id))
                return int(result.scalar_one())
        except IntegrityError:
            # That round exists already (unique template_id, scheduled_at): only move on, so
            # the template is not stuck retrying it.
            async with self._db.engine.begin() as conn:
                await conn.execute(
                    update(patrol_templates)
                    .where(patrol_templates.c.id == template_id,
                           patrol_templates.c.next_due_at == expected_next)
                    .values(next_due_at=new_next))
            return None

    # -- rounds -----------------------------------------------------------------------------
    async def instance(self, instance_id: int) -> dict[str, Any] | None:
        rows = await self._rows(select(patrol_instances)
                                .where(patrol_instances.c.id == instance_id))
        return rows[0] if rows else None

    async def instances(self, q: PatrolQuery) -> list[dict[str, Any]]:
        where: list[Any] = []
        if q.statuses:
            where.append(patrol_instances.c.status.in_(list(q.statuses)))
        if q.projects is not None:
            where.append(patrol_instances.c.project.in_(list(q.projects)))
        if q.assignees:
            where.append(patrol_instances.c.assignee.in_(list(q.assignees)))
        if q.template_id is not None:
            where.append(patrol_instances.c.template_id == q.template_id)
        late = and_(patrol_instances.c.status == "pending", patrol_instances.c.due_at < q.now)
        if q.overdue is True:
            where.append(late)
        elif q.overdue is False:
            where.append(~late)
        stmt = select(patrol_instances)
        if where:
            stmt = stmt.where(and_(*where))
        stmt = (stmt.order_by(patrol_instances.c.scheduled_at.desc(),
                              patrol_instances.c.id.desc())
                .limit(q.limit).offset(q.offset))
        return await self._rows(stmt)

    async def complete(self, instance_id: int, at: float, by: str | None,
                       results: list[dict[str, Any]], failed: int,
                       expected_assignee: str | None = None) -> bool:
        """Complete a pending round; False when it is not pending (any more), or, with
        `expected_assignee`, no longer assigned to that person (reassigned meanwhile)."""
        where = [patrol_instances.c.id == instance_id, patrol_instances.c.status == "pending"]
        if expected_assignee is not None:
            where.append(patrol_instances.c.assignee == expected_assignee)
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(patrol_instances)
                .where(*where)
                .values(status="completed", completed_at=at, completed_by=by,
                        results=results, failed_count=failed))
            return result.rowcount == 1

    async def set_results(self, instance_id: int, results: list[dict[str, Any]]) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(update(patrol_instances)
                               .where(patrol_instances.c.id == instance_id)
                               .values(results=results))

    async def assign(self, instance_id: int, assignee: str | None) -> bool:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(patrol_instances)
                .where(patrol_instances.c.id == instance_id,
                       patrol_instances.c.status == "pending")
                .values(assignee=assignee))
            return result.rowcount == 1
