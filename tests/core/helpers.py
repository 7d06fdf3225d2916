"""Small test doubles shared by the core tests (imported, unlike conftest fixtures)."""

from __future__ import annotations

import copy
from typing import Any

from hub.core.events import Event, EventBus, callback


class Recorder:
    """Collects events from a @callback listener so a test can assert on what arrived."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @callback
    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def types(self) -> list[str]:
        return [event.event_type for event in self.events]


def record(bus: EventBus, event_type: str) -> Recorder:
    """Subscribe a recording @callback listener to `event_type`."""
    recorder = Recorder()
    bus.listen(event_type, recorder.__call__)
    return recorder


class MemoryRegistryStore:
    """An in-memory `RegistryStore`: rows are deep-copied in and out, like a real database."""

    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        entities: list[dict[str, Any]] | None = None,
    ) -> None:
        self.devices: dict[str, dict[str, Any]] = {d["id"]: copy.deepcopy(d) for d in devices or []}
        self.entities: dict[str, dict[str, Any]] = {
            e["entity_id"]: copy.deepcopy(e) for e in entities or []
        }
        self.writes: list[tuple[str, str]] = []

    async def load_devices(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(row) for row in self.devices.values()]

    async def save_device(self, device: dict[str, Any]) -> None:
        self.writes.append(("save_device", device["id"]))
        self.devices[device["id"]] = copy.deepcopy(device)

    async def delete_device(self, device_id: str) -> None:
        self.writes.append(("delete_device", device_id))
        self.devices.pop(device_id, None)

    async def load_entities(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(row) for row in self.entities.values()]

    async def save_entity(self, entity: dict[str, Any]) -> None:
        self.writes.append(("save_entity", entity["entity_id"]))
        self.entities[entity["entity_id"]] = copy.deepcopy(entity)

    async def delete_entity(self, entity_id: str) -> None:
        self.writes.append(("delete_entity", entity_id))
        self.entities.pop(entity_id, None)
