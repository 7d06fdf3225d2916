"""Database: migrations on an empty database, idempotent re-open, SQLite tuning, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select, text

from hub.storage.database import Database, DatabaseError, head_revision, resolve_url
from hub.storage.schema import kv, metadata

EXPECTED_TABLES = {t.name for t in metadata.sorted_tables}


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_migrations_create_everything_and_reopen_is_idempotent(
    db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url, tmp_path)
    await db.open()
    assert await db.current_revision() == head_revision()
    assert head_revision() is not None and "0002" <= head_revision()
    assert EXPECTED_TABLES <= await _tables(db)
    async with db.engine.begin() as conn:
        await conn.execute(insert(kv).values(key="probe", value="kept"))
    await db.close()

    again = Database(db_url, tmp_path)
    await again.open()  # second upgrade to head: nothing to do, nothing lost
    try:
        assert await again.current_revision() == head_revision()
        async with again.engine.connect() as conn:
            value = (await conn.execute(select(kv.c.value).where(kv.c.key == "probe"))).scalar()
        assert value == "kept"
    finally:
        await again.close()


async def test_migration_matches_schema_module(database: Database) -> None:
    """0001 and schema.py must describe the same columns (autogenerate finds no diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def diff(sync_conn):  # type: ignore[no-untyped-def]
        return compare_metadata(MigrationContext.configure(sync_conn), metadata)

    async with database.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_relative_sqlite_path_lives_in_config_dir(tmp_path: Path) -> None:
    db = Database("sqlite+aiosqlite:///data/voltwatch.db", tmp_path)
    await db.open()
    try:
        assert (tmp_path / "data" / "voltwatch.db").exists()
        assert db.dialect == "sqlite"
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 1  # NORMAL
    finally:
        await db.close()


def test_short_urls_get_async_drivers(tmp_path: Path) -> None:
    assert resolve_url("sqlite:///x.db", tmp_path).drivername == "sqlite+aiosqlite"
    assert resolve_url("postgresql://u@h/db", tmp_path).drivername == "postgresql+asyncpg"
    with pytest.raises(DatabaseError, match="Unsupported database"):
        resolve_url("mysql://u@h/db", tmp_path)


async def test_connect_error_names_url_and_masks_password(tmp_path: Path) -> None:
    db = Database(
        "postgresql+asyncpg://postgres:s3cret@127.0.0.1:5432/voltwatch_no_such_db", tmp_path
    )
    with pytest.raises(DatabaseError) as info:
        await db.open()
    message = str(info.value)
    assert "voltwatch_no_such_db" in message
    assert "***" in message
    assert "s3cret" not in message


async def test_postgres_ends_a_session_left_idle_in_a_transaction(
        tmp_path: Path, pg_url: str) -> None:
    """`database.idle_in_transaction_timeout`: a hub session stuck inside a transaction (its
    link to the server hung mid-commit) is ended by the server, so the row locks it holds do
    not stall the other workers (tests/fleet/test_stall_drills.py drills it); migrations are
    exempt, and 0 turns it off."""
    import asyncio

    import asyncpg

    from hub.core.config import DATABASE_SCHEMA

    assert DATABASE_SCHEMA({})["idle_in_transaction_timeout"] == 60.0
    assert DATABASE_SCHEMA({"idle_in_transaction_timeout": "0"})["idle_in_transaction_timeout"] == 0
    db = Database(pg_url, tmp_path, idle_in_transaction_timeout=0.2)
    await db.open()
    off = Database(pg_url, tmp_path, idle_in_transaction_timeout=0)
    await off.open()
    watcher = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with off.engine.connect() as conn:
            assert (await conn.execute(text("SHOW idle_in_transaction_session_timeout"))
                    ).scalar_one() == "0"
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SHOW idle_in_transaction_session_timeout"))
                    ).scalar_one() == "200ms"
            # (SQLAlchemy began a transaction with the first statement) ... and it hangs here
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with asyncio.timeout(10):  # a failure bound: the server ends it at 0.2 s
                while await watcher.fetchval("SELECT count(*) FROM pg_stat_activity "
                                             "WHERE pid = $1", pid):
                    await asyncio.sleep(0.05)
            with pytest.raises(Exception):  # noqa: B017 - the driver's words vary; writers retry
                await conn.commit()
    finally:
        await watcher.close()
        await db.close()
        await off.close()
