"""SQL persistence for automations: timers, traces (with the keep rule) and edit versions.

Rows travel as plain dicts so hub/core/automations never imports SQLAlchemy.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, insert, select

from ..core.automations.traces import keep_ids
from .database import Database
from .schema import automation_timers, automation_traces, automation_versions


class SqlAutomationStore:
    """Implements the engine's AutomationStore and the API's version history."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- timers -------------------------------------------------------------------------------
    async def save_timer(self, row: dict[str, Any]) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(automation_timers).where(
                automation_timers.c.key == row["key"]))
            await conn.execute(insert(automation_timers).values(**row))

    async def delete_timer(self, key: str) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(automation_timers).where(automation_timers.c.key == key))

    async def load_timers(self) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            result = await conn.execute(select(automation_timers))
            return [dict(row._mapping) for row in result]

    # -- traces -------------------------------------------------------------------------------
    async def add_trace(self, automation_id: str, trace: dict[str, Any], keep: int) -> None:
        """Insert, then prune to the last `keep` plus the latest run of each outcome."""
        t = automation_traces
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(t).values(
                automation_id=automation_id, run_id=trace["run_id"],
                outcome=trace.get("outcome") or "unknown", started_at=trace["started_at"],
                finished_at=trace.get("finished_at"), trace=trace))
            rows = (await conn.execute(
                select(t.c.id, t.c.outcome).where(t.c.automation_id == automation_id)
                .order_by(t.c.id.desc()))).all()
            drop = [row_id for row_id, _ in rows if row_id not in keep_ids(
                [(r[0], r[1]) for r in rows], keep)]
            if drop:
                await conn.execute(delete(t).where(t.c.id.in_(drop)))

    async def traces(self, automation_id: str) -> list[dict[str, Any]]:
        t = automation_traces
        async with self._db.engine.connect() as conn:
            result = await conn.execute(select(t.c.trace).where(
                t.c.automation_id == automation_id).order_by(t.c.id.desc()))
            return [row[0] for row in result]

    async def delete_traces(self, automation_id: str) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(automation_traces).where(
                automation_traces.c.automation_id == automation_id))

    # -- versions -----------------------------------------------------------------------------
    async def add_version(self, automation_id: str, action: str, by: str | None,
                          old_text: str | None, new_text: str | None) -> int:
        v = automation_versions
        async with self._db.engine.begin() as conn:
            latest = (await conn.execute(select(func.max(v.c.version)).where(
                v.c.automation_id == automation_id))).scalar()
            version = int(latest or 0) + 1
            await conn.execute(insert(v).values(
                automation_id=automation_id, version=version, action=action, at=time.time(),
                by=by, old_text=old_text, new_text=new_text))
            return version

    async def versions(self, automation_id: str) -> list[dict[str, Any]]:
        v = automation_versions
        async with self._db.engine.connect() as conn:
            result = await conn.execute(select(v).where(
                v.c.automation_id == automation_id).order_by(v.c.version.desc()))
            return [dict(row._mapping) for row in result]

    async def version(self, automation_id: str, version: int) -> dict[str, Any] | None:
        v = automation_versions
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(v).where(
                v.c.automation_id == automation_id, v.c.version == version))).first()
            return dict(row._mapping) if row is not None else None
