"""Subscriptions, rate limit, quiet hours and escalation in a real Hub.

The channel is a small in-test notifier (a real `Notifier` that records what it is asked to
send); the manager's clock is a fake one that the tests move, and `run_due()` runs what is
due, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import voluptuous as vol

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.events import callback
from hub.core.hookspecs import hookimpl
from hub.core.notify import Notifier, OutgoingMessage, SendResult
from hub.core.plugins import PluginManager

TIMEOUT = 10.0


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Pager(Notifier):
    platform = "pager"
    sent: list[OutgoingMessage]

    async def async_start(self) -> None:
        self.sent = []
        self.changed = asyncio.Event()

    async def async_send(self, message: OutgoingMessage) -> SendResult:
        self.sent.append(message)
        self.changed.set()
        return SendResult(reference=str(len(self.sent)))

    async def wait(self, count: int) -> list[OutgoingMessage]:
        async def until() -> list[OutgoingMessage]:
            while len(self.sent) < count:
                self.changed.clear()
                await self.changed.wait()
            return self.sent

        return await asyncio.wait_for(until(), TIMEOUT)


class TestPlugin:
    @hookimpl
    def voltwatch_device_schemas(self) -> dict[str, Any]:
        return {"meter": vol.Schema({}, extra=vol.ALLOW_EXTRA)}

    @hookimpl
    def voltwatch_notifiers(self) -> dict[str, Any]:
        return {"pager": ({}, Pager)}


PROJECTS = [{"id": "org-1", "name": "中心", "children": [
    {"id": "school-1", "name": "第一中学", "children": [{"id": "school-1-a", "name": "教学楼A"}]},
    {"id": "hospital-1", "name": "医院"}]}]
DEVICES = [
    {"id": "arcm-1", "name": "配电箱1", "platform": "meter", "project": "school-1-a",
     "location": "配电室"},
    {"id": "arcm-3", "name": "配电箱3", "platform": "meter", "project": "hospital-1"},
]
# 2025-11-30 10:00 in Shanghai
NOON = datetime(2025, 11, 30, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


async def start(tmp_path: Path, **notifications: Any) -> tuple[Any, Pager, Clock]:
    from hub.hub import Hub

    plugins = PluginManager()
    plugins.register(TestPlugin(), "pager_plugin", version="0")
    config = {"hub": {"name": "t", "language": "zh-CN", "time_zone": "Asia/Shanghai"},
              "http": {"enabled": False}, "database": {"url": "sqlite+aiosqlite:///n.db"},
              "projects": PROJECTS, "devices": DEVICES,
              "notify": [{"platform": "pager", "name": "pager"}],
              "notifications": {"escalation": {"enabled": False}, **notifications}}
    hub = Hub(config_dir=tmp_path, config=config, plugin_manager=plugins)
    await hub.async_start()
    clock = Clock(NOON)
    hub.notify.clock = clock
    return hub, hub.notify.notifiers["pager"], clock


async def user(hub: Any, name: str, role: str, projects: list[str], phone: str,
               subscribe: bool = True, **sub: Any) -> Any:
    created = await hub.auth.users.create(name, role, None, projects=projects, phone=phone)
    if subscribe:
        row = {"user_id": created.id, "projects": [], "kinds": [], "min_severity": "info",
               "channels": [], "quiet_start": None, "quiet_end": None, "language": None,
               "enabled": True, "created_at": 0.0, "created_by": "t", **sub}
        await hub.notify.store.insert_subscription(row)
    return created


async def alarm(hub: Any, device: str = "arcm-1", type_: str = "residual_current_high") -> int:
    hub.bus.async_fire(EVENT_DEVICE_CONDITION,
                       Condition.create(device, type_, True, value=550, unit="mA").as_dict())
    await hub.alarms.async_flush()
    return int(hub.alarms.get_active(device, type_).id)


async def settled(hub: Any) -> None:
    """Every alarm_raised listener task has finished routing."""
    await hub.bus.async_drain()
    pending = [t for t in asyncio.all_tasks() if t.get_name().startswith("notify alarm")]
    if pending:
        await asyncio.wait_for(asyncio.gather(*pending), TIMEOUT)


async def drained(hub: Any) -> None:
    """Every queued delivery has its final record (sent / failed) written."""
    changed = asyncio.Event()

    @callback  # inline in the loop: an asyncio.Event must not be set from an executor thread
    def on_delivery(_event: Any) -> None:
        changed.set()

    unsub = hub.bus.listen("notification_delivery", on_delivery)

    async def until() -> None:
        while True:
            changed.clear()  # before the check, so a change during the query is not missed
            if not await hub.notify.store.open_deliveries():
                return
            await changed.wait()

    try:
        await asyncio.wait_for(until(), TIMEOUT)
    finally:
        unsub()


async def test_subscription_stays_inside_scope(tmp_path: Path) -> None:
    hub, pager, _ = await start(tmp_path)
    try:
        await user(hub, "duty", "user", ["school-1-a"], "+8613800000001")
        # subscribed to a project outside the user's scope: never delivered
        await user(hub, "nurse", "user", ["hospital-1"], "+8613800000002")
        await user(hub, "en", "user", ["school-1"], "+8613800000003", language="en",
                   kinds=["alarm"], min_severity="major")
        await user(hub, "picky", "user", ["school-1"], "+8613800000004", min_severity="critical")
        await alarm(hub)
        await settled(hub)
        sent = await pager.wait(2)
        assert sorted(m.recipient for m in sent) == ["+8613800000001", "+8613800000003"]
        english = next(m for m in sent if m.recipient.endswith("3"))
        assert english.text.startswith("[Voltwatch] Alarm: 中心 第一中学 教学楼A 配电室 配电箱1 "
                                       "Residual current high 550mA")
        chinese = next(m for m in sent if m.recipient.endswith("1"))
        assert chinese.text.startswith("【Voltwatch】报警：中心 第一中学 教学楼A 配电室 配电箱1 剩余电流过大 550mA 11-30 ")
    finally:
        await hub.async_stop()


async def test_alarm_storm_becomes_one_summary(tmp_path: Path) -> None:
    hub, pager, clock = await start(tmp_path, rate_limit={"max": 2, "window": 60})
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


async def test_quiet_hours_hold_all_but_critical(tmp_path: Path) -> None:
    hub, pager, clock = await start(tmp_path)
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


async def test_escalation_climbs_the_tree_and_stops_on_ack(tmp_path: Path) -> None:
    hub, pager, clock = await start(tmp_path, escalation={
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
