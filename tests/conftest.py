"""Suite-wide setup: make the test-only plugins (tests/plugins/*) discoverable.

`make test` installs them into .venv/test-plugins, beside the venv rather than into it, so the
demo and `voltwatch run` never load a plugin that exists only to fail. Putting the folder on
sys.path (and on PYTHONPATH for subprocesses such as `voltwatch plugins`) makes their entry
points visible to importlib.metadata exactly as an installed plugin's are.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

TEST_PLUGIN_DIR = Path(sys.prefix) / "test-plugins"

if TEST_PLUGIN_DIR.is_dir():
    if str(TEST_PLUGIN_DIR) not in sys.path:
        sys.path.append(str(TEST_PLUGIN_DIR))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(TEST_PLUGIN_DIR) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(TEST_PLUGIN_DIR)])


# -- PostgreSQL: one fresh database per test ------------------------------------------------
PG_ADMIN = os.environ.get("VOLTWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _pg_admin_execute(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_admin(sql: str) -> None:
    """Run one admin statement (sync fixtures run outside the test's loop, so asyncio.run).

    An unreachable server fails the test rather than skipping it: `make test` starts
    PostgreSQL, and a skipped database test would let CI pass without ever running it.
    """
    try:
        asyncio.run(_pg_admin_execute(sql))
    except (TimeoutError, OSError) as err:
        pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN} (make test starts it): {err}")


#: Database of the Hub-level fixtures: `sqlite` (default) or `postgresql` (a fresh database on
#: the test server per test). `make test` runs the hub suites once more with `postgresql`.
TEST_DB = os.environ.get("VOLTWATCH_TEST_DB", "sqlite").strip().lower()


@pytest.fixture
def hub_db_url(request: pytest.FixtureRequest) -> str:
    """The URL a Hub fixture opens, chosen by VOLTWATCH_TEST_DB (SQLite in the config dir)."""
    if TEST_DB in ("postgresql", "postgres", "pg"):
        return str(request.getfixturevalue("pg_url"))
    if TEST_DB != "sqlite":
        pytest.fail(f"VOLTWATCH_TEST_DB={TEST_DB!r}: expected sqlite or postgresql")
    return "sqlite+aiosqlite:///hub.db"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (asyncpg URL), dropped after the test."""
    name = f"voltwatch_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
