"""`voltwatch db migrate --to URL`: copy an installation's database to another one (SQLite → PostgreSQL).

Why it is built this way:

* The target is opened with `Database.open()`, so Alembic creates the same schema there
  (same revision) before a row is copied; the source is migrated to head too, so both sides
  agree on every column.
* Tables are copied parents first (`metadata.sorted_tables`, which follows the foreign keys),
  each read in primary-key order as a stream and written in batches of `batch` rows, one
  transaction per batch: years of readings never sit in memory or in one giant transaction.
* Rows keep their ids (alarm ids, state ids, attribute ids are referenced elsewhere). On
  PostgreSQL the sequences behind those ids are then set past the largest copied id, or the
  hub's first insert after the move would collide with a copied row.
* The target must be empty: a half-finished earlier run, or a database that belongs to a
  running hub, is refused with the table that holds rows, never merged into.
* The counts of every table are compared at the end; any difference fails the command.

Stop the hub before migrating: rows written to the source during the copy would be missed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Integer, Table, func, insert, select, text

from .database import Database, DatabaseError, mask
from .schema import metadata

DEFAULT_BATCH = 5000


class MigrationError(RuntimeError):
    """The copy cannot start or did not produce an identical database; the message says why."""


async def _count(db: Database, table: Table) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def copy_database(
    source: Database,
    target: Database,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy every table of the schema from `source` to the empty `target`; rows per table."""
    tables = list(metadata.sorted_tables)
    for table in tables:
        present = await _count(target, table)
        if present:
            raise MigrationError(
                f"Target database {target.masked_url} is not empty: table {table.name} holds "
                f"{present} rows. Migrate into a new, empty database."
            )
    copied: dict[str, int] = {}
    for table in tables:
        copied[table.name] = await _copy_table(source, target, table, batch, progress)
    if target.dialect == "postgresql":
        await _fix_sequences(target, tables)
    for table in tables:
        have = await _count(target, table)
        if have != copied[table.name] or have != await _count(source, table):
            raise MigrationError(
                f"Table {table.name}: {copied[table.name]} rows copied but the target holds "
                f"{have}; the target is incomplete"
            )
    return copied


async def _copy_table(
    source: Database,
    target: Database,
    table: Table,
    batch: int,
    progress: Callable[[str, int], None] | None,
) -> int:
    order = list(table.primary_key.columns) or list(table.columns)
    total = 0
    async with source.engine.connect() as src:
        result = await src.stream(select(table).order_by(*order))
        async for rows in result.mappings().partitions(batch):
            try:
                async with target.engine.begin() as dst:
                    await dst.execute(insert(table), [dict(row) for row in rows])
            except Exception as err:
                first = {col.name: rows[0][col.name] for col in order}
                raise MigrationError(
                    f"Table {table.name}: writing the batch from {first} failed: "
                    f"{type(err).__name__}: {err}"
                ) from err
            total += len(rows)
            if progress is not None:
                progress(table.name, total)
    return total


async def _fix_sequences(target: Database, tables: list[Table]) -> None:
    """Every serial id column's sequence continues after the largest copied id."""
    async with target.engine.begin() as conn:
        for table in tables:
            keys = list(table.primary_key.columns)
            if len(keys) != 1 or not isinstance(keys[0].type, Integer):
                continue
            column = keys[0].name
            await conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence(:table, :column), "
                    f'COALESCE(MAX("{column}"), 1), MAX("{column}") IS NOT NULL) '
                    f'FROM "{table.name}"'
                ).bindparams(table=table.name, column=column)
            )


async def migrate_cli(config_dir: Path, to_url: str, batch: int = DEFAULT_BATCH) -> int:
    """The command: 0 when every row arrived, 1 with the reason otherwise."""
    from hub.offline import load_or_report

    config = load_or_report(config_dir)
    if config is None:
        return 1
    try:
        source = Database(config["database"]["url"], config_dir)
        target = Database(to_url, config_dir)
    except DatabaseError as err:
        print(str(err), file=sys.stderr)
        return 1
    if source.url.render_as_string() == target.url.render_as_string():
        print(f"--to names the database the hub uses already ({mask(target.url)})",
              file=sys.stderr)
        return 1
    started = time.monotonic()
    last: dict[str, float] = {}

    def progress(table: str, rows: int) -> None:
        now = time.monotonic()
        if now - last.get(table, 0.0) >= 5.0:
            last[table] = now
            print(f"  {table}: {rows} rows", file=sys.stderr)

    try:
        await source.open()
        await target.open()
        copied = await copy_database(source, target, batch, progress)
    except (DatabaseError, MigrationError) as err:
        print(str(err), file=sys.stderr)
        return 1
    finally:
        await source.close()
        await target.close()
    total = sum(copied.values())
    print(f"Copied {total} rows in {len(copied)} tables from {source.masked_url} to "
          f"{target.masked_url} in {time.monotonic() - started:.1f} s.")
    print(f'Now set `database: {{url: "{target.masked_url}"}}` in '
          f"{config_dir / 'configuration.yaml'} (with the real password) and start the hub.")
    return 0
