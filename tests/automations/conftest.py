"""Real Hubs started from a config directory (configuration.yaml + automations.yaml), a
plugin with a recording service, and waits on bus events bounded by a timeout (failure bound
only: every wait returns as soon as its event arrives)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.core.automations import engine as engine_module
from hub.core.events import Event, callback
from hub.core.hookspecs import hookimpl
from hub.core.plugins import PluginManager
from tests.alarms.conftest import MeterPlugin

TIMEOUT = 10.0
#: the test hubs' time zone (CONFIG): 2024-06-03 is a Monday there
ZONE = ZoneInfo("Asia/Shanghai")

CONFIG = """\
hub: {name: Automation test, time_zone: Asia/Shanghai, language: en}
http: {port: 0}
database: {url: "%(db)s"}
projects:
  - {id: school-1, name: School}
  - {id: hospital-1, name: Hospital}
devices:
  - {id: arcm-1, platform: meter, project: school-1}
  - {id: arcm-2, platform: meter, project: hospital-1}
automations: !include automations.yaml
"""


class RecordPlugin:
    """Registers `test.record` (remembers every call with its Context) and `test.fail`."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    @hookimpl
    def voltwatch_setup(self, hub: Any, config: dict[str, Any]) -> None:
        def record(call: Any) -> dict[str, Any]:
            self.calls.append(call)
            return {"ok": True, "n": len(self.calls)}

        def fail(call: Any) -> None:
            raise RuntimeError("the device did not answer")

        record._voltwatch_callback = True  # type: ignore[attr-defined]
        fail._voltwatch_callback = True  # type: ignore[attr-defined]
        hub.services.register("test", "record", record, supports_response=True)
        hub.services.register("test", "fail", fail)


def write_config(path: Path, automations: str,
                 db_url: str = "sqlite+aiosqlite:///automations.db") -> None:
    """`db_url`: the `hub_db_url` fixture where a test should also run on PostgreSQL."""
    (path / "configuration.yaml").write_text(CONFIG % {"db": db_url}, encoding="utf-8")
    (path / "automations.yaml").write_text(automations, encoding="utf-8")


async def start(path: Path, record: RecordPlugin | None = None) -> Any:
    from hub.hub import Hub

    plugins = PluginManager()
    plugins.register(MeterPlugin(), "meter", version="0.0.1")
    plugins.register(record or RecordPlugin(), "record", version="0.0.1")
    hub = Hub(config_dir=path, plugin_manager=plugins)
    await hub.async_start()
    return hub


class Waiter:
    """Collects events of some types; `wait_for` returns once `count` match (or fails)."""

    def __init__(self, hub: Any, *types: str) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._unsubs = [hub.bus.listen(t, self._on) for t in types]

    @callback
    def _on(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.event_type == event_type]

    async def wait_for(self, event_type: str, count: int = 1,
                       where: Callable[[Event], bool] | None = None) -> list[Event]:
        async def until() -> list[Event]:
            while True:
                found = [e for e in self.of(event_type) if where is None or where(e)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(until(), TIMEOUT)


@pytest.fixture
def record() -> RecordPlugin:
    return RecordPlugin()


@pytest.fixture
async def hubs() -> AsyncIterator[list[Any]]:
    started: list[Any] = []
    yield started
    for hub in started:
        await hub.async_stop()


# -- an injected clock (the engine takes one; the hub builds the engine) ----------------------
def local(day: int, hour: int, minute: int = 0, second: float = 0.0) -> float:
    """Unix time of 2024-06-<day> hh:mm:ss in the hub's zone (3 = Monday ... 9 = Sunday)."""
    whole = int(second)
    return datetime(2024, 6, day, hour, minute, whole, tzinfo=ZONE).timestamp() + (
        second - whole)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(local(3, 3, 0))  # Monday 03:00, far from every slot the tests use
    original = engine_module.AutomationEngine

    class ClockedEngine(original):  # type: ignore[misc, valid-type]
        def __init__(self, hub: Any, store: Any, **kwargs: Any) -> None:
            super().__init__(hub, store, clock=fake, **kwargs)

    monkeypatch.setattr(engine_module, "AutomationEngine", ClockedEngine)
    return fake
