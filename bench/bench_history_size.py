"""Bytes per stored row (raw readings and rollups), SQLite and PostgreSQL, for the sizing in
docs/history.md.

The rows are written by the real Recorder (real context ids, attribute sets, rollups in the
same transactions): ENTITIES entities, one reading a minute each for one day. Sizes include
each table's indexes: SQLite from the `dbstat` virtual table (pages actually used by each
b-tree), PostgreSQL from `pg_total_relation_size` after VACUUM FULL. The projection below uses
these measured sizes; nothing is assumed about a row's width.

Projection (printed, and copied into docs/history.md): DEVICES devices of NUMERIC entities
each, every entity recording a new value every POLL seconds, with the default retention.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import Result
from sqlalchemy import text

from hub.core.config import RETENTION_DEFAULTS
from hub.core.events import EventBus
from hub.core.states import StateMachine
from hub.storage.database import Database
from hub.storage.recorder import Recorder

ENTITIES = 100
MINUTES = 1440
START = 1_798_761_600.0
DEVICES = 10_000
NUMERIC = 22  # numeric sensors of an arcm-ref detector (CONTRACTS §4, §8)
POLL = 60.0  # seconds between recorded values of one entity
YEARS = 5
ATTRS = {"unit_of_measurement": "mA", "device_class": "current", "device_id": "arcm-1"}


class _Hub:
    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.time_zone = "Asia/Shanghai"
        self.bus = EventBus()
        self.bus.bind_loop(asyncio.get_running_loop())
        self.states = StateMachine(self.bus)


async def _fill(db: Database, config_dir: Path) -> tuple[int, int]:
    hub = _Hub(config_dir)
    recorder = Recorder(hub, db, {"max_batch": 1000, "retention": {"raw": None}})
    await recorder.async_start()
    try:
        for minute in range(MINUTES):
            for entity in range(ENTITIES):
                value = round(200 + (minute * 31 + entity * 17) % 400 / 10, 1) + minute % 2 * 0.05
                hub.states.async_set(f"sensor.arcm_{entity}_voltage_a", value, ATTRS,
                                     timestamp=START + minute * 60 + entity * 0.01)
            if minute % 10 == 9:
                await asyncio.sleep(0)
                await recorder.wait_capacity()
        await recorder.async_flush()
    finally:
        await recorder.async_stop()
    async with db.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT count(*) FROM states"))).scalar_one()
        rollups = (await conn.execute(text("SELECT count(*) FROM state_rollups"))).scalar_one()
    return raw, rollups


async def _sqlite_sizes(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        rows = (await conn.execute(text(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))).all()
    sizes = {"states": 0, "state_rollups": 0}
    for name, size in rows:
        for table in sizes:
            if name == table or name.startswith((f"ix_{table}_", f"sqlite_autoindex_{table}_")):
                sizes[table] += int(size)
    return sizes


async def _pg_sizes(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM needs it
        # FULL: the compact size of the live rows. Rollup upserts leave dead row versions
        # that autovacuum frees for reuse (the steady state), but a plain VACUUM does not
        # return them, so the table would look several times larger than it settles at.
        await conn.execute(text("VACUUM FULL ANALYZE states"))
        await conn.execute(text("VACUUM FULL ANALYZE state_rollups"))
        return {
            table: int((await conn.execute(text(
                f"SELECT pg_total_relation_size('{table}')"))).scalar_one())
            for table in ("states", "state_rollups")
        }


async def _measure(url: str, tmp: Path) -> dict[str, float]:
    db = Database(url, tmp)
    await db.open()
    try:
        raw, rollups = await _fill(db, tmp)
        sizes = await (_pg_sizes(db) if db.dialect == "postgresql" else _sqlite_sizes(db))
    finally:
        await db.close()
    return {"raw": sizes["states"] / raw, "rollup": sizes["state_rollups"] / rollups}


def projection(per_row: dict[str, float]) -> dict[str, float]:
    """Bytes held at steady state after YEARS years, per level, with the default retention."""
    entities = DEVICES * NUMERIC
    seconds = YEARS * 365.25 * 86400
    out = {}
    for level, bucket in (("raw", POLL), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0)):
        kept = min(RETENTION_DEFAULTS[level] or seconds, seconds)
        rows = entities * kept / bucket
        out[level] = rows * (per_row["raw"] if level == "raw" else per_row["rollup"])
    return out


async def _pg_url() -> tuple[str, Any]:
    import asyncpg

    admin = os.environ.get("VOLTWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"voltwatch_size_{os.getpid()}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}", drop


async def _main() -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        measured = {"SQLite": await _measure("sqlite+aiosqlite:///size.db", Path(tmp))}
        url, drop = await _pg_url()
        try:
            measured["PostgreSQL"] = await _measure(url, Path(tmp))
        finally:
            await drop()
    for backend, per_row in measured.items():
        for what in ("raw", "rollup"):
            results.append(Result(name=f"history bytes per {what} row incl. indexes, {backend}",
                                  value=per_row[what], unit="B/row", target="information"))
        sizes = projection(per_row)
        print(f"{backend}: " + ", ".join(f"{level} {size / 1e9:,.0f} GB"
                                        for level, size in sizes.items())
              + f", total {sum(sizes.values()) / 1e9:,.0f} GB "
              f"({DEVICES:,} devices x {NUMERIC} numeric entities, a value every {POLL:.0f} s, "
              f"{YEARS} years, default retention)", file=sys.stderr)
    return results


def run() -> list[Result]:
    return asyncio.run(_main())


if __name__ == "__main__":
    for result in run():
        print(result.row())
