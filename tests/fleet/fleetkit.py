"""Shared pieces of the fleet tests: the fleet's own argument parser, a started Hub, waits."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.core.events import Event, callback
from hub.core.plugins import PluginManager
from hub.fleet import FleetMember, FleetPlan, add_arguments, device_entries, plan_from_args
from hub.hub import Hub

WAIT = 20.0  # a failure bound for awaited events, never a synchronisation delay


def members() -> dict[str, FleetMember]:
    manager = PluginManager()
    manager.load_entrypoints(only=["mqtt", "gsm"])
    return manager.merged_dict("voltwatch_fleet_members")


def fleet_args(*argv: str) -> tuple[dict[str, FleetMember], argparse.Namespace, FleetPlan]:
    """Exactly what `voltwatch simulate fleet ARGV` would parse."""
    found = members()
    parser = argparse.ArgumentParser()
    add_arguments(parser, found)
    args = parser.parse_args(list(argv))
    return found, args, plan_from_args(args)


def hub_plugins(*names: str) -> PluginManager:
    manager = PluginManager()
    manager.load_entrypoints(only=list(names))
    return manager


def hub_config(tmp_path: Path, db_url: str, devices: list[dict[str, Any]],
               **sections: Any) -> dict[str, Any]:
    if db_url.startswith("sqlite") and ":///" in db_url and not db_url.endswith(":///"):
        name = db_url.rsplit("/", 1)[1]
        db_url = f"sqlite+aiosqlite:///{tmp_path / name}"
    return {"hub": {"name": "fleet test", "language": "en"},
            "database": {"url": db_url}, "http": {"enabled": False},
            "projects": [{"id": "fleet", "name": "Fleet"}],
            "devices": devices, **sections}


async def start_hub(config_dir: Path, config: dict[str, Any], *plugins: str) -> Hub:
    config_dir.mkdir(parents=True, exist_ok=True)
    hub = Hub(config_dir, config=config, plugin_manager=hub_plugins(*plugins))
    await hub.async_start()
    assert hub.plugins.failures == []
    return hub


class DeviceSeen:
    """Resolves once every listed entity has had a real value written (not unknown)."""

    def __init__(self, hubs: list[Hub], entity_ids: set[str]) -> None:
        self.missing = set(entity_ids)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsubs = [hub.bus.listen("state_changed", self._changed) for hub in hubs]
        if not self.missing:
            self.done.set_result(None)

    @callback
    def _changed(self, event: Event) -> None:
        new = event.data.get("new_state")
        if new is None or new.state in ("unknown", "unavailable"):
            return
        self.missing.discard(event.data["entity_id"])
        if not self.missing and not self.done.done():
            self.done.set_result(None)

    async def wait(self, timeout: float = WAIT) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout)
        except TimeoutError:
            raise AssertionError(f"no value within {timeout} s for {sorted(self.missing)[:5]}"
                                 f" (+{max(0, len(self.missing) - 5)} more)") from None
        finally:
            for unsub in self._unsubs:
                unsub()


class Raised:
    """Collects `alarm_raised` events of several hubs; `wait` returns the first match."""

    def __init__(self, hubs: list[Hub]) -> None:
        self.seen: list[tuple[Hub, dict[str, Any]]] = []
        self._changed: asyncio.Event = asyncio.Event()
        for hub in hubs:
            hub.bus.listen("alarm_raised", self._make(hub))

    def _make(self, hub: Hub) -> Callable[[Event], None]:
        @callback
        def raised(event: Event) -> None:
            self.seen.append((hub, dict(event.data)))
            self._changed.set()

        return raised

    async def wait(self, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for _, record in self.seen:
                    if predicate(record):
                        return record
                self._changed.clear()
                await self._changed.wait()


class EventLog:
    """Every event of the given types on several hubs, as (hub, event type, data)."""

    def __init__(self, hubs: list[Hub], *event_types: str) -> None:
        self.seen: list[tuple[Hub, str, dict[str, Any]]] = []
        for hub in hubs:
            for event_type in event_types:
                hub.bus.listen(event_type, self._make(hub, event_type))

    def _make(self, hub: Hub, event_type: str) -> Callable[[Event], None]:
        @callback
        def record(event: Event) -> None:
            self.seen.append((hub, event_type, dict(event.data)))

        return record

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [data for _, kind, data in self.seen if kind == event_type]


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait for a condition; the timeout is a failure bound, not a synchronisation."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached within the failure bound")
        await asyncio.sleep(0.01)


async def run_in_background(coro: Any) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro)


async def stop(task: asyncio.Task[Any]) -> None:
    from hub.core.tasks import cancel_and_wait

    await cancel_and_wait(task)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def smoke_entities(entries: list[dict[str, Any]]) -> set[str]:
    from hub.core.states import slugify

    return {f"sensor.{slugify(e['id'])}_smoke_level" for e in entries}


def fleet_entries(found: dict[str, FleetMember], args: argparse.Namespace) -> list[dict[str, Any]]:
    return device_entries(found, args)
