"""Fixtures for the alarm tests: a real Hub (SQLite file or a fresh PostgreSQL database), real
sockets, and helpers that wait on bus events with a timeout that only bounds a failure.

The hub runs with one in-test plugin that declares a `meter` device platform and the link
transports the configured devices use, so installed plugins (arcm, gsm, ...) stay out: the
tests drive the engine through the same `device_condition` events and state writes those
plugins produce.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol
from aiohttp import ClientSession

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.events import Event, callback
from hub.core.hookspecs import hookimpl
from hub.core.plugins import PluginManager
from hub.http import tokens

TIMEOUT = 10.0  # a failure bound only: every wait returns as soon as its event arrives


class MeterPlugin:
    """A device platform and link transports, as a real device plugin would declare them."""

    @hookimpl
    def voltwatch_device_schemas(self) -> dict[str, Any]:
        return {"meter": vol.Schema({}, extra=vol.ALLOW_EXTRA)}

    @hookimpl
    def voltwatch_link_schemas(self) -> dict[str, Any]:
        loose = vol.Schema({}, extra=vol.ALLOW_EXTRA)
        return {"modbus_tcp": loose, "gsm": loose, "mqtt": loose}


def make_plugins() -> PluginManager:
    plugins = PluginManager()
    plugins.register(MeterPlugin(), "meter", version="0.0.1")
    return plugins


DEVICES = [
    {"id": "arcm-1", "name": "配电箱1", "platform": "meter", "project": "school-1-a",
     "area": "一层", "location": "配电室",
     "link": {"transport": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "unit": 1}},
    {"id": "arcm-2", "name": "配电箱2", "platform": "meter", "project": "school-1",
     "area": "二层", "location": "走廊",
     "link": {"transport": "gsm", "imei": "860000000000001", "unit": 2}},
    {"id": "arcm-3", "platform": "meter", "project": "hospital-1"},
]
PROJECTS = [
    {"id": "school-1", "name": "第一中学", "children": [{"id": "school-1-a", "name": "教学楼A"}]},
    {"id": "hospital-1", "name": "医院"},
]


def hub_config(db_url: str = "sqlite+aiosqlite:///alarms.db", **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "hub": {"name": "Alarm test", "language": "zh-CN", "time_zone": "Asia/Shanghai"},
        "http": {"port": 0},
        "database": {"url": db_url},
        "projects": PROJECTS,
        "devices": DEVICES,
    }
    config.update(extra)
    return config


async def start_hub(tmp_path: Path, config: dict[str, Any]) -> Any:
    from hub.hub import Hub

    hub = Hub(config_dir=tmp_path, config=config, plugin_manager=make_plugins())
    await hub.async_start()
    return hub


class Recorder:
    """Collects bus events of some types and lets a test await the n-th one."""

    def __init__(self, hub: Any, *types: str) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._unsubs = [hub.bus.listen(t, self._on) for t in types]

    @callback
    def _on(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.event_type == event_type]

    async def wait_for(self, event_type: str, count: int = 1,
                       where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        async def until() -> list[dict[str, Any]]:
            while True:
                found = [d for d in self.of(event_type) if where is None or where(d)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(until(), TIMEOUT)

    def close(self) -> None:
        for unsub in self._unsubs:
            unsub()


def fire(hub: Any, device_id: str, type_: str, active: bool = True, **kwargs: Any) -> None:
    condition = Condition.create(device_id, type_, active, **kwargs)
    hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())


async def settle(hub: Any) -> None:
    """Every decision taken so far is written and its events fired."""
    await hub.alarms.async_flush()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite+aiosqlite:///alarms.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def hub(tmp_path: Path, hub_db_url: str) -> AsyncIterator[Any]:
    instance = await start_hub(tmp_path, hub_config(hub_db_url))
    try:
        yield instance
    finally:
        await instance.async_stop()


@pytest.fixture
def recorder(hub: Any) -> Iterator[Recorder]:
    rec = Recorder(hub, "alarm_raised", "alarm_updated", "alarm_cleared",
                   "alarm_acknowledged", "alarm_handled")
    yield rec
    rec.close()


@pytest.fixture
async def token(hub: Any) -> str:
    return await tokens.create_token(hub.storage, "值班员")


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(hub: Any) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=hub.http.url) as session:
        yield session


AsyncFn = Callable[..., Awaitable[Any]]
