"""SqlNotifyStore on SQLite and PostgreSQL: every query the dispatcher, the router, the
escalation and the API rely on, against a real migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.storage.database import Database
from hub.storage.notify_store import SqlNotifyStore


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[SqlNotifyStore]:
    db = Database(db_url, tmp_path)
    await db.open()
    try:
        yield SqlNotifyStore(db)
    finally:
        await db.close()


def _row(**values: Any) -> dict[str, Any]:
    row = {"created_at": 1.0, "updated_at": 1.0, "sent_at": None, "alarm_id": None,
           "project": "school-1", "recipient": "+8613800000001", "user_name": None,
           "channel": "sms", "kind": "alarm", "status": "queued", "attempts": 0,
           "reason": None, "title": None, "message": "告警", "language": "zh-CN",
           "severity": "major", "next_attempt_at": None, "fallback_of": None,
           "reference": None}
    row.update(values)
    return row


async def test_delivery_lifecycle_queries(store: SqlNotifyStore) -> None:
    first = await store.insert_delivery(_row())
    held = await store.insert_delivery(_row(status="held", next_attempt_at=50.0,
                                            recipient="+8613800000002"))
    await store.insert_delivery(_row(status="sending", project="market-1"))
    assert [r["id"] for r in await store.open_deliveries()] == [first, first + 2]
    assert [r["id"] for r in await store.held(due_before=60.0)] == [held]
    assert await store.held(due_before=10.0) == []
    assert await store.held("+8613800000001") == []

    await store.update_delivery(first, {"status": "sent", "sent_at": 5.0, "alarm_id": 9,
                                        "reference": "12,13"})
    row = await store.get_delivery(first)
    assert (row["status"], row["reference"], row["reports"]) == ("sent", "12,13", None)
    await store.update_many([first + 2], {"status": "failed", "reason": "x" * 500})
    assert (await store.get_delivery(first + 2))["reason"] == "x" * 500

    listed = await store.list_deliveries(projects=frozenset({"school-1"}), status=None,
                                         alarm_id=None, recipient=None, limit=10, offset=0)
    assert [r["id"] for r in listed] == [held, first]  # newest first, market-1 left out
    latest = await store.latest_alarm_sent_to(["13800000001", "+8613800000001"])
    assert latest is not None and latest["alarm_id"] == 9
    assert await store.count_by_status() == {"sent": 1, "held": 1, "failed": 1}
    assert await store.count_by_channel(frozenset({"market-1"})) == {"sms": {"failed": 1}}


async def test_sent_with_reference_matches_one_part_of_the_newest(store: SqlNotifyStore
                                                                  ) -> None:
    old = await store.insert_delivery(_row(status="sent", sent_at=1.0, reference="5"))
    multi = await store.insert_delivery(_row(status="sent", sent_at=2.0, reference="15,5,25"))
    other = await store.insert_delivery(_row(status="sent", sent_at=3.0, reference="105",
                                             recipient="+8613800000009"))
    await store.insert_delivery(_row(status="delivered", sent_at=4.0, reference="5"))
    await store.insert_delivery(_row(status="sent", sent_at=5.0, reference="5",
                                     channel="gateway"))

    def found(row: dict[str, Any] | None) -> int | None:
        return None if row is None else int(row["id"])

    assert found(await store.sent_with_reference("sms", "5")) == multi  # newest sent
    assert found(await store.sent_with_reference("sms", "25")) == multi
    assert found(await store.sent_with_reference("sms", "15")) == multi
    assert found(await store.sent_with_reference("sms", "1")) is None  # no prefix matches
    assert found(await store.sent_with_reference("sms", "105")) == other
    assert found(await store.sent_with_reference("sms", "105", ["+8613800000001"])) is None
    await store.update_delivery(multi, {"status": "delivered"})
    assert found(await store.sent_with_reference("sms", "5")) == old


async def test_subscriptions_and_escalations(store: SqlNotifyStore) -> None:
    version = store.subscriptions_version
    sub = await store.insert_subscription({
        "user_id": "01USER", "projects": ["school-1"], "kinds": ["alarm"],
        "min_severity": "major", "channels": ["sms"], "quiet_start": "22:00",
        "quiet_end": "07:00", "language": "en", "enabled": True, "created_at": 1.0,
        "created_by": "t"})
    assert store.subscriptions_version == version + 1
    (row,) = await store.subscriptions(["01USER"])
    assert (row["projects"], row["kinds"], row["channels"]) == (["school-1"], ["alarm"],
                                                                ["sms"])
    assert (await store.get_subscription(sub))["quiet_start"] == "22:00"
    assert await store.subscriptions(["other"]) == []
    await store.delete_subscription(sub)
    assert await store.subscriptions() == [] and store.subscriptions_version == version + 2

    chain = {"alarm_id": 3, "project": "school-1", "level": 0, "next_at": 10.0,
             "started_at": 1.0}
    await store.save_escalation(chain)
    await store.save_escalation({**chain, "level": 1, "next_at": 20.0})  # replaces
    (saved,) = await store.escalations()
    assert (saved["level"], saved["next_at"]) == (1, 20.0)
    await store.delete_escalation(3)
    assert await store.escalations() == []
