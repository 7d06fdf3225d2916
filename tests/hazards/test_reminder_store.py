"""The reminder store on SQLite and PostgreSQL: a claim is won once per crossing, again for a
new threshold or a due repeat, and released rows re-arm."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.storage.database import Database
from hub.storage.reminder_store import SqlReminderStore


@pytest.fixture
async def database(tmp_path: Path, db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url, tmp_path)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def test_claims(database: Database) -> None:
    one, two = SqlReminderStore(database), SqlReminderStore(database)  # e.g. two hubs
    won = await asyncio.gather(one.claim("workorder_overdue", {1: 100.0, 2: 200.0}, 300.0, 0),
                               two.claim("workorder_overdue", {1: 100.0, 2: 200.0}, 300.0, 0))
    assert sorted(len(w) for w in won) == [0, 2]  # both objects went to exactly one caller
    assert await one.claim("workorder_overdue", {1: 100.0}, 400.0, 0) == {}
    assert await one.claim("workorder_overdue", {1: 150.0}, 400.0, 0) == {1: 1}  # new due
    # repeats only when asked and only once the interval has passed
    assert await one.claim("workorder_overdue", {2: 200.0}, 400.0, 200.0) == {}
    assert await one.claim("workorder_overdue", {2: 200.0}, 500.0, 200.0) == {2: 2}
    assert await one.claim("alarm_unacknowledged", {1: 100.0}, 500.0, 0) == {1: 1}  # per reason
    assert await one.release_others("workorder_overdue", [2]) == 1
    assert [r["object_id"] for r in await one.sent("workorder_overdue")] == [2]
    assert await one.claim("workorder_overdue", {1: 150.0}, 600.0, 0) == {1: 1}  # re-armed
    assert await one.release_others("workorder_overdue", []) == 2
