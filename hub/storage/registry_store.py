"""SQL persistence for the device and entity registries (the `RegistryStore` protocol).

Rows go in and out as plain dicts keyed by the DeviceEntry / EntityEntry field names, so the
core never imports SQLAlchemy. Saves are upserts (`INSERT .. ON CONFLICT DO UPDATE`, which both
SQLite and PostgreSQL speak) so a registry write is one statement, never read-then-write.

Entity saves are group-committed: a hub starting with 10,000 detectors registers about 90,000
entities at once, one task per device, and one transaction per entity exhausted the connection
pool (callers timed out after 30 s). Saves that arrive while a batch is being written wait for
the next batch, one executemany upsert in one transaction; each caller still returns only
after its own row is committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

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
        self._entity_rows: dict[str, dict[str, Any]] = {}
        self._entity_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._entity_writer: asyncio.Task[None] | None = None

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
            return [dict(row) for row in result.mappings()]

    async def load_devices(self) -> list[dict[str, Any]]:
        rows = await self._load(devices, devices.c.id)
        for row in rows:
            row["link"] = row.get("link") or {}
            row["options"] = row.get("options") or {}
        return rows

    async def save_device(self, device: dict[str, Any]) -> None:
        row = self._row(device, _DEVICE_COLUMNS, _DEVICE_DEFAULTS)
        async with self._db.engine.begin() as conn:
            await conn.execute(self._upsert(devices, "id", row))

    async def delete_device(self, device_id: str) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(devices).where(devices.c.id == device_id))

    async def load_entities(self) -> list[dict[str, Any]]:
        rows = await self._load(entities, entities.c.entity_id)
        for row in rows:
            row["disabled"] = bool(row["disabled"])
        return rows

    async def save_entity(self, entity: dict[str, Any]) -> None:
        row = self._row(entity, _ENTITY_COLUMNS, _ENTITY_DEFAULTS)
        self._entity_rows[row["entity_id"]] = row  # a later save of the same entity wins
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._entity_waiters.setdefault(row["entity_id"], []).append(waiter)
        if self._entity_writer is None or self._entity_writer.done():
            self._entity_writer = asyncio.create_task(self._write_entities(),
                                                      name="registry entity writer")
        await waiter

    def _entity_upsert(self) -> Any:
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        stmt = insert(entities)
        return stmt.on_conflict_do_update(
            index_elements=[entities.c.entity_id],
            set_={name: stmt.excluded[name] for name in _ENTITY_COLUMNS if name != "entity_id"},
        )

    async def _write_entities(self) -> None:
        while self._entity_rows:
            rows, waiters = self._entity_rows, self._entity_waiters
            self._entity_rows, self._entity_waiters = {}, {}
            try:
                async with self._db.engine.begin() as conn:
                    await conn.execute(self._entity_upsert(), list(rows.values()))
                failures: dict[str, BaseException] = {}
            except Exception:  # noqa: BLE001 - one bad row must not fail the others' saves
                failures = await self._write_entities_one_by_one(rows)
            for entity_id, futures in waiters.items():
                for future in futures:
                    if future.done():
                        continue
                    if entity_id in failures:
                        future.set_exception(failures[entity_id])
                    else:
                        future.set_result(None)

    async def _write_entities_one_by_one(
        self, rows: dict[str, dict[str, Any]]
    ) -> dict[str, BaseException]:
        failures: dict[str, BaseException] = {}
        for entity_id, row in rows.items():
            try:
                async with self._db.engine.begin() as conn:
                    await conn.execute(self._upsert(entities, "entity_id", row))
            except Exception as err:  # noqa: BLE001 - handed to that entity's caller
                failures[entity_id] = err
        return failures

    async def delete_entity(self, entity_id: str) -> None:
        self._entity_rows.pop(entity_id, None)  # a queued save must not bring it back
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(entities).where(entities.c.entity_id == entity_id))
