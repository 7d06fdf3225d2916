"""SQL persistence for the device and entity registries (the `RegistryStore` protocol).

Rows go in and out as plain dicts keyed by the DeviceEntry / EntityEntry field names, so the
core never imports SQLAlchemy. Saves are upserts (`INSERT .. ON CONFLICT DO UPDATE`, which both
SQLite and PostgreSQL speak) so a registry write is one statement, never read-then-write.

Device and entity saves are group-committed: a hub starting with 10,000 detectors saves 10,000
devices and about 90,000 entities at once, one task per device; one transaction per row
exhausted the connection pool (callers timed out after 30 s) and took minutes of commits.
Saves that arrive while a batch is being written wait for the next batch, one executemany
upsert in one transaction; each caller still returns only after its own row is committed.
`save_devices` / `save_entities` hand a whole list in at once (one waiter, one batch): what
the hub's start and a plugin registering the entities of all its devices use.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import JSON, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from .bulk import executemany, values_statement
from .database import Database
from .schema import devices, entities

_DEVICE_COLUMNS = [c.name for c in devices.columns]
_ENTITY_COLUMNS = [c.name for c in entities.columns]
_DEVICE_DEFAULTS: dict[str, Any] = {"link": {}, "options": {}, "source": "config"}
_ENTITY_DEFAULTS: dict[str, Any] = {"disabled": False}


class SqlRegistryStore:
    """Implements hub.core.registries.RegistryStore on the hub's database."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._devices = _GroupUpsert(self, devices, "id")
        self._entities = _GroupUpsert(self, entities, "entity_id")

    def _upsert(self, table: Table, key: str, row: dict[str, Any]):
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        stmt = insert(table).values(**row)
        return stmt.on_conflict_do_update(
            index_elements=[table.c[key]],
            set_={name: stmt.excluded[name] for name in row if name != key},
        )

    @staticmethod
    def _row(
        data: dict[str, Any], columns: list[str], defaults: dict[str, Any]
    ) -> dict[str, Any]:
        row = {name: data.get(name) for name in columns}
        for name, default in defaults.items():
            if row[name] is None:
                row[name] = default
        return row

    async def _load(self, table: Table, order: Any) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            result = await conn.execute(select(table).order_by(order))
            keys = list(result.keys())  # zip per row: RowMapping per row cost seconds at 800k
            return [dict(zip(keys, row, strict=True)) for row in result]

    async def load_devices(self) -> list[dict[str, Any]]:
        rows = await self._load(devices, devices.c.id)
        for row in rows:
            row["link"] = row.get("link") or {}
            row["options"] = row.get("options") or {}
        return rows

    async def save_device(self, device: dict[str, Any]) -> None:
        await self._devices.save(self._row(device, _DEVICE_COLUMNS, _DEVICE_DEFAULTS))

    async def save_devices(self, many: list[dict[str, Any]]) -> None:
        """Several devices in one batch (one transaction): what a hub start with 100,000
        configured devices does instead of 100,000 `save_device` calls."""
        await self._devices.save_many(
            [self._row(device, _DEVICE_COLUMNS, _DEVICE_DEFAULTS) for device in many])

    async def delete_device(self, device_id: str) -> None:
        self._devices.forget(device_id)
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(devices).where(devices.c.id == device_id))

    async def load_entities(self) -> list[dict[str, Any]]:
        rows = await self._load(entities, entities.c.entity_id)
        for row in rows:
            row["disabled"] = bool(row["disabled"])
        return rows

    async def save_entity(self, entity: dict[str, Any]) -> None:
        await self._entities.save(self._row(entity, _ENTITY_COLUMNS, _ENTITY_DEFAULTS))

    async def save_entities(self, many: list[dict[str, Any]]) -> None:
        """Several entities in one batch (one transaction), as `save_devices`."""
        await self._entities.save_many(
            [self._row(entity, _ENTITY_COLUMNS, _ENTITY_DEFAULTS) for entity in many])

    async def delete_entity(self, entity_id: str) -> None:
        self._entities.forget(entity_id)  # a queued save must not bring it back
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(entities).where(entities.c.entity_id == entity_id))


class _GroupUpsert:
    """Upserts into one table, group-committed: rows saved while a batch is written go into
    the next one (one executemany in one transaction); each `save` returns once its own row
    is committed. A batch that fails is written row by row, so a bad row fails only its own
    caller."""

    def __init__(self, store: SqlRegistryStore, table: Table, key: str) -> None:
        self._store = store
        self._table = table
        self._key = key
        self._rows: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._writer: asyncio.Task[None] | None = None
        # Without JSON columns (entities) a batch goes to the driver as plain tuples through
        # the dialect's compiled statement (hub/storage/bulk.py): SQLAlchemy's per-row
        # parameter processing was most of the time of 800,000 entities at start.
        self._columns = [c.name for c in table.columns]
        self._tuples = not any(isinstance(c.type, JSON) for c in table.columns)
        self._sql: dict[str, Any] = {}

    async def save(self, row: dict[str, Any]) -> None:
        key = row[self._key]
        self._rows[key] = row  # a later save of the same key wins
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name=f"{self._table.name} writer")
        await waiter

    async def save_many(self, rows: list[dict[str, Any]]) -> None:
        """`save` for many rows with one waiter: returns once all are committed; the first
        row that failed (written alone after its batch failed) is raised."""
        if not rows:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for row in rows:
            key = row[self._key]
            self._rows[key] = row
            self._waiters.setdefault(key, []).append(waiter)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name=f"{self._table.name} writer")
        await waiter

    def forget(self, key: str) -> None:
        self._rows.pop(key, None)

    def _execute(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if self._tuples:
            columns = self._columns
            executemany(conn, self._sql, "upsert",
                        lambda: values_statement(self._statement(), columns), columns,
                        [tuple(row[name] for name in columns) for row in rows])
        else:
            conn.execute(self._statement(), rows)

    def _statement(self) -> Any:
        db = self._store._db
        insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        stmt = insert(self._table)
        return stmt.on_conflict_do_update(
            index_elements=[self._table.c[self._key]],
            set_={c.name: stmt.excluded[c.name] for c in self._table.columns
                  if c.name != self._key},
        )

    async def _write(self) -> None:
        engine = self._store._db.engine
        while self._rows:
            rows, waiters = self._rows, self._waiters
            self._rows, self._waiters = {}, {}
            failures: dict[str, BaseException] = {}
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(self._execute, list(rows.values()))
            except Exception:  # noqa: BLE001 - one bad row must not fail the others' saves
                for key, row in rows.items():
                    try:
                        async with engine.begin() as conn:
                            await conn.execute(self._store._upsert(self._table, self._key, row))
                    except Exception as err:  # noqa: BLE001 - handed to that row's caller
                        failures[key] = err
            # Failures first: a waiter shared by many rows (`save_many`) gets its failure
            # even when another of its rows succeeded.
            for key, err in failures.items():
                for future in waiters.get(key, ()):
                    if not future.done():
                        future.set_exception(err)
            for futures in waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_result(None)
