"""Device and entity registries: what exists, where it hangs, and how to reach it.

The state machine holds values; the registries hold identity. A device (a detector, a DTU) has
a place in the project tree (project, area, location) and a link (how to talk to it); an
entity (one measured quantity or switch) belongs to a device. Both survive restarts: they are
persisted through a `RegistryStore` (the storage layer implements it) and loaded before any
plugin starts, so a plugin re-registering its entities finds their old settings (disabled,
renamed) in place.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .context import Context
from .events import EVENT_DEVICE_REGISTRY_UPDATED, EVENT_ENTITY_REGISTRY_UPDATED, EventBus
from .states import InvalidEntityId, valid_entity_id

_LOGGER = logging.getLogger(__name__)


def _copy(value: Any) -> Any:
    """A deep copy of configuration data (dicts, lists, scalars), cheaper than copy.deepcopy."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    if isinstance(value, str | int | float | bool | None):
        return value
    return copy.deepcopy(value)


@dataclass(slots=True)
class DeviceEntry:
    id: str
    platform: str
    name: str | None = None
    profile: str | None = None
    project: str | None = None
    area: str | None = None
    location: str | None = None
    link: dict[str, Any] = field(default_factory=dict)
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    source: str = "config"  # config | api | discovered
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def as_dict(self) -> dict[str, Any]:
        # What dataclasses.asdict gives (nested values copied), without its generic walk.
        row = {name: getattr(self, name) for name in _DEVICE_FIELD_NAMES}
        row["link"] = _copy(self.link)
        row["options"] = _copy(self.options)
        return row


@dataclass(slots=True)
class EntityEntry:
    entity_id: str
    device_id: str | None
    unique_id: str
    platform: str
    name: str | None = None
    unit: str | None = None
    device_class: str | None = None
    disabled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ENTITY_FIELD_NAMES}  # all scalars


class RegistryStore(Protocol):
    """Persistence for the registries (implemented by hub.storage)."""

    async def load_devices(self) -> list[dict[str, Any]]: ...

    async def save_device(self, device: dict[str, Any]) -> None: ...

    async def delete_device(self, device_id: str) -> None: ...

    async def load_entities(self) -> list[dict[str, Any]]: ...

    async def save_entity(self, entity: dict[str, Any]) -> None: ...

    async def delete_entity(self, entity_id: str) -> None: ...

    # Optional (the registries fall back to one save per row without them):
    # `async def save_devices(rows)` and `async def save_entities(rows)`, one batch each.


async def _save_many(store: Any, bulk: str, single: str, rows: list[dict[str, Any]]) -> None:
    """The store's bulk save when it has one (SqlRegistryStore), else its single saves."""
    save_many = getattr(store, bulk, None)
    if save_many is not None:
        await save_many(rows)
    else:
        save = getattr(store, single)
        for row in rows:
            await save(row)


_DEVICE_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(DeviceEntry))
_ENTITY_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(EntityEntry))
_DEVICE_FIELDS = set(_DEVICE_FIELD_NAMES)
_ENTITY_FIELDS = set(_ENTITY_FIELD_NAMES)


class DeviceRegistry:
    def __init__(self, bus: EventBus, store: RegistryStore | None = None) -> None:
        self._bus = bus
        self._store = store
        self._devices: dict[str, DeviceEntry] = {}

    async def async_load(self) -> None:
        if self._store is None:
            return
        for row in await self._store.load_devices():
            entry = DeviceEntry(**{k: v for k, v in row.items() if k in _DEVICE_FIELDS})
            self._devices[entry.id] = entry

    def get(self, device_id: str) -> DeviceEntry | None:
        return self._devices.get(device_id)

    def __iter__(self) -> Iterator[DeviceEntry]:
        return iter(list(self._devices.values()))

    def __len__(self) -> int:
        return len(self._devices)

    async def async_upsert(self, *, context: Context | None = None, replace_options: bool = False,
                           **fields: Any) -> DeviceEntry:
        """Create or update a device; unknown keys go to `options` (plugin-specific settings).

        Options merge into the stored ones unless `replace_options` (an edit that dropped a
        setting must not find it back).
        `context` rides on the `device_registry_updated` event, so a plugin's reaction (a
        poller started, a DTU adopted) is traceable to the admin's request.
        """
        merged = self._merge(fields, replace_options)
        if merged is None:
            return self._devices[fields["id"]]
        entry, action = merged
        self._devices[entry.id] = entry
        if self._store is not None:
            await self._store.save_device(entry.as_dict())
        self._bus.async_fire(EVENT_DEVICE_REGISTRY_UPDATED,
                             {"action": action, "device_id": entry.id}, context=context)
        return entry

    async def async_upsert_many(self, devices: Iterable[dict[str, Any]], *,
                                context: Context | None = None,
                                **common: Any) -> list[DeviceEntry]:
        """`async_upsert` for many devices at once (a hub starting with 100,000 configured
        devices): the same entries and one `device_registry_updated` event per created or
        changed device, but one store batch (one transaction) instead of one save each.
        `common` fields (e.g. `source="config"`) apply to every device."""
        result: list[DeviceEntry] = []
        changed: list[tuple[DeviceEntry, str]] = []
        for fields in devices:
            merged = self._merge({**fields, **common}, False)
            if merged is None:
                result.append(self._devices[fields["id"]])
                continue
            entry, action = merged
            self._devices[entry.id] = entry
            changed.append(merged)
            result.append(entry)
        if changed and self._store is not None:
            await _save_many(self._store, "save_devices", "save_device",
                             [entry.as_dict() for entry, _ in changed])
        fire = self._bus.async_fire
        for entry, action in changed:
            fire(EVENT_DEVICE_REGISTRY_UPDATED, {"action": action, "device_id": entry.id},
                 context=context)
        return result

    def _merge(self, fields: dict[str, Any],
               replace_options: bool) -> tuple[DeviceEntry, str] | None:
        """The entry `fields` make of the stored one and the action; None: nothing changes."""
        device_id = fields["id"]
        known = {k: v for k, v in fields.items() if k in _DEVICE_FIELDS}
        extra = {k: v for k, v in fields.items() if k not in _DEVICE_FIELDS}
        old = self._devices.get(device_id)
        if old is None:
            entry = DeviceEntry(**known)
            # A new dict: never mutate the `options` mapping the caller passed in.
            entry.options = {**entry.options, **extra}
            return entry, "create"
        entry = dataclasses.replace(old, **known)
        # Explicit `options=` and loose extra keys both merge into the stored options.
        kept = {} if replace_options else old.options
        entry.options = {**kept, **known.get("options", {}), **extra}
        if entry == old:
            return None
        return entry, "update"

    async def async_remove(self, device_id: str, context: Context | None = None) -> bool:
        if self._devices.pop(device_id, None) is None:
            return False
        if self._store is not None:
            await self._store.delete_device(device_id)
        self._bus.async_fire(EVENT_DEVICE_REGISTRY_UPDATED,
                             {"action": "remove", "device_id": device_id}, context=context)
        return True


class EntityRegistry:
    def __init__(self, bus: EventBus, store: RegistryStore | None = None) -> None:
        self._bus = bus
        self._store = store
        self._entities: dict[str, EntityEntry] = {}
        self._by_device: dict[str, dict[str, EntityEntry]] = {}

    async def async_load(self) -> None:
        if self._store is None:
            return
        for row in await self._store.load_entities():
            self._index(EntityEntry(**{k: v for k, v in row.items() if k in _ENTITY_FIELDS}))

    def _index(self, entry: EntityEntry) -> None:
        old = self._entities.get(entry.entity_id)
        if old is not None and old.device_id:
            self._by_device.get(old.device_id, {}).pop(entry.entity_id, None)
        self._entities[entry.entity_id] = entry
        if entry.device_id:
            self._by_device.setdefault(entry.device_id, {})[entry.entity_id] = entry

    def get(self, entity_id: str) -> EntityEntry | None:
        return self._entities.get(entity_id)

    def for_device(self, device_id: str) -> list[EntityEntry]:
        return list(self._by_device.get(device_id, {}).values())

    def __iter__(self) -> Iterator[EntityEntry]:
        return iter(list(self._entities.values()))

    def __len__(self) -> int:
        return len(self._entities)

    async def async_register(
        self,
        entity_id: str,
        platform: str,
        device_id: str | None = None,
        unique_id: str | None = None,
        name: str | None = None,
        unit: str | None = None,
        device_class: str | None = None,
    ) -> EntityEntry:
        """Register an entity (idempotent); an admin's `disabled` flag is kept on re-register."""
        entry, old = self._entry(entity_id, platform, device_id, unique_id, name, unit,
                                 device_class)
        if entry == old:
            return old
        self._index(entry)
        if self._store is not None:
            await self._store.save_entity(entry.as_dict())
        self._bus.async_fire(
            EVENT_ENTITY_REGISTRY_UPDATED,
            {"action": "update" if old else "create", "entity_id": entity_id},
        )
        return entry

    async def async_register_many(self, entities: Iterable[dict[str, Any]]) -> list[EntityEntry]:
        """`async_register` for many entities (each a dict of its keyword arguments): every
        id is validated before any is registered, then one store batch (one transaction)
        and one `entity_registry_updated` event per created or changed entity. What a
        plugin setting up thousands of devices at start calls instead of one
        `async_register` per entity."""
        specs = list(entities)
        for spec in specs:
            if not valid_entity_id(spec["entity_id"]):
                raise InvalidEntityId(f"Invalid entity id {spec['entity_id']!r}")
        result: list[EntityEntry] = []
        changed: list[tuple[EntityEntry, bool]] = []
        for spec in specs:
            entry, old = self._entry(**spec)
            if entry == old:
                result.append(old)
                continue
            self._index(entry)
            changed.append((entry, old is not None))
            result.append(entry)
        if changed and self._store is not None:
            await _save_many(self._store, "save_entities", "save_entity",
                             [entry.as_dict() for entry, _ in changed])
        fire = self._bus.async_fire
        for entry, existed in changed:
            fire(EVENT_ENTITY_REGISTRY_UPDATED,
                 {"action": "update" if existed else "create", "entity_id": entry.entity_id})
        return result

    def _entry(self, entity_id: str, platform: str, device_id: str | None = None,
               unique_id: str | None = None, name: str | None = None, unit: str | None = None,
               device_class: str | None = None) -> tuple[EntityEntry, EntityEntry | None]:
        if not valid_entity_id(entity_id):
            raise InvalidEntityId(f"Invalid entity id {entity_id!r}")
        old = self._entities.get(entity_id)
        return EntityEntry(
            entity_id=entity_id,
            device_id=device_id,
            unique_id=unique_id or entity_id,
            platform=platform,
            name=name,
            unit=unit,
            device_class=device_class,
            disabled=old.disabled if old else False,
        ), old

    async def async_update(self, entity_id: str, **changes: Any) -> EntityEntry:
        old = self._entities[entity_id]
        entry = dataclasses.replace(old, **changes)
        self._index(entry)
        if self._store is not None:
            await self._store.save_entity(entry.as_dict())
        self._bus.async_fire(EVENT_ENTITY_REGISTRY_UPDATED, {"action": "update", "entity_id": entity_id})
        return entry

    async def async_remove(self, entity_id: str) -> bool:
        old = self._entities.pop(entity_id, None)
        if old is None:
            return False
        if old.device_id:
            self._by_device.get(old.device_id, {}).pop(entity_id, None)
        if self._store is not None:
            await self._store.delete_entity(entity_id)
        self._bus.async_fire(EVENT_ENTITY_REGISTRY_UPDATED, {"action": "remove", "entity_id": entity_id})
        return True
