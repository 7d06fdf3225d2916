"""Device and entity registries against an in-memory RegistryStore."""

from __future__ import annotations

import pytest

from hub.core.events import EVENT_DEVICE_REGISTRY_UPDATED, EVENT_ENTITY_REGISTRY_UPDATED, EventBus
from hub.core.registries import DeviceEntry, DeviceRegistry, EntityRegistry
from hub.core.states import InvalidEntityId

from .helpers import MemoryRegistryStore, record

ARCM_1 = {
    "id": "arcm-1",
    "platform": "arcm",
    "name": "配电箱1",
    "project": "school-1-a",
    "link": {"transport": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "unit": 1},
}


# -- devices --------------------------------------------------------------------------------
async def test_device_create_saves_and_announces(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    devices = DeviceRegistry(bus, store)
    updates = record(bus, EVENT_DEVICE_REGISTRY_UPDATED)
    entry = await devices.async_upsert(**ARCM_1, poll_interval=1.0)
    assert isinstance(entry, DeviceEntry)
    assert entry.display_name == "配电箱1"
    assert entry.options == {"poll_interval": 1.0}  # unknown keys are plugin options
    assert store.devices["arcm-1"]["link"]["port"] == 5020
    assert store.devices["arcm-1"]["options"] == {"poll_interval": 1.0}
    assert updates.events[0].data == {"action": "create", "device_id": "arcm-1"}
    assert devices.get("arcm-1") is entry
    assert [d.id for d in devices] == ["arcm-1"] and len(devices) == 1


async def test_device_update_keeps_options_and_untouched_fields(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    devices = DeviceRegistry(bus, store)
    await devices.async_upsert(**ARCM_1, poll_interval=1.0, residual_alarm=300)
    updates = record(bus, EVENT_DEVICE_REGISTRY_UPDATED)
    entry = await devices.async_upsert(id="arcm-1", area="一层", poll_interval=2.0)
    assert entry.area == "一层"
    assert entry.name == "配电箱1"  # not named in the update: kept
    assert entry.options == {"poll_interval": 2.0, "residual_alarm": 300}
    entry = await devices.async_upsert(id="arcm-1", options={"note": "moved"})
    assert entry.options == {"poll_interval": 2.0, "residual_alarm": 300, "note": "moved"}
    assert store.devices["arcm-1"]["options"] == entry.options
    assert [e.data["action"] for e in updates.events] == ["update", "update"]


async def test_device_create_does_not_keep_the_callers_options_dict(bus: EventBus) -> None:
    devices = DeviceRegistry(bus)
    options = {"note": "a"}
    entry = await devices.async_upsert(id="arcm-9", platform="arcm", options=options, extra=1)
    assert entry.options == {"note": "a", "extra": 1}
    assert options == {"note": "a"}


async def test_unchanged_device_upsert_writes_nothing(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    devices = DeviceRegistry(bus, store)
    first = await devices.async_upsert(**ARCM_1, poll_interval=1.0)
    writes = len(store.writes)
    updates = record(bus, EVENT_DEVICE_REGISTRY_UPDATED)
    again = await devices.async_upsert(**ARCM_1, poll_interval=1.0)
    assert again is first
    assert len(store.writes) == writes
    assert updates.events == []


async def test_device_remove(bus: EventBus, store: MemoryRegistryStore) -> None:
    devices = DeviceRegistry(bus, store)
    await devices.async_upsert(**ARCM_1)
    updates = record(bus, EVENT_DEVICE_REGISTRY_UPDATED)
    assert await devices.async_remove("arcm-1") is True
    assert devices.get("arcm-1") is None
    assert "arcm-1" not in store.devices
    assert updates.events[0].data == {"action": "remove", "device_id": "arcm-1"}
    assert await devices.async_remove("arcm-1") is False
    assert len(updates.events) == 1


async def test_devices_survive_a_restart_through_the_store(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    devices = DeviceRegistry(bus, store)
    await devices.async_upsert(**ARCM_1, poll_interval=1.0, source="api")
    reloaded = DeviceRegistry(bus, store)
    await reloaded.async_load()
    entry = reloaded.get("arcm-1")
    assert entry is not None
    assert entry == devices.get("arcm-1")
    assert entry.source == "api"


async def test_load_ignores_columns_the_entry_does_not_know(bus: EventBus) -> None:
    store = MemoryRegistryStore(devices=[{**ARCM_1, "created_at": 123.0}])
    devices = DeviceRegistry(bus, store)
    await devices.async_load()
    assert devices.get("arcm-1").link["unit"] == 1  # type: ignore[union-attr]


# -- entities -------------------------------------------------------------------------------
async def test_entity_register_saves_announces_and_indexes(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    entities = EntityRegistry(bus, store)
    updates = record(bus, EVENT_ENTITY_REGISTRY_UPDATED)
    entry = await entities.async_register(
        "sensor.arcm_1_residual_current", "arcm", device_id="arcm-1", unit="mA"
    )
    await entities.async_register("sensor.arcm_1_temperature_1", "arcm", device_id="arcm-1")
    await entities.async_register("sensor.arcm_2_temperature_1", "arcm", device_id="arcm-2")
    assert entry.unique_id == "sensor.arcm_1_residual_current"  # defaults to the entity id
    assert sorted(e.entity_id for e in entities.for_device("arcm-1")) == [
        "sensor.arcm_1_residual_current", "sensor.arcm_1_temperature_1"]
    assert entities.for_device("nope") == []
    assert store.entities["sensor.arcm_1_residual_current"]["unit"] == "mA"
    assert updates.events[0].data == {
        "action": "create", "entity_id": "sensor.arcm_1_residual_current"}
    assert len(entities) == 3


async def test_entity_register_rejects_invalid_ids(bus: EventBus) -> None:
    entities = EntityRegistry(bus)
    with pytest.raises(InvalidEntityId):
        await entities.async_register("sensor.arcm-1_power", "arcm")
    assert len(entities) == 0


async def test_disabled_flag_survives_re_registration(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    entities = EntityRegistry(bus, store)
    await entities.async_register("sensor.arcm_1_power", "arcm", device_id="arcm-1", unit="kW")
    await entities.async_update("sensor.arcm_1_power", disabled=True)
    # The plugin registers its entities again at every start: the admin's choice stays.
    again = await entities.async_register(
        "sensor.arcm_1_power", "arcm", device_id="arcm-1", unit="kW")
    assert again.disabled is True
    # Also across a restart, through the store.
    reloaded = EntityRegistry(bus, store)
    await reloaded.async_load()
    after_restart = await reloaded.async_register(
        "sensor.arcm_1_power", "arcm", device_id="arcm-1", unit="kW")
    assert after_restart.disabled is True
    assert [e.entity_id for e in reloaded.for_device("arcm-1")] == ["sensor.arcm_1_power"]


async def test_unchanged_entity_register_writes_nothing(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    entities = EntityRegistry(bus, store)
    first = await entities.async_register("sensor.arcm_1_power", "arcm", device_id="arcm-1")
    writes = len(store.writes)
    updates = record(bus, EVENT_ENTITY_REGISTRY_UPDATED)
    assert await entities.async_register("sensor.arcm_1_power", "arcm", device_id="arcm-1") is first
    assert len(store.writes) == writes
    assert updates.events == []


async def test_moving_an_entity_to_another_device_moves_the_index(bus: EventBus) -> None:
    entities = EntityRegistry(bus)
    await entities.async_register("sensor.dtu_1_signal", "gsm", device_id="dtu-1")
    await entities.async_update("sensor.dtu_1_signal", device_id="dtu-2")
    assert entities.for_device("dtu-1") == []
    assert [e.entity_id for e in entities.for_device("dtu-2")] == ["sensor.dtu_1_signal"]
    await entities.async_register("sensor.dtu_1_signal", "gsm", device_id=None)
    assert entities.for_device("dtu-2") == []


async def test_entity_remove(bus: EventBus, store: MemoryRegistryStore) -> None:
    entities = EntityRegistry(bus, store)
    await entities.async_register("sensor.arcm_1_power", "arcm", device_id="arcm-1")
    updates = record(bus, EVENT_ENTITY_REGISTRY_UPDATED)
    assert await entities.async_remove("sensor.arcm_1_power") is True
    assert entities.get("sensor.arcm_1_power") is None
    assert entities.for_device("arcm-1") == []
    assert "sensor.arcm_1_power" not in store.entities
    assert updates.events[0].data == {"action": "remove", "entity_id": "sensor.arcm_1_power"}
    assert await entities.async_remove("sensor.arcm_1_power") is False


async def test_registries_work_without_a_store(bus: EventBus) -> None:
    devices = DeviceRegistry(bus)
    entities = EntityRegistry(bus)
    await devices.async_load()
    await entities.async_load()
    await devices.async_upsert(id="smoke-1", platform="smoke")
    await entities.async_register("binary_sensor.smoke_1_smoke", "smoke", device_id="smoke-1")
    assert devices.get("smoke-1") is not None
    assert entities.get("binary_sensor.smoke_1_smoke") is not None


# -- in bulk (a hub starting with 100,000 devices) -------------------------------------------
async def test_device_upsert_many_matches_one_by_one(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    devices = DeviceRegistry(bus, store)
    await devices.async_upsert(**ARCM_1, poll_interval=1.0)
    updates = record(bus, EVENT_DEVICE_REGISTRY_UPDATED)
    entries = await devices.async_upsert_many(
        [{**ARCM_1, "poll_interval": 1.0},  # unchanged: no write, no event
         {"id": "arcm-1", "area": "一层"},  # update, options kept
         {"id": "smoke-1", "platform": "smoke", "reporting_interval": 30.0}],  # create
        source="config")
    assert [e.id for e in entries] == ["arcm-1", "arcm-1", "smoke-1"]
    assert devices.get("arcm-1").area == "一层"
    assert devices.get("arcm-1").options == {"poll_interval": 1.0}
    assert devices.get("smoke-1").options == {"reporting_interval": 30.0}
    assert devices.get("smoke-1").source == "config"
    assert [(e.data["action"], e.data["device_id"]) for e in updates.events] == [
        ("update", "arcm-1"), ("create", "smoke-1")]
    assert store.devices["arcm-1"]["area"] == "一层"
    assert store.devices["smoke-1"]["options"] == {"reporting_interval": 30.0}


async def test_entity_register_many_matches_one_by_one(
    bus: EventBus, store: MemoryRegistryStore
) -> None:
    entities = EntityRegistry(bus, store)
    await entities.async_register("sensor.arcm_1_power", "arcm", device_id="arcm-1", unit="kW")
    await entities.async_update("sensor.arcm_1_power", disabled=True)
    updates = record(bus, EVENT_ENTITY_REGISTRY_UPDATED)
    writes = len(store.writes)
    result = await entities.async_register_many([
        {"entity_id": "sensor.arcm_1_power", "platform": "arcm", "device_id": "arcm-1",
         "unit": "kW"},  # unchanged (the admin's disabled flag kept): no write, no event
        {"entity_id": "sensor.smoke_1_battery", "platform": "smoke", "device_id": "smoke-1",
         "unique_id": "smoke-1:battery", "unit": "%"},
    ])
    assert result[0].disabled is True
    assert result[1].unique_id == "smoke-1:battery" and result[1].unit == "%"
    assert [(e.data["action"], e.data["entity_id"]) for e in updates.events] == [
        ("create", "sensor.smoke_1_battery")]
    assert store.writes[writes:] == [("save_entity", "sensor.smoke_1_battery")]
    assert [e.entity_id for e in entities.for_device("smoke-1")] == ["sensor.smoke_1_battery"]


async def test_entity_register_many_refuses_all_when_one_id_is_invalid(bus: EventBus) -> None:
    entities = EntityRegistry(bus)
    with pytest.raises(InvalidEntityId, match="arcm-1"):
        await entities.async_register_many([
            {"entity_id": "sensor.fine", "platform": "arcm"},
            {"entity_id": "sensor.arcm-1_power", "platform": "arcm"}])
    assert len(entities) == 0
