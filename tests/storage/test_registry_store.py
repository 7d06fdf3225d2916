"""SqlRegistryStore: the registries survive a restart, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.core.events import EventBus
from hub.core.registries import DeviceRegistry, EntityRegistry
from hub.storage.database import Database
from hub.storage.registry_store import SqlRegistryStore


async def test_store_round_trip(database: Database) -> None:
    store = SqlRegistryStore(database)
    device = {
        "id": "arcm-1",
        "platform": "arcm",
        "name": "配电箱1",
        "profile": "arcm-ref",
        "project": "school-1-a",
        "area": "一层",
        "location": "配电室",
        "link": {"transport": "modbus_tcp", "host": "127.0.0.1", "port": 5020, "unit": 1},
        "manufacturer": None,
        "model": None,
        "firmware": None,
        "source": "config",
        "options": {"poll_interval": 1.0},
    }
    await store.save_device(device)
    await store.save_device({**device, "name": "配电箱一", "link": {"transport": "gsm"}})
    await store.save_device({"id": "afd-1", "platform": "arc_fault"})
    loaded = {row["id"]: row for row in await store.load_devices()}
    assert loaded["arcm-1"] == {**device, "name": "配电箱一", "link": {"transport": "gsm"}}
    assert loaded["afd-1"]["link"] == {} and loaded["afd-1"]["options"] == {}

    entity = {
        "entity_id": "sensor.arcm_1_residual_current",
        "device_id": "arcm-1",
        "unique_id": "arcm-1-residual_current",
        "platform": "arcm",
        "name": None,
        "unit": "mA",
        "device_class": "current",
        "disabled": False,
    }
    await store.save_entity(entity)
    await store.save_entity({**entity, "disabled": True})
    assert await store.load_entities() == [{**entity, "disabled": True}]

    await store.delete_device("afd-1")
    await store.delete_entity(entity["entity_id"])
    assert [row["id"] for row in await store.load_devices()] == ["arcm-1"]
    assert await store.load_entities() == []


async def test_registries_reload_from_database(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url, tmp_path)
    await db.open()
    try:
        bus = EventBus()
        devices = DeviceRegistry(bus, SqlRegistryStore(db))
        entities = EntityRegistry(bus, SqlRegistryStore(db))
        await devices.async_upsert(id="arcm-2", platform="arcm", project="school-1",
                                   link={"transport": "gsm", "imei": "860000000000001"},
                                   poll_interval=2.0)
        await entities.async_register("sensor.arcm_2_temperature_1", "arcm", "arcm-2",
                                      unit="°C")
        await entities.async_update("sensor.arcm_2_temperature_1", disabled=True)
    finally:
        await db.close()

    db = Database(db_url, tmp_path)
    await db.open()
    try:
        bus = EventBus()
        devices = DeviceRegistry(bus, SqlRegistryStore(db))
        entities = EntityRegistry(bus, SqlRegistryStore(db))
        await devices.async_load()
        await entities.async_load()
        device = devices.get("arcm-2")
        assert device is not None
        assert device.link == {"transport": "gsm", "imei": "860000000000001"}
        assert device.options == {"poll_interval": 2.0}
        entry = entities.get("sensor.arcm_2_temperature_1")
        assert entry is not None and entry.disabled and entry.unit == "°C"
        assert [e.entity_id for e in entities.for_device("arcm-2")] == [entry.entity_id]
    finally:
        await db.close()


async def test_many_devices_registering_at_once_all_commit(database: Database) -> None:
    """A hub starting with thousands of detectors registers their entities all at once (one
    task per device): every save must land, none may time out waiting for a connection."""
    import asyncio

    store = SqlRegistryStore(database)

    async def device(n: int) -> None:
        for suffix in ("smoke_level", "battery", "temperature"):
            entity_id = f"sensor.smoke_{n}_{suffix}"
            await store.save_entity({"entity_id": entity_id, "unique_id": entity_id,
                                     "device_id": f"smoke-{n}", "platform": "smoke"})

    await asyncio.gather(*(device(n) for n in range(2000)))
    await store.save_entity({"entity_id": "sensor.smoke_7_battery", "device_id": "smoke-7",
                             "unique_id": "sensor.smoke_7_battery", "platform": "smoke",
                             "unit": "%"})
    # A bad row fails its own save only, not the others written in the same batch.
    bad = store.save_entity({"entity_id": "sensor.broken", "platform": "smoke"})  # no unique_id
    good = store.save_entity({"entity_id": "sensor.fine", "unique_id": "sensor.fine",
                              "platform": "smoke"})
    results = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(results[0], Exception) and "unique_id" in str(results[0])
    assert results[1] is None
    await store.delete_entity("sensor.smoke_8_battery")
    rows = {row["entity_id"]: row for row in await store.load_entities()}
    assert len(rows) == 3 * 2000 - 1 + 1  # the fine one, not the broken one
    assert "sensor.fine" in rows and "sensor.broken" not in rows
    assert rows["sensor.smoke_7_battery"]["unit"] == "%"
    assert "sensor.smoke_8_battery" not in rows


async def test_bulk_saves_are_one_batch_and_a_bad_row_fails_the_call(database: Database) -> None:
    """save_devices / save_entities (the hub's start, a plugin's set-up): every row lands;
    a bad row among them fails the call, and the good rows are still written."""
    store = SqlRegistryStore(database)
    await store.save_devices([{"id": f"smoke-{n}", "platform": "smoke",
                               "link": {"transport": "mqtt"}} for n in range(500)])
    await store.save_entities([{"entity_id": f"sensor.smoke_{n}_battery",
                                "unique_id": f"smoke-{n}:battery", "device_id": f"smoke-{n}",
                                "platform": "smoke", "unit": "%"} for n in range(500)])
    devices = {row["id"]: row for row in await store.load_devices()}
    assert len(devices) == 500 and devices["smoke-7"]["link"] == {"transport": "mqtt"}
    assert devices["smoke-7"]["options"] == {} and devices["smoke-7"]["source"] == "config"
    rows = {row["entity_id"]: row for row in await store.load_entities()}
    assert len(rows) == 500 and rows["sensor.smoke_7_battery"]["unit"] == "%"

    with pytest.raises(Exception, match="unique_id"):
        await store.save_entities([
            {"entity_id": "sensor.fine_1", "unique_id": "fine-1", "platform": "smoke"},
            {"entity_id": "sensor.broken", "platform": "smoke"},  # no unique_id
            {"entity_id": "sensor.fine_2", "unique_id": "fine-2", "platform": "smoke"}])
    names = {row["entity_id"] for row in await store.load_entities()}
    assert {"sensor.fine_1", "sensor.fine_2"} <= names and "sensor.broken" not in names
