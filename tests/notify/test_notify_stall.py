"""A database that does not answer holds no message (hub/core/notify/manager.py,
`store_timeout`): a send, its failure and its failover to the next channel all happen with
the delivery records unwritten; when the database answers the records are written in order,
with their real ids and `fallback_of` pointing at the real id of the failed one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hub.core.notify import DeliveryError

from .helpers import PAGER, Records, start

FAST = {"retries": 1, "retry_backoff": 0.01}
TWO = [{**PAGER, **FAST}, {"platform": "pager", "name": "backup", **FAST}]
PHONE = "+8613800000001"


class Stall:
    """Holds the notify store's delivery writes and reads until `release()`."""

    NAMES = ("insert_delivery", "update_delivery", "get_delivery")

    def __init__(self, store: Any) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.waiting = 0
        for name in self.NAMES:
            setattr(store, name, self._held(getattr(store, name)))

    def _held(self, real: Any) -> Any:
        async def held(*args: Any, **kwargs: Any) -> Any:
            self.waiting += 1
            await self.gate.wait()
            return await real(*args, **kwargs)

        return held

    def release(self) -> None:
        self.gate.set()
        for name in self.NAMES:
            delattr(self.store, name)


async def test_send_failure_and_failover_go_on_while_records_wait(tmp_path: Path,
                                                                  db_url: str) -> None:
    hub, pager, _ = await start(tmp_path, db_url, TWO, store_timeout=0.1)
    backup = hub.notify.notifiers["backup"]
    stall = Stall(hub.notify.store)
    try:
        seen = Records(hub)
        pager.failures.append(DeliveryError("invalid number", retryable=False))
        await hub.services.async_call("notify", "send", {"target": [PHONE], "message": "one"})
        (message,) = await backup.wait(1)  # failed on pager, sent by backup: all unwritten
        assert message.text == "one" and pager.sent == []
        failed = await seen.wait(lambda d: d["status"] == "failed")
        moved = await seen.wait(lambda d: d["status"] == "sent")
        assert failed["id"] < 0 and moved["id"] < 0 and moved["fallback_of"] == failed["id"]
        assert stall.waiting >= 1 and hub.notify.deferred_writes >= 2  # (the rest queue behind)

        stall.release()
        # each record announces its real id once written
        written = [await seen.wait(lambda d, s=status: d["status"] == s and d["id"] > 0)
                   for status in ("failed", "sent")]
        await asyncio.wait_for(asyncio.gather(*list(hub.notify.writes_in_flight)), 10)
        rows = [await hub.notify.store.get_delivery(r["id"]) for r in written]
        assert [(r["channel"], r["status"]) for r in rows] == [("pager", "failed"),
                                                                ("backup", "sent")]
        assert rows[1]["fallback_of"] == rows[0]["id"] and rows[0]["reason"] == "invalid number"
    finally:
        stall.gate.set()
        await hub.async_stop()


async def test_records_of_an_alarm_announced_before_it_was_stored_get_its_id(
        tmp_path: Path, db_url: str) -> None:
    """The alarm's row waits (its insert held): its SMS goes out, fails over, and both
    records are given the alarm's id once it has one; escalation then begins."""
    from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition

    from .helpers import user

    hub, pager, _ = await start(tmp_path, db_url, TWO)
    backup = hub.notify.notifiers["backup"]
    engine = hub.alarms
    real_insert = engine.store.insert
    gate = asyncio.Event()

    async def stalled_insert(row: dict[str, Any]) -> int:
        await gate.wait()
        return await real_insert(row)

    engine.store.insert = stalled_insert
    engine.store_timeout = 0.1
    try:
        await user(hub, "duty", "user", ["school-1"], PHONE)
        raised = Records(hub, "alarm_raised")
        updated = Records(hub, "alarm_updated")
        pager.failures.append(DeliveryError("invalid number", retryable=False))
        hub.bus.async_fire(EVENT_DEVICE_CONDITION, Condition.create(
            "arcm-1", "residual_current_high", True, value=550, unit="mA").as_dict())
        announced = await raised.wait(lambda a: a["type"] == "residual_current_high")
        assert announced["id"] is None
        (message,) = await backup.wait(1)
        assert "剩余电流" in message.text

        gate.set()
        stored = await updated.wait(lambda u: u["ref"] == announced["ref"])
        alarm_id = stored["id"]
        assert alarm_id is not None

        await hub.bus.async_drain()
        linking = [t for t in asyncio.all_tasks()
                   if t.get_name() == f"notify alarm {alarm_id} stored"]
        await asyncio.wait_for(asyncio.gather(*linking), 10)
        await asyncio.wait_for(asyncio.gather(*list(hub.notify.writes_in_flight)), 10)
        rows = await hub.notify.store.list_deliveries(
            projects=None, status=None, alarm_id=alarm_id, recipient=None, limit=10, offset=0)
        assert sorted((r["channel"], r["status"]) for r in rows) == [("backup", "sent"),
                                                                     ("pager", "failed")]
    finally:
        gate.set()
        del engine.store.insert
        await hub.async_stop()
