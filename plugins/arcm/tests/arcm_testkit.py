"""Shared helpers for the arcm plugin tests: a small stand-in hub made of the real core parts.

The stand-in carries the real EventBus, StateMachine, ServiceRegistry, registries and
LinkRegistry (with the modbus plugin's factories), so the plugin runs exactly as in a Hub;
only storage, config loading and HTTP are absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import voltwatch_modbus

from hub.core.conditions import EVENT_DEVICE_CONDITION
from hub.core.events import Event, EventBus, callback
from hub.core.links import LinkRegistry
from hub.core.registries import DeviceRegistry, EntityRegistry
from hub.core.services import ServiceRegistry
from hub.core.states import StateMachine

WAIT = 10.0  # failure bound for awaited conditions, never a synchronisation delay


class StandInHub:
    def __init__(self, config_dir: Path, language: str = "zh-CN") -> None:
        self.config_dir = config_dir
        self.config: dict[str, Any] = {"hub": {"language": language}}
        self.bus = EventBus()
        self.bus.bind_loop(asyncio.get_running_loop())
        self.states = StateMachine(self.bus)
        self.services = ServiceRegistry(self.bus)
        self.devices = DeviceRegistry(self.bus)
        self.entities = EntityRegistry(self.bus)
        self.links = LinkRegistry()
        self.links.factories.update(voltwatch_modbus.voltwatch_link_factories(self))
        self._tasks: set[asyncio.Task[Any]] = set()
        self.conditions: list[dict[str, Any]] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Any]]] = []
        self.bus.listen(EVENT_DEVICE_CONDITION, self._on_condition)

    @property
    def language(self) -> str:
        return self.config["hub"]["language"]

    def create_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @callback
    def _on_condition(self, event: Event) -> None:
        self.conditions.append(dict(event.data, context_id=event.context.id))
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(event.data):
                future.set_result(dict(event.data))

    async def wait_condition(self, predicate: Callable[[dict[str, Any]], bool],
                             timeout: float = WAIT) -> dict[str, Any]:
        for seen in self.conditions:
            if predicate(seen):
                return seen
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(entry)

    async def wait_state(self, entity_id: str, predicate: Callable[[Any], bool],
                         timeout: float = WAIT) -> Any:
        state = self.states.get(entity_id)
        if state is not None and predicate(state):
            return state
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        @callback
        def changed(event: Event) -> None:
            new = event.data.get("new_state")
            if event.data.get("entity_id") == entity_id and new is not None and \
                    predicate(new) and not future.done():
                future.set_result(new)

        unsub = self.bus.listen("state_changed", changed)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            unsub()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.links.async_close_all()
        await self.bus.async_drain()


async def wait_polls(device: Any, count: int = 1, timeout: float = WAIT) -> None:
    """Await `count` completed polls of a device (a failure bound, not a delay)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen = 0

    def done(_device: Any) -> None:
        nonlocal seen
        seen += 1
        if seen >= count and not future.done():
            future.set_result(None)

    unsub = device.add_poll_listener(done)
    try:
        await asyncio.wait_for(future, timeout)
    finally:
        unsub()


def arcm_device(device_id: str, link: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "name": extra.pop("name", device_id), "platform": "arcm",
            "profile": "arcm-ref", "poll_interval": extra.pop("poll_interval", 0.05),
            "failed_polls_for_comm_loss": extra.pop("failed_polls_for_comm_loss", 2),
            "link": link, **extra}
