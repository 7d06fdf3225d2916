"""Shared pieces of the notify_sms tests: a real Hub wired to a simulated modem on a pty and,
when asked, an HTTP gateway (a real aiohttp server whose answers a test scripts)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import voltwatch_notify_sms
import voluptuous as vol
from aiohttp import web
from voltwatch_notify_sms.simulator import ModemSimulator

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.hookspecs import hookimpl
from hub.core.plugins import PluginManager
from hub.testing import EventCollector

TIMEOUT = 10.0  # bounds a failure only
PHONE = "+8613800138000"
PROJECTS = [{"id": "school-1", "name": "第一中学",
             "children": [{"id": "school-1-a", "name": "教学楼A"}]}]
DEVICES = [{"id": "arcm-1", "name": "配电箱1", "platform": "meter", "project": "school-1-a",
            "location": "配电室"}]


class MeterPlugin:
    @hookimpl
    def voltwatch_device_schemas(self) -> dict[str, Any]:
        return {"meter": vol.Schema({}, extra=vol.ALLOW_EXTRA)}


def plugins() -> PluginManager:
    manager = PluginManager()
    manager.register(MeterPlugin(), "meter", version="0")
    manager.register(voltwatch_notify_sms, "notify_sms", version="0.1.0")
    return manager


def config(notify: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"hub": {"name": "SMS test", "language": "zh-CN", "time_zone": "Asia/Shanghai"},
            "http": {"enabled": False}, "database": {"url": "sqlite+aiosqlite:///sms.db"},
            "projects": PROJECTS, "devices": DEVICES, "notify": notify,
            "notifications": {"escalation": {"enabled": False}}, **extra}


def sms_entry(port: str, **extra: Any) -> dict[str, Any]:
    return {"platform": "sms", "name": "sms", "modem": {"port": port, "baudrate": 115200},
            "retries": 1, "retry_backoff": 0.01, "command_timeout": 1.0, "send_timeout": 1.0,
            "health_interval": 30.0, **extra}


class Deliveries(EventCollector):
    """Collects `notification_delivery` events; waits for one matching a predicate."""

    def __init__(self, hub: Any) -> None:
        super().__init__(hub, "notification_delivery", TIMEOUT)


async def start_hub(tmp_path: Path, notify: list[dict[str, Any]], **extra: Any) -> Any:
    from hub.hub import Hub

    hub = Hub(config_dir=tmp_path, config=config(notify, **extra), plugin_manager=plugins())
    await hub.async_start()
    return hub


async def wait_modem(hub: Any, name: str = "sms") -> None:
    await asyncio.wait_for(hub.notify.notifiers[name].modem.connected_event.wait(), TIMEOUT)


async def hub_with_modem(tmp_path: Path, gateway: Gateway | None = None,
                         **sms: Any) -> tuple[Any, ModemSimulator]:
    """A hub whose `sms` notifier has opened a simulated modem (and `gateway` after it)."""
    sim = ModemSimulator()
    notify = [sms_entry(sim.open(), **sms)]
    if gateway is not None:
        notify.append(gateway.entry())
    hub = await start_hub(tmp_path, notify)
    await wait_modem(hub)
    return hub, sim


def events(hub: Any, event_type: str) -> EventCollector:
    """A collector like `Deliveries`, for another event type."""
    return EventCollector(hub, event_type, TIMEOUT)


async def subscriber(hub: Any, name: str = "duty", phone: str = PHONE, role: str = "user",
                     projects: tuple[str, ...] = ("school-1-a",), language: str | None = None,
                     **sub: Any) -> Any:
    user = await hub.auth.users.create(name, role, None, projects=list(projects), phone=phone,
                                       language=language)
    row = {"user_id": user.id, "projects": [], "kinds": [], "min_severity": "info",
           "channels": [], "quiet_start": None, "quiet_end": None, "language": language,
           "enabled": True, "created_at": 0.0, "created_by": "test", **sub}
    await hub.notify.store.insert_subscription(row)
    return user


async def raise_alarm(hub: Any, device: str = "arcm-1", type_: str = "residual_current_high",
                      value: float = 550) -> int:
    condition = Condition.create(device, type_, True, value=value, unit="mA")
    hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
    await hub.alarms.async_flush()
    record = hub.alarms.get_active(device, type_)
    assert record is not None and record.id is not None
    return int(record.id)


class Gateway:
    """A real HTTP SMS gateway on a free port; `answers` scripts its next statuses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._changed = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/sms", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/sms"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append({"json": await request.json(), "headers": dict(request.headers)})
        self._changed.set()
        status, body = self.answers.pop(0) if self.answers else (200, {"Code": "OK",
                                                                      "BizId": "biz-1"})
        return web.json_response(body, status=status)

    async def wait(self, count: int) -> list[dict[str, Any]]:
        async def until() -> list[dict[str, Any]]:
            while len(self.requests) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.requests

        return await asyncio.wait_for(until(), TIMEOUT)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def entry(self, **extra: Any) -> dict[str, Any]:
        return {"platform": "sms_http", "name": "sms_gateway", "url": self.url,
                "method": "POST", "headers": {"X-Key": "k-{{ delivery_id }}"},
                "body": {"PhoneNumbers": "{{ recipient }}", "Text": "{{ message }}"},
                "success": {"status": [200], "json": {"Code": "OK"}}, "reference": "BizId",
                "retries": 1, "retry_backoff": 0.01, "timeout": 5.0, **extra}
