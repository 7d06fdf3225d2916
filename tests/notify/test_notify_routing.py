"""Subscriptions, rate limit, quiet hours and escalation in a real Hub, on SQLite and on
PostgreSQL (`db_url`, tests/notify/conftest.py).

The channel is a small in-test notifier (a real `Notifier` that records what it is asked to
send); the manager's clock is a fake one that the tests move, and `run_due()` runs what is
due, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from .helpers import NOON, alarm, drained, settled, start, user


async def test_subscription_stays_inside_scope(tmp_path: Path, db_url: str) -> None:
    hub, pager, _ = await start(tmp_path, db_url)
    try:
        await user(hub, "duty", "user", ["school-1-a"], "+8613800000001")
        # subscribed to a project outside the user's scope: never delivered
        await user(hub, "nurse", "user", ["hospital-1"], "+8613800000002")
        await user(hub, "en", "user", ["school-1"], "+8613800000003", language="en",
                   kinds=["alarm"], min_severity="major")
        await user(hub, "picky", "user", ["school-1"], "+8613800000004", min_severity="critical")
        await alarm(hub)
        raised = hub.alarms.get_active("arcm-1", "residual_current_high").started_at
        await settled(hub)
        sent = await pager.wait(2)
        assert sorted(m.recipient for m in sent) == ["+8613800000001", "+8613800000003"]
        english = next(m for m in sent if m.recipient.endswith("3"))
        assert english.text.startswith("[Voltwatch] Alarm: 中心 第一中学 教学楼A 配电室 配电箱1 "
                                       "Residual current high 550mA")
        chinese = next(m for m in sent if m.recipient.endswith("1"))
        # the time is the alarm's own, in the hub's zone (Asia/Shanghai): its date, not UTC's
        day = datetime.fromtimestamp(raised, ZoneInfo("Asia/Shanghai")).strftime("%m-%d")
        assert chinese.text.startswith(
            f"【Voltwatch】报警：中心 第一中学 教学楼A 配电室 配电箱1 剩余电流过大 550mA {day} ")
    finally:
        await hub.async_stop()


async def test_alarm_storm_becomes_one_summary(tmp_path: Path, db_url: str) -> None:
    hub, pager, clock = await start(tmp_path, db_url, rate_limit={"max": 2, "window": 60})
    try:
        await user(hub, "duty", "user", ["school-1-a"], "+8613800000001")
        types = ["residual_current_high", "over_voltage", "under_voltage", "overload",
                 "phase_loss", "temperature_high_1", "temperature_high_2"]
        for type_ in types:
            await alarm(hub, type_=type_)
        await settled(hub)
        await pager.wait(2)
        held = await hub.notify.store.held("+8613800000001")
        assert len(held) == len(types) - 2
        assert {row["reason"] for row in held} == {"rate_limit"}
        clock.now += 61
        await hub.notify.run_due()
        sent = await pager.wait(3)
        assert len(sent) == 3
        assert sent[2].text.startswith("【Voltwatch】限流期间共5条通知：")
        assert "另有2条" in sent[2].text
        assert await hub.notify.store.held("+8613800000001") == []
    finally:
        await hub.async_stop()


async def test_quiet_hours_hold_all_but_critical(tmp_path: Path, db_url: str) -> None:
    hub, pager, clock = await start(tmp_path, db_url)
    try:
        await user(hub, "duty", "user", ["school-1-a"], "+8613800000001",
                   quiet_start="09:00", quiet_end="11:00")
        await alarm(hub)  # major: held
        await alarm(hub, type_="arc_fault")  # critical: goes out now
        await settled(hub)
        (first,) = await pager.wait(1)
        assert "故障电弧" in first.text
        clock.now = NOON + 30 * 60
        await hub.notify.run_due()
        assert len(pager.sent) == 1  # still quiet
        clock.now = NOON + 3600  # 11:00 local
        await hub.notify.run_due()
        sent = await pager.wait(2)
        assert sent[1].text.startswith("【Voltwatch】免打扰期间共1条通知：") and "剩余电流过大" in sent[1].text
    finally:
        await hub.async_stop()


async def test_escalation_climbs_the_tree_and_stops_on_ack(tmp_path: Path, db_url: str) -> None:
    hub, pager, clock = await start(tmp_path, db_url, escalation={
        "enabled": True, "delays": [300, 600], "roles": ["project_admin", "platform_admin"]})
    try:
        await user(hub, "duty", "user", ["school-1-a"], "+8613800000001")
        await user(hub, "principal", "project_admin", ["school-1"], "+8613800000002", False)
        await user(hub, "doctor", "project_admin", ["hospital-1"], "+8613800000009", False)
        await user(hub, "centre", "platform_admin", ["org-1"], "+8613800000003", False)
        alarm_id = await alarm(hub)
        await settled(hub)
        await pager.wait(1)
        clock.now += 301
        await hub.notify.run_due()
        sent = await pager.wait(2)
        assert sent[1].recipient == "+8613800000002"
        assert sent[1].text.startswith("【Voltwatch】升级（5分钟未确认）：")
        assert len(sent) == 2  # the hospital's admin does not cover school-1-a
        await drained(hub)
        # restart in the middle of the chain: it goes on where it was
        await hub.async_stop()
        from hub.hub import Hub

        hub = Hub(config_dir=tmp_path, config=hub.config, plugin_manager=hub.plugins)
        await hub.async_start()
        hub.notify.clock = clock
        pager = hub.notify.notifiers["pager"]
        clock.now += 601
        await hub.notify.run_due()
        (third,) = await pager.wait(1)
        assert third.recipient == "+8613800000003"
        assert await hub.notify.store.escalations() == []

        second = await alarm(hub, type_="over_voltage")
        await settled(hub)
        await hub.alarms.async_acknowledge([second])
        await hub.bus.async_drain()
        pending = [t for t in asyncio.all_tasks() if "escalation stop" in t.get_name()]
        await asyncio.gather(*pending)
        before = len(pager.sent)
        clock.now += 3600
        await hub.notify.run_due()
        assert len(pager.sent) == before
        assert alarm_id != second and await hub.notify.store.escalations() == []
    finally:
        await hub.async_stop()
