"""The dispatcher on SQLite and PostgreSQL: retries, failover, restart, delivery reports.

Channels are in-test `Pager`s (tests/notify/helpers.py) that fail on demand; every wait is on
a `notification_delivery` event, bounded by a timeout that only limits a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.core.notify import DeliveryError

from .helpers import PAGER, Records, start

FAST = {"retries": 1, "retry_backoff": 0.01}
TWO = [{**PAGER, **FAST}, {"platform": "pager", "name": "backup", **FAST}]
PHONE = "+8613800000001"


async def _send(hub: Any, channel: str = "pager", text: str = "t") -> None:
    await hub.services.async_call("notify", channel, {"target": [PHONE], "message": text})


async def test_retry_then_sent(tmp_path: Path, db_url: str) -> None:
    hub, pager, _ = await start(tmp_path, db_url, [{**PAGER, **FAST}])
    try:
        seen = Records(hub)
        pager.failures.append(DeliveryError("busy"))
        await _send(hub)
        retry = await seen.wait(lambda d: d["status"] == "queued" and d["attempts"] == 1)
        assert retry["reason"] == "busy"
        sent = await seen.wait(lambda d: d["status"] == "sent")
        assert (sent["id"], sent["attempts"], sent["reason"]) == (retry["id"], 2, None)
        row = await hub.notify.store.get_delivery(sent["id"])
        assert (row["status"], row["attempts"], row["reference"]) == ("sent", 2, "1")
    finally:
        await hub.async_stop()


async def test_permanent_failure_and_unavailable_channel_fail_over(tmp_path: Path,
                                                                   db_url: str) -> None:
    hub, pager, _ = await start(tmp_path, db_url, TWO)
    backup = hub.notify.notifiers["backup"]
    try:
        seen = Records(hub)
        pager.failures.append(DeliveryError("invalid number", retryable=False))
        await _send(hub, "send", "one")
        failed = await seen.wait(lambda d: d["status"] == "failed")
        assert (failed["channel"], failed["attempts"]) == ("pager", 1)
        moved = await seen.wait(lambda d: d["status"] == "sent")
        assert moved["channel"] == "backup" and moved["fallback_of"] == failed["id"]

        pager.up = False
        await _send(hub, "send", "two")
        gone = await seen.wait(lambda d: d["status"] == "failed" and d["message"] == "two")
        assert gone["reason"] == "pager unavailable"
        await seen.wait(lambda d: d["status"] == "sent" and d["message"] == "two")
        assert [m.text for m in backup.sent] == ["one", "two"]
        status = {n["name"]: n for n in hub.notify.status()}
        assert status["pager"]["last_error"] == "pager unavailable"
        assert status["pager"]["fallback"] == "backup" and status["backup"]["fallback"] is None
    finally:
        await hub.async_stop()


async def test_restart_resumes_a_record_waiting_for_its_retry(tmp_path: Path,
                                                              db_url: str) -> None:
    slow = [{**PAGER, "retries": 1, "retry_backoff": 3600.0}]
    hub, pager, _ = await start(tmp_path, db_url, slow)
    try:
        seen = Records(hub)
        pager.failures.append(DeliveryError("no answer"))
        await _send(hub, text="later")
        waiting = await seen.wait(lambda d: d["status"] == "queued" and d["attempts"] == 1)
        assert hub.notify.queue_depth("pager") == 1
    finally:
        await hub.async_stop()
    hub, pager, _ = await start(tmp_path, db_url, slow)
    try:
        seen = Records(hub)
        row = await hub.notify.store.get_delivery(waiting["id"])
        if row["status"] != "sent":
            row = await seen.wait(lambda d: d["id"] == waiting["id"] and d["status"] == "sent")
        assert row["attempts"] == 2 and [m.text for m in pager.sent] == ["later"]
    finally:
        await hub.async_stop()


async def test_delivery_reports_per_part_early_and_failed(tmp_path: Path, db_url: str) -> None:
    hub, pager, _ = await start(tmp_path, db_url, TWO)
    manager = hub.notify
    try:
        seen = Records(hub)
        # three parts; the report of part 9 comes before the record is even sent
        pager.references.append("7,8,9")
        assert await manager.async_delivery_report("pager", "9", recipient=PHONE) is None
        await _send(hub, text="long")
        sent = await seen.wait(lambda d: d["status"] == "sent")
        await seen.wait(lambda d: d["reports"] == "9")
        await manager.async_delivery_report("pager", "7", recipient="13800000001")
        row = await manager.async_delivery_report("pager", "8", recipient=PHONE)
        assert row is not None and row["status"] == "delivered"
        stored = await manager.store.get_delivery(sent["id"])
        assert stored["status"] == "delivered" and sorted(stored["reports"].split(",")) == [
            "7", "8", "9"]

        # a report for another number with the same reference changes nothing
        pager.references.append("7")
        await _send(hub, text="again")
        again = await seen.wait(lambda d: d["status"] == "sent" and d["message"] == "again")
        assert await manager.async_delivery_report("pager", "7", recipient="+8613999999999",
                                                   delivered=False, reason="x") is None
        # temporary: noted; final: failed, and the next channel takes the message
        await manager.async_delivery_report("pager", "7", recipient=PHONE, delivered=False,
                                            final=False, reason="report: busy")
        await seen.wait(lambda d: d["id"] == again["id"] and d["reason"] == "report: busy")
        await manager.async_delivery_report("pager", "7", recipient=PHONE, delivered=False,
                                            reason="report: expired")
        failed = await seen.wait(lambda d: d["id"] == again["id"] and d["status"] == "failed")
        assert failed["reason"] == "report: expired"
        moved = await seen.wait(lambda d: d["channel"] == "backup" and d["status"] == "sent")
        assert moved["fallback_of"] == again["id"]
        counts = await manager.store.count_by_channel(None)
        assert counts["pager"] == {"delivered": 1, "failed": 1}
        assert counts["backup"] == {"sent": 1}
        assert await manager.store.count_by_channel(frozenset({"school-1"})) == {}
    finally:
        await hub.async_stop()


async def test_notify_service_to_the_subscribers_of_an_alarm(tmp_path: Path,
                                                             db_url: str) -> None:
    from hub.core.services import ServiceValidationError

    from .helpers import alarm, drained, settled, user

    hub, pager, _ = await start(tmp_path, db_url)
    try:
        await user(hub, "duty", "user", ["school-1-a"], PHONE)
        await user(hub, "nurse", "user", ["hospital-1"], "+8613800000002")
        alarm_id = await alarm(hub)
        await settled(hub)
        await drained(hub)
        answer = await hub.services.async_call(
            "notify", "send", {"alarm_id": str(alarm_id), "message": "未确认报警 10 分钟"},
            return_response=True)
        (row,) = answer["deliveries"]
        assert (row["recipient"], row["alarm_id"], row["project"], row["user_name"]) == (
            PHONE, alarm_id, "school-1-a", "duty")
        (sent,) = (await pager.wait(2))[1:]
        assert sent.text == "未确认报警 10 分钟"
        with pytest.raises(ServiceValidationError, match="give `target`"):
            await hub.services.async_call("notify", "send", {"message": "x"})
        with pytest.raises(ServiceValidationError, match="No alarm 999"):
            await hub.services.async_call("notify", "send", {"alarm_id": 999, "message": "x"})
    finally:
        await hub.async_stop()
