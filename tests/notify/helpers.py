"""Shared pieces of the notification tests: a real Hub on the given database, a small
in-test channel (`Pager`, a real `Notifier` that records what it is asked to send and fails
on demand), a fake clock the tests move, and waits on bus events (never sleeps)."""

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
from hub.core.notify import DeliveryError, Notifier, OutgoingMessage, SendResult
from hub.core.plugins import PluginManager
from hub.testing import EventCollector

TIMEOUT = 10.0


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Pager(Notifier):
    """Records each message; `failures` (DeliveryErrors) are raised by the next sends first;
    `up` False makes it unavailable; `references` overrides the reference it answers."""

    platform = "pager"
    sent: list[OutgoingMessage]

    async def async_start(self) -> None:
        self.sent = []
        self.failures: list[DeliveryError] = []
        self.references: list[str] = []
        self.up = True
        self.changed = asyncio.Event()

    @property
    def available(self) -> bool:
        return self.up

    async def async_send(self, message: OutgoingMessage) -> SendResult:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        self.changed.set()
        reference = self.references.pop(0) if self.references else str(len(self.sent))
        return SendResult(reference=reference)

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


PAGER = {"platform": "pager", "name": "pager"}


async def start(tmp_path: Path, db_url: str, notify: list[dict[str, Any]] | None = None,
                http: dict[str, Any] | None = None, **notifications: Any
                ) -> tuple[Any, Pager, Clock]:
    """A started hub whose channels are Pagers (`notify`, default one called `pager`)."""
    from hub.hub import Hub

    plugins = PluginManager()
    plugins.register(TestPlugin(), "pager_plugin", version="0")
    config = {"hub": {"name": "t", "language": "zh-CN", "time_zone": "Asia/Shanghai"},
              "http": http or {"enabled": False}, "database": {"url": db_url},
              "projects": PROJECTS, "devices": DEVICES,
              "notify": notify or [PAGER],
              "notifications": {"escalation": {"enabled": False}, **notifications}}
    hub = Hub(config_dir=tmp_path, config=config, plugin_manager=plugins)
    await hub.async_start()
    clock = Clock(NOON)
    hub.notify.clock = clock
    first = (notify or [PAGER])[0]["name"]
    return hub, hub.notify.notifiers[first], clock


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



class Records(EventCollector):
    """`notification_delivery` events (or another type's); `wait` for one that matches."""

    def __init__(self, hub: Any, event_type: str = "notification_delivery") -> None:
        super().__init__(hub, event_type, TIMEOUT)
