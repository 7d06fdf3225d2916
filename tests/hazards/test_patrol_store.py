"""The patrol store on SQLite and PostgreSQL: moving a template on and inserting its round is
one conditional step, so concurrent generators make each round once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.storage.database import Database
from hub.storage.patrol_store import PatrolQuery, SqlPatrolStore


@pytest.fixture
async def database(tmp_path: Path, db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url, tmp_path)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def test_each_round_once(database: Database) -> None:
    store = SqlPatrolStore(database)
    template_id = await store.insert_template({
        "name": "巡检", "project": "p", "items": [{"name": "a"}], "period": "interval",
        "interval": 3600.0, "start_at": 0.0, "next_due_at": 0.0, "enabled": True,
        "created_at": 0.0})
    instance = {"template_id": template_id, "name": "巡检", "project": "p",
                "items": [{"name": "a"}], "status": "pending", "scheduled_at": 0.0,
                "due_at": 3600.0, "failed_count": 0}
    made = await asyncio.gather(*(store.advance(template_id, 0.0, 3600.0, instance)
                                  for _ in range(4)))
    assert len([m for m in made if m is not None]) == 1
    assert (await store.template(template_id) or {})["next_due_at"] == 3600.0
    assert await store.next_due() == 3600.0
    assert len(await store.instances(PatrolQuery())) == 1
    # a round that exists already moves the template on without a second row
    await store.update_template(template_id, {"next_due_at": 0.0})
    assert await store.advance(template_id, 0.0, 3600.0, instance) is None
    assert (await store.template(template_id) or {})["next_due_at"] == 3600.0
    assert len(await store.instances(PatrolQuery())) == 1
    rows = await store.instances(PatrolQuery(overdue=True, now=4000.0))
    assert await store.complete(rows[0]["id"], 4000.0, "张", [{"item": "a", "ok": True}], 0)
    assert not await store.complete(rows[0]["id"], 4001.0, "李", [], 0)
