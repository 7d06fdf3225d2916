"""Shared pieces of the smoke tests: a private Mosquitto, a started Hub, simulated detectors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import voltwatch_mqtt
from voltwatch_mqtt.testing import MosquittoBroker
from voltwatch_smoke.simulator import SimulatedSmokeDetector, SmokeSimOptions

from hub.core.events import Event, callback
from hub.core.plugins import PluginManager
from hub.hub import Hub

WAIT = 10.0  # a failure bound for awaited events, never a synchronisation delay


def plugins(*extra: str) -> PluginManager:
    manager = PluginManager()
    manager.load_entrypoints(only=["mqtt", "smoke", *extra])
    return manager


def hub_config(tmp_path: Path, broker: MosquittoBroker, devices: list[dict[str, Any]],
               **extra: Any) -> dict[str, Any]:
    return {
        "hub": {"name": "smoke test", "language": "zh-CN"},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        "http": {"enabled": False},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min": "50ms",
                 "command_timeout": "3s"},
        "projects": [{"id": "school-1", "name": "第一中学",
                      "children": [{"id": "school-1-b", "name": "食堂"}]}],
        "devices": devices,
        **extra,
    }


def smoke_device(device_id: str = "smoke-1", **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "name": "厨房烟感", "platform": "smoke", "project": "school-1-b",
            "area": "一层", "location": "厨房", "link": {"transport": "mqtt"}, **extra}


class EventWaiter:
    """Collects bus events of one type from the moment it is made; `wait` returns a match."""

    def __init__(self, hub: Hub, event_type: str) -> None:
        self.seen: list[Event] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Any]]] = []
        hub.bus.listen(event_type, self._on_event)

    @callback
    def _on_event(self, event: Event) -> None:
        self.seen.append(event)
        for predicate, future in self._waiters:
            if not future.done() and predicate(event.data):
                future.set_result(event.data)

    async def wait(self, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = WAIT) -> dict[str, Any]:
        for event in self.seen:
            if predicate(event.data):
                return event.data
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(entry)


async def wait_state(hub: Hub, entity_id: str, predicate: Callable[[Any], bool],
                     timeout: float = WAIT) -> Any:
    state = hub.states.get(entity_id)
    if state is not None and predicate(state):
        return state
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @callback
    def changed(event: Event) -> None:
        new = event.data.get("new_state")
        if event.data.get("entity_id") == entity_id and new is not None and predicate(new) \
                and not future.done():
            future.set_result(new)

    unsub = hub.bus.listen("state_changed", changed)
    try:
        return await asyncio.wait_for(future, timeout)
    finally:
        unsub()


async def start_detector(broker: MosquittoBroker, device_id: str = "smoke-1",
                         **options: Any) -> tuple[SimulatedSmokeDetector, asyncio.Task[Any]]:
    opts = SmokeSimOptions(host=broker.host, port=broker.port, interval=3600,
                           publish_on_connect=False, reconnect_interval=0.1, **options)
    detector = SimulatedSmokeDetector(device_id, opts)
    task = asyncio.get_running_loop().create_task(detector.run())
    await asyncio.wait_for(detector.connected.wait(), WAIT)
    return detector, task


async def stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def ready(hub: Hub) -> None:
    await voltwatch_mqtt.get_connection(hub).wait_ready()
