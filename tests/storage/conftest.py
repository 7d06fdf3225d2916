"""Fixtures for the storage tests: a real SQLite file and a real PostgreSQL database.

The PostgreSQL database is created per test with a unique name on the server at
127.0.0.1:5432 (user postgres, trust auth; override with VOLTWATCH_TEST_PG) and dropped
afterwards. When no server answers, the PostgreSQL variants are skipped with the reason, so a
machine without PostgreSQL still runs the SQLite half.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.core.events import EventBus
from hub.core.states import StateMachine
from hub.storage.database import Database
from hub.storage.recorder import Recorder

BACKENDS = ["sqlite", "postgresql"]


@dataclass
class MiniHub:
    """What the recorder needs from the Hub: a bus bound to the loop, states, a config dir."""

    bus: EventBus
    states: StateMachine
    config_dir: Path


@pytest.fixture
async def hub(tmp_path: Path) -> MiniHub:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    return MiniHub(bus=bus, states=StateMachine(bus), config_dir=tmp_path)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """A database URL for each backend (SQLite relative to the config dir, as configured)."""
    if request.param == "sqlite":
        return "sqlite+aiosqlite:///voltwatch.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def database(db_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    """An open, migrated database on each backend."""
    db = Database(db_url, tmp_path, busy_timeout=0.05)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Database]:
    """SQLite only, for tests that lock the file from outside."""
    db = Database("sqlite+aiosqlite:///voltwatch.db", tmp_path, busy_timeout=0.05)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def fast_options(**overrides: Any) -> dict[str, Any]:
    """Recorder options for tests: no timer-driven commits, quick retries.

    A commit interval of an hour means every commit in a test comes from a full batch or an
    explicit flush, so counts of transactions are deterministic.
    """
    options: dict[str, Any] = {
        "commit_interval": 3600,
        "max_batch": 100,
        "max_queue": 10_000,
        "retry_initial": 0.001,
        "retry_max": 0.01,
        "stop_timeout": 30,
    }
    options.update(overrides)
    return options


@pytest.fixture
async def recorder(hub: MiniHub, database: Database) -> AsyncIterator[Recorder]:
    """A started recorder on each backend (fast options), stopped after the test."""
    rec = Recorder(hub, database, fast_options())
    await rec.async_start()
    try:
        yield rec
    finally:
        await rec.async_stop()
