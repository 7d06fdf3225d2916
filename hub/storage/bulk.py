"""One executemany per statement through the dialect's own compiled SQL and positional tuples.

SQLAlchemy's Core executemany turns every row into a dict and processes it; for the recorder's
row counts that costs more than SQLite's insert itself. The statement is compiled once per
cache key and run with `exec_driver_sql`, tuples straight to the driver. When the dialect's
compiled parameter order differs from the caller's column order (or it is not positional),
the ordinary Core path with dicts is used instead, so correctness never depends on the trick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert


def values_statement(stmt: Insert, columns: Sequence[str]) -> Insert:
    """`stmt` with one named bind parameter per column (in the caller's order)."""
    return stmt.values({name: bindparam(name) for name in columns})


def executemany(
    conn: Connection,
    cache: dict[str, tuple[str, bool, Any]],
    key: str,
    build: Callable[[], Insert],
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
) -> None:
    """Run the statement `build()` makes (with `values_statement` and `columns`) for every
    tuple in `rows`; `build` is called only the first time for `key`, which caches the rest."""
    entry = cache.get(key)
    if entry is None:
        stmt = build()
        compiled = stmt.compile(dialect=conn.dialect)
        order = list(compiled.positiontup or []) if compiled.positional else []
        positional = bool(compiled.positional) and order == list(columns)
        entry = cache[key] = (str(compiled), positional, stmt)
    sql, positional, statement = entry
    if positional:
        conn.exec_driver_sql(sql, rows)
    else:
        conn.execute(statement, [dict(zip(columns, row, strict=True)) for row in rows])
