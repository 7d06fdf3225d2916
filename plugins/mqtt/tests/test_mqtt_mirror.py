"""The state relay between hub workers (mirror.py): apply path, stale, echo, malformed, settings.

Two real hubs on one real Mosquitto, as in a fleet of workers; the fleet test with PostgreSQL,
the recorder and automations is tests/fleet/test_mirror.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import voltwatch_mqtt
import voluptuous as vol
from mqtt_testkit import DEVICE, make_hub, wait_until
from voltwatch_mqtt.mirror import decode, encode
from voltwatch_mqtt.settings import MqttSettings
from voltwatch_mqtt.testing import MosquittoBroker

from hub.core.context import Context
from hub.core.events import EventBus, callback
from hub.core.states import MIRROR_CHANGED, MIRROR_REPORTED, MIRROR_STALE, StateMachine
from hub.hub import Hub

ENTITY = "sensor.smoke_1_smoke_level"
RELAY = "voltwatch/hub/states/"


def test_async_mirror_keeps_the_senders_times_and_ignores_older_states() -> None:
    bus = EventBus()
    seen: list[Any] = []
    bus.listen("state_changed", _collect(seen))
    machine = StateMachine(bus)

    assert machine.async_mirror(ENTITY, "12", {"unit": "%"}, 100.0, 105.0) == MIRROR_CHANGED
    state = machine.get(ENTITY)
    assert (state.state, state.last_changed, state.last_updated) == ("12", 100.0, 105.0)
    assert [e.origin for e in seen] == ["remote"]

    assert machine.async_mirror(ENTITY, "13", None, 104.0, 104.0) == MIRROR_STALE  # older
    assert machine.async_mirror(ENTITY, "13", None, 105.0, 105.0) == MIRROR_STALE  # not newer
    assert machine.async_mirror(ENTITY, "12", {"unit": "%"}, 100.0, 106.0) == MIRROR_REPORTED
    assert machine.get(ENTITY) is state and state.last_reported == 106.0
    assert len(seen) == 1

    assert machine.async_mirror(ENTITY, "14", None, 107.0, 107.0) == MIRROR_CHANGED
    assert machine.get(ENTITY).attributes == {"unit": "%"}  # None keeps the attributes
    assert [e.origin for e in seen] == ["remote", "remote"]
    # A local write after a mirrored one is an ordinary local change.
    machine.async_set(ENTITY, 15, timestamp=108.0)
    assert seen[-1].origin == "local" and machine.get(ENTITY).last_changed == 108.0


def _collect(seen: list[Any]) -> Any:
    @callback
    def on(event: Any) -> None:
        seen.append(event)

    return on


def test_settings_mirror_is_on_with_a_shared_group_and_can_be_turned_off(tmp_path: Path) -> None:
    def settings(**section: Any) -> MqttSettings:
        return MqttSettings.from_config({"client_id": "w", **section}, tmp_path)

    assert settings().mirror_states is False
    assert settings(shared_group="workers").mirror_states is True
    assert settings(shared_group="workers", mirror_states=False).mirror_states is False
    assert settings(mirror_states=True, mirror_interval="20ms").mirror_interval == 0.02
    with pytest.raises(vol.Invalid):
        settings(mirror_states="sometimes")
    with pytest.raises(vol.Invalid):
        settings(mirror_interval="1h")


@pytest.fixture
async def pair(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[tuple[Hub, Hub]]:
    hubs = []
    try:
        for name in ("a", "b"):
            hub = await make_hub(tmp_path / name, mosquitto, client_id=f"worker-{name}",
                                 mirror_states=True, mirror_interval="10ms")
            await hub.entities.async_register(ENTITY, "testpush", device_id=DEVICE)
            hubs.append(hub)
        yield hubs[0], hubs[1]
    finally:
        for hub in hubs:
            await voltwatch_mqtt.get_connection(hub).stop()
            for task in list(hub._tasks):
                task.cancel()
            await asyncio.gather(*hub._tasks, return_exceptions=True)


async def test_a_local_state_reaches_the_other_worker_once_and_is_not_echoed(
    pair: tuple[Hub, Hub],
) -> None:
    hub_a, hub_b = pair
    mirror_a = voltwatch_mqtt.get_connection(hub_a).mirror
    mirror_b = voltwatch_mqtt.get_connection(hub_b).mirror
    origins: list[str] = []
    hub_b.bus.listen("state_changed", _collect_origin(origins))

    hub_a.states.async_set("sensor.not_a_device", 1)  # not a device entity: stays home
    hub_a.states.async_set(ENTITY, "unknown")  # "no reading yet" is nobody's news
    for value in range(5):  # one window: only the latest is relayed
        hub_a.states.async_set(ENTITY, value, {"unit": "%"}, timestamp=1000.0 + value)
    await wait_until(lambda: mirror_b.applied == 1 and mirror_a.batches == 1)

    state = hub_b.states.get(ENTITY)
    assert (state.state, state.last_updated, dict(state.attributes)) == ("4", 1004.0,
                                                                         {"unit": "%"})
    assert state.context.id == hub_a.states.get(ENTITY).context.id
    assert origins == ["remote"]
    assert hub_b.states.get("sensor.not_a_device") is None
    assert mirror_a.relayed == 1 and mirror_a.batches == 1
    # b applied it as remote: nothing waits to go back, and a never applied its own batch.
    assert mirror_b.stats()["mirror_pending"] == 0 and mirror_b.relayed == 0
    assert mirror_a.received == 0 and mirror_a.applied == 0
    stats = voltwatch_mqtt.stats(hub_b)
    assert stats["mirror_applied"] == 1 and stats["messages"] == 0  # not a device message


def _collect_origin(origins: list[str]) -> Any:
    @callback
    def on(event: Any) -> None:
        origins.append(event.origin)

    return on


async def test_stale_and_malformed_relays_are_counted_and_dropped(
    pair: tuple[Hub, Hub], mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture,
) -> None:
    _, hub_b = pair
    mirror_b = voltwatch_mqtt.get_connection(hub_b).mirror
    hub_b.states.async_set(ENTITY, 7, timestamp=2000.0)
    good = {"v": 1, "states": [[ENTITY, "6", None, 1990.0, 1990.0, None],
                               ["sensor.other_worker", "on", {"a": 1}, 1.0, 2.0, "ctx"]]}
    bad = [b"{not json", json.dumps({"v": 1, "states": [["Bad Id", "1", None, 1, 1, None]]}),
           json.dumps({"v": 1, "states": [[ENTITY, 6, None, 1, 1, None]]}),
           json.dumps({"v": 2, "states": []}), json.dumps(["states"])]
    caplog.set_level(logging.WARNING, logger="voltwatch_mqtt.mirror")
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="other") as client:
        for payload in bad:
            await client.publish(RELAY + "worker-x", payload, qos=1)
        await client.publish(RELAY + "worker-x", json.dumps(good), qos=1)
    await wait_until(lambda: mirror_b.received == len(bad) + 1)

    assert mirror_b.malformed == len(bad)
    assert mirror_b.stale == 1 and hub_b.states.get(ENTITY).state == "7"  # older: ignored
    assert hub_b.states.get("sensor.other_worker").state == "on"
    assert "malformed state relay on voltwatch/hub/states/worker-x" in caplog.text
    assert "invalid entity id 'Bad Id'" in caplog.text
    metrics = voltwatch_mqtt.voltwatch_metrics(hub_b)
    assert metrics["mqtt_mirror_malformed_total"] == len(bad)
    assert metrics["mqtt_mirror_stale_total"] == 1
    # The hub keeps going: a good relay after the bad ones still applies.
    assert voltwatch_mqtt.get_connection(hub_b).connected


def test_a_batch_round_trips_and_changed_attributes_are_not_served_from_the_cache() -> None:
    machine = StateMachine(EventBus())
    cache: dict[int, tuple[Any, str]] = {}
    first = machine.async_set(ENTITY, "1.5", {"unit": "mA", "名": "剩余电流"}, timestamp=10.0,
                              context=Context(id="ctx/with \"quotes\""))
    second = machine.async_set("sensor.b", 'say "hi"', None, timestamp=11)
    assert decode(encode([first, second], cache).encode()) == [
        (ENTITY, "1.5", {"unit": "mA", "名": "剩余电流"}, 10.0, 10.0, 'ctx/with "quotes"'),
        ("sensor.b", 'say "hi"', None, 11.0, 11.0, second.context.id)]
    same = machine.async_set(ENTITY, "2", {"unit": "mA", "名": "剩余电流"}, timestamp=12.0)
    changed = machine.async_set(ENTITY, "2", {"unit": "A"}, timestamp=13.0)
    assert same.attributes is first.attributes  # kept by the state machine: a cache hit
    assert [entry[2] for entry in decode(encode([same, changed], cache).encode())] == [
        {"unit": "mA", "名": "剩余电流"}, {"unit": "A"}]
