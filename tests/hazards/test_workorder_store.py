"""The work-order store on SQLite and PostgreSQL: a transition is conditional on the status it
was decided from, one open order per alarm is enforced by the database, history is kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.core.workorders import DuplicateOpenWorkOrder
from hub.storage.database import Database
from hub.storage.workorder_store import SqlWorkOrderStore, WorkOrderQuery


@pytest.fixture
async def database(tmp_path: Path, db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url, tmp_path)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def _row(**extra: Any) -> dict[str, Any]:
    row = {"title": "t", "source": "manual", "priority": "normal", "status": "dispatched",
           "assignee": "李", "created_at": 1000.0, "updated_at": 1000.0, "due_at": 2000.0}
    row.update(extra)
    return row


async def test_transition_is_conditional(database: Database) -> None:
    store = SqlWorkOrderStore(database)
    order_id = await store.insert(_row(), [{"action": "created", "at": 1000.0, "actor": "a"}])
    accept = {"status": "accepted", "accepted_at": 1100.0, "updated_at": 1100.0}
    event = {"action": "transition", "at": 1100.0, "actor": "b",
             "from_status": "dispatched", "to_status": "accepted"}
    results = await asyncio.gather(store.change(order_id, "dispatched", accept, [event]),
                                   store.change(order_id, "dispatched", accept, [event]))
    assert sorted(results) == [False, True]
    history = await store.history(order_id)
    assert [e["action"] for e in history] == ["created", "transition"]  # the loser wrote none
    row = await store.get(order_id)
    assert row is not None and row["status"] == "accepted" and row["accepted_at"] == 1100.0
    assert [r["id"] for r in await store.query(WorkOrderQuery(overdue=True, now=2500.0))] == [
        order_id]
    assert await store.query(WorkOrderQuery(overdue=True, now=1500.0)) == []


async def test_one_open_order_per_alarm(database: Database) -> None:
    store = SqlWorkOrderStore(database)
    first = await store.insert(_row(alarm_id=7), [])
    with pytest.raises(DuplicateOpenWorkOrder):
        await store.insert(_row(alarm_id=7), [])
    assert (await store.open_for_alarm(7) or {}).get("id") == first
    await store.change(first, "dispatched", {"status": "closed", "closed_at": 1200.0}, [])
    assert await store.open_for_alarm(7) is None
    second = await store.insert(_row(alarm_id=7), [])  # closed orders do not hold the slot
    assert second != first and await store.any_for_alarm(7)
    await store.insert(_row(), [])  # orders without an alarm are unconstrained
    await store.insert(_row(), [])
