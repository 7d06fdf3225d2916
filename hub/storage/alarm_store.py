"""SQL persistence for alarm records and pending alarm delays (the engine's `AlarmStore`).

Rows travel as plain dicts keyed by the column names of `hub.storage.schema.alarms`, so the
core (hub/core/alarms.py) never imports SQLAlchemy. Three rules keep several writers (the
engine's writer task, an API acknowledgement, another hub on the same PostgreSQL) from
undoing each other:

* an insert of an active record that collides with the partial unique index raises
  `DuplicateActiveAlarm`; the engine then re-reads the row that won and updates it;
* the engine's updates write only the columns the engine owns (status, sources, count, ...),
  acknowledgement and handling write only theirs, so neither overwrites the other's fields;
* an acknowledgement is a conditional update (`WHERE acked_at IS NULL`): the first one wins
  and a second person acknowledging the same alarm does not rewrite who did it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..core.alarms import DuplicateActiveAlarm
from .database import Database
from .schema import ALARM_ACTIVE, alarm_pending, alarms

COLUMNS: tuple[str, ...] = tuple(c.name for c in alarms.columns)
#: Columns the alarm engine maintains after insert (never the acknowledgement fields).
ENGINE_COLUMNS: tuple[str, ...] = (
    "status", "sources", "latching", "count", "last_seen_at", "cleared_at", "cleared_by",
    "value", "entity_id", "severity",
)


@dataclass(slots=True)
class AlarmQuery:
    """Filters of GET /api/alarms (all optional; times are unix seconds)."""

    status: str = "all"  # active | cleared | all
    kinds: Sequence[str] = ()
    projects: Sequence[str] = ()
    devices: Sequence[str] = ()
    types: Sequence[str] = ()
    since: float | None = None
    until: float | None = None
    acknowledged: bool | None = None
    limit: int = 1000
    offset: int = 0


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    row["sources"] = list(row.get("sources") or [])
    row["latching"] = bool(row.get("latching"))
    return row


class SqlAlarmStore:
    """Implements hub.core.alarms.AlarmStore on the hub's database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- records ----------------------------------------------------------------------------
    async def insert(self, record: dict[str, Any]) -> int:
        """Insert a record and return its id; DuplicateActiveAlarm when the slot is taken."""
        values = {name: record.get(name) for name in COLUMNS if name != "id"}
        try:
            async with self._db.engine.begin() as conn:
                result = await conn.execute(insert(alarms).values(**values).returning(alarms.c.id))
                return int(result.scalar_one())
        except IntegrityError as err:
            if record.get("status") == ALARM_ACTIVE:
                raise DuplicateActiveAlarm(f"{record['device_id']}/{record['type']}") from err
            raise

    async def update(self, alarm_id: int, changes: dict[str, Any]) -> bool:
        """Update an active record; False when it is no longer active (another worker cleared
        it), so a stale copy never revives a cleared row."""
        values = {name: changes[name] for name in ENGINE_COLUMNS if name in changes}
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(alarms)
                .where(alarms.c.id == alarm_id, alarms.c.status == ALARM_ACTIVE)
                .values(**values)
                .returning(alarms.c.id)
            )
            return result.first() is not None

    async def clear(self, alarm_id: int, changes: dict[str, Any]) -> bool:
        """Write a clear only over an active row; False when another writer cleared it first.

        The engine announces `alarm_cleared` only on True, so two workers that both saw the
        device's clear (events reach every worker) send one notification, not two. The same
        conditional update as `update`; a separate name because the engine reads its answer
        differently (announce or not).
        """
        return await self.update(alarm_id, changes)

    async def merge_active(
        self, device_id: str, type_: str, sources: Iterable[str], seen_at: float
    ) -> dict[str, Any] | None:
        """Fold a repeat into the active row another writer holds; return that row.

        Runs in one transaction with the row locked on PostgreSQL, so two hubs adding their
        source at the same moment both end up in `sources`.
        """
        async with self._db.engine.begin() as conn:
            stmt = select(alarms).where(
                alarms.c.device_id == device_id,
                alarms.c.type == type_,
                alarms.c.status == ALARM_ACTIVE,
            )
            if self._db.dialect == "postgresql":
                stmt = stmt.with_for_update()
            found = (await conn.execute(stmt)).mappings().first()
            if found is None:
                return None
            row = _row(found)
            merged = sorted(set(row["sources"]) | set(sources))
            row.update(
                sources=merged,
                count=row["count"] + 1,
                last_seen_at=max(row["last_seen_at"], seen_at),
            )
            await conn.execute(
                update(alarms)
                .where(alarms.c.id == row["id"])
                .values(sources=merged, count=row["count"], last_seen_at=row["last_seen_at"])
            )
            return row

    async def find(self, device_id: str, type_: str, started_at: float) -> int | None:
        """The id of the record of this device and type that started at `started_at` (the
        identity of a spooled record: was its row written before the hub stopped?)."""
        async with self._db.engine.connect() as conn:
            found = await conn.execute(
                select(alarms.c.id).where(alarms.c.device_id == device_id,
                                          alarms.c.type == type_,
                                          alarms.c.started_at == started_at).limit(1))
            value = found.scalar()
            return int(value) if value is not None else None

    async def load_active(self) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            result = await conn.execute(
                select(alarms).where(alarms.c.status == ALARM_ACTIVE).order_by(alarms.c.id)
            )
            return [_row(row) for row in result.mappings()]

    async def get(self, alarm_id: int) -> dict[str, Any] | None:
        async with self._db.engine.connect() as conn:
            found = (
                await conn.execute(select(alarms).where(alarms.c.id == alarm_id))
            ).mappings().first()
            return _row(found) if found is not None else None

    async def get_many(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        if not ids:
            return []
        async with self._db.engine.connect() as conn:
            result = await conn.execute(
                select(alarms).where(alarms.c.id.in_(list(ids))).order_by(alarms.c.id)
            )
            return [_row(row) for row in result.mappings()]

    async def query(self, q: AlarmQuery) -> list[dict[str, Any]]:
        """Newest first; `since`/`until` select records whose time span overlaps the window."""
        conditions: list[Any] = []
        if q.status != "all":
            conditions.append(alarms.c.status == q.status)
        if q.kinds:
            conditions.append(alarms.c.kind.in_(list(q.kinds)))
        if q.projects:
            conditions.append(alarms.c.project.in_(list(q.projects)))
        if q.devices:
            conditions.append(alarms.c.device_id.in_(list(q.devices)))
        if q.types:
            conditions.append(alarms.c.type.in_(list(q.types)))
        if q.until is not None:
            conditions.append(alarms.c.started_at < q.until)
        if q.since is not None:
            # Started in the window, or still active / cleared inside it.
            conditions.append(
                or_(
                    alarms.c.started_at >= q.since,
                    alarms.c.cleared_at.is_(None),
                    alarms.c.cleared_at >= q.since,
                )
            )
        if q.acknowledged is True:
            conditions.append(alarms.c.acked_at.is_not(None))
        elif q.acknowledged is False:
            conditions.append(alarms.c.acked_at.is_(None))
        stmt = select(alarms)
        if conditions:
            stmt = stmt.where(and_(*conditions))
        stmt = stmt.order_by(alarms.c.started_at.desc(), alarms.c.id.desc())
        stmt = stmt.limit(q.limit).offset(q.offset)
        async with self._db.engine.connect() as conn:
            result = await conn.execute(stmt)
            return [_row(row) for row in result.mappings()]

    async def transitions(self, start: float, end: float) -> list[dict[str, Any]]:
        """Records raised, acknowledged, handled or cleared in [start, end), oldest first.

        A dry run replays alarm triggers from these (the record's times say when each
        transition happened; hub/core/automations/dryrun.py rebuilds the record as it was).
        """
        def inside(column: Any) -> Any:
            return and_(column >= start, column < end)

        stmt = (
            select(alarms)
            .where(alarms.c.started_at < end,
                   or_(inside(alarms.c.started_at), inside(alarms.c.acked_at),
                       inside(alarms.c.handled_at), inside(alarms.c.cleared_at)))
            .order_by(alarms.c.started_at, alarms.c.id)
        )
        async with self._db.engine.connect() as conn:
            result = await conn.execute(stmt)
            return [_row(row) for row in result.mappings()]

    async def acknowledge(
        self, ids: Sequence[int], user: str | None, at: float, note: str | None
    ) -> list[int]:
        """Acknowledge the records not yet acknowledged; return the ids this call acknowledged."""
        if not ids:
            return []
        values: dict[str, Any] = {"acked_at": at, "acked_by": user}
        if note:
            values["note"] = note
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(alarms)
                .where(alarms.c.id.in_(list(ids)), alarms.c.acked_at.is_(None))
                .values(**values)
                .returning(alarms.c.id)
            )
            return sorted(int(row[0]) for row in result)

    async def handle(
        self, ids: Sequence[int], user: str | None, at: float, note: str | None
    ) -> list[int]:
        """Mark records handled (processed), acknowledging any not yet acknowledged."""
        if not ids:
            return []
        values: dict[str, Any] = {"handled_at": at, "handled_by": user}
        if note:
            values["note"] = note
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(alarms)
                .where(alarms.c.id.in_(list(ids)), alarms.c.acked_at.is_(None))
                .values(acked_at=at, acked_by=user)
            )
            result = await conn.execute(
                update(alarms)
                .where(alarms.c.id.in_(list(ids)), alarms.c.handled_at.is_(None))
                .values(**values)
                .returning(alarms.c.id)
            )
            return sorted(int(row[0]) for row in result)

    # -- pending delays ---------------------------------------------------------------------
    def _upsert_pending(self, row: dict[str, Any]) -> Any:
        insert_fn = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        stmt = insert_fn(alarm_pending).values(**row)
        return stmt.on_conflict_do_update(
            index_elements=[alarm_pending.c.device_id, alarm_pending.c.type,
                            alarm_pending.c.entity_id],
            set_={"since": stmt.excluded.since, "noted_at": stmt.excluded.noted_at},
        )

    async def save_pending(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        async with self._db.engine.begin() as conn:
            for row in rows:
                await conn.execute(self._upsert_pending(row))

    async def delete_pending(self, keys: Sequence[tuple[str, str, str]]) -> None:
        if not keys:
            return
        async with self._db.engine.begin() as conn:
            for device_id, type_, entity_id in keys:
                await conn.execute(
                    delete(alarm_pending).where(
                        alarm_pending.c.device_id == device_id,
                        alarm_pending.c.type == type_,
                        alarm_pending.c.entity_id == entity_id,
                    )
                )

    async def load_pending(self) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            result = await conn.execute(select(alarm_pending))
            return [dict(row) for row in result.mappings()]
