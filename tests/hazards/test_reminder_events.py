"""Reminders: fired once per threshold crossing, not again after a restart, again after a new
crossing, repeated only when configured, and by the hub's own periodic task."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    FakeClock,
    Recorder,
    hazard_config,
    install_clock,
    patch_clocks,
    raise_alarm,
    start_hub,
)


async def test_unacknowledged_alarm_reminds_once_even_across_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(time.time())
    patch_clocks(monkeypatch, clock)
    hub = await start_hub(tmp_path, hazard_config())
    try:
        recorder = Recorder(hub, "alarm_raised", "reminder")
        alarm = await raise_alarm(hub, recorder)
        other = await raise_alarm(hub, recorder, "arcm-2", "communication_lost")
        clock.advance(9 * 60)
        assert await hub.reminders.async_check() == []
        clock.advance(2 * 60)  # 11 min: past the default 10 min
        fired = await hub.reminders.async_check()
        assert sorted((f["project"], tuple(f["ids"])) for f in fired) == [
            ("school-1", (other["id"],)), ("school-1-a", (alarm["id"],))]
        first = next(f for f in fired if f["project"] == "school-1-a")
        assert first["reason"] == "alarm_unacknowledged" and first["repeat"] is False
        assert first["message"] == "1 条报警超过 10 分钟未确认"
        assert first["message_en"] == "1 alarm unacknowledged for over 10 min"
        assert first["items"][0]["device_id"] == "arcm-1"
        assert first["items"][0]["message"] == "剩余电流过大 550mA"
        assert len(recorder.of("reminder")) == 2  # the same data went out on the bus
        clock.advance(60)
        assert await hub.reminders.async_check() == []  # once per crossing
    finally:
        await hub.async_stop()

    clock.advance(60)
    hub = await start_hub(tmp_path, hazard_config())  # its first check runs at start
    try:
        assert await hub.reminders.async_check() == []  # a restart does not repeat it
        await hub.alarms.async_acknowledge([alarm["id"]])
        assert await hub.reminders.async_check() == []
        sent = await hub.reminders.store.sent("alarm_unacknowledged")
        assert [row["object_id"] for row in sent] == [other["id"]]  # released when acked
    finally:
        await hub.async_stop()


async def test_overdue_work_order_reminds_per_crossing(hub: Any, clock: FakeClock,
                                                       recorder: Recorder) -> None:
    order, _ = await hub.workorders.async_create(device_id="arcm-3", title="线缆老化",
                                                 assignee="李师傅", due_in=3600)
    clock.advance(1800)
    assert await hub.reminders.async_check() == []
    clock.advance(1801)
    fired = await hub.reminders.async_check()
    assert [(f["reason"], f["project"], f["ids"]) for f in fired] == [
        ("workorder_overdue", "hospital-1", [order["id"]])]
    assert fired[0]["items"][0]["assignee"] == "李师傅"
    assert fired[0]["message"] == "1 个工单已超期"
    assert await hub.reminders.async_check() == []

    # a new due time is a new threshold: missing it again reminds again
    await hub.workorders.async_update(order["id"], due_at=clock.now + 600)
    assert await hub.reminders.async_check() == []
    clock.advance(601)
    again = await hub.reminders.async_check()
    assert [f["ids"] for f in again] == [[order["id"]]] and again[0]["repeat"] is False

    await hub.workorders.async_update(order["id"], status="accepted")
    await hub.workorders.async_update(order["id"], status="repaired")
    clock.advance(3600)
    assert await hub.reminders.async_check() == []
    assert await hub.reminders.store.sent("workorder_overdue") == []


async def test_repeat_interval(tmp_path: Path) -> None:
    hub = await start_hub(tmp_path, hazard_config(
        reminders={"interval": 3600, "alarm_unacknowledged": "5m", "repeat": "30m"}))
    try:
        clock = FakeClock(hub.workorders.clock())
        install_clock(hub, clock)
        recorder = Recorder(hub, "alarm_raised")
        alarm = await raise_alarm(hub, recorder)
        clock.advance(6 * 60)
        first = await hub.reminders.async_check()
        assert [(f["ids"], f["repeat"]) for f in first] == [([alarm["id"]], False)]
        assert first[0]["message"] == "1 条报警超过 5 分钟未确认"
        clock.advance(10 * 60)
        assert await hub.reminders.async_check() == []
        clock.advance(21 * 60)
        repeated = await hub.reminders.async_check()
        assert [(f["ids"], f["repeat"]) for f in repeated] == [([alarm["id"]], True)]
        sent = await hub.reminders.store.sent("alarm_unacknowledged")
        assert sent[0]["count"] == 2
    finally:
        await hub.async_stop()


async def test_the_hub_checks_by_itself(tmp_path: Path) -> None:
    """With a tiny interval and no delay the hub's own task fires the reminder."""
    hub = await start_hub(tmp_path, hazard_config(
        reminders={"interval": 0.05, "alarm_unacknowledged": 0}))
    try:
        recorder = Recorder(hub, "alarm_raised", "reminder")
        alarm = await raise_alarm(hub, recorder)
        reminders = await recorder.wait_for(
            "reminder", where=lambda d: alarm["id"] in d["ids"])
        assert reminders[0]["reason"] == "alarm_unacknowledged"
    finally:
        await hub.async_stop()
    assert len([r for r in recorder.of("reminder") if alarm["id"] in r["ids"]]) == 1
