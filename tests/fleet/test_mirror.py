"""Two workers on one PostgreSQL and one Mosquitto show the whole fleet's current states
(issue 12): a reading the shared subscription handed to one worker appears in the other's
/api/states (HTTP), is recorded once, and triggers a state automation once, not twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import voltwatch_mqtt
from aiohttp import ClientSession
from sqlalchemy import text
from voltwatch_mqtt.testing import MosquittoBroker

from hub.core.events import Event, callback
from hub.http import tokens
from hub.hub import Hub

from .fleetkit import start_hub, wait_until
from .test_workers import worker_config

DEVICES = [{"id": f"mirror-{n}", "name": f"Mirror {n}", "platform": "smoke", "project": "fleet",
            "link": {"transport": "mqtt"}} for n in (1, 2)]
ENTITY = "sensor.mirror_1_smoke_level"
READINGS = 6  # alternate between the two workers (the broker's shared subscription)
AUTOMATIONS = [{"id": f"level_{n}", "triggers": [{"trigger": "state", "entity_id": ENTITY,
                                                  "to": str(n)}],
                "actions": [{"stop": "seen"}]} for n in range(1, READINGS + 1)]


@pytest.fixture
async def workers(tmp_path: Path, pg_url: str,
                  broker: MosquittoBroker) -> AsyncIterator[tuple[Hub, Hub]]:
    hubs: list[Hub] = []
    try:
        for name in ("a", "b"):
            config = worker_config(tmp_path, pg_url, broker, name, DEVICES)
            config["http"] = {"port": 0} if name == "a" else {"enabled": False}
            config["automations"] = AUTOMATIONS
            hub = await start_hub(tmp_path / name, config, "mqtt", "smoke")
            hubs.append(hub)
            await voltwatch_mqtt.get_connection(hub).wait_ready()
        yield hubs[0], hubs[1]
    finally:
        for hub in hubs:
            await hub.async_stop()


class Changes:
    """Every state_changed of ENTITY on each hub as (hub name, origin, state)."""

    def __init__(self, hubs: dict[str, Hub]) -> None:
        self.seen: list[tuple[str, str, str]] = []
        for name, hub in hubs.items():
            hub.bus.listen("state_changed", self._make(name))

    def _make(self, name: str) -> Any:
        @callback
        def changed(event: Event) -> None:
            if event.data["entity_id"] == ENTITY and event.data["new_state"] is not None:
                self.seen.append((name, event.origin, event.data["new_state"].state))

        return changed


async def test_a_reading_on_one_worker_shows_on_the_other_once(
    workers: tuple[Hub, Hub], broker: MosquittoBroker,
) -> None:
    hub_a, hub_b = workers
    changes = Changes({"a": hub_a, "b": hub_b})
    triggered: list[tuple[str, str]] = []
    for name, hub in (("a", hub_a), ("b", hub_b)):
        hub.bus.listen("automation_triggered", callback(
            lambda e, n=name: triggered.append((n, e.data["automation_id"]))))
    token = await tokens.create_token(hub_a.storage, "mirror-test")
    headers = {"Authorization": f"Bearer {token}"}
    owners: dict[str, str] = {}
    async with aiomqtt.Client(broker.host, broker.port, identifier="mirror-device") as device, \
            ClientSession(base_url=hub_a.http.url, headers=headers) as http:
        for n in range(1, READINGS + 1):
            await device.publish("voltwatch/dev/mirror-1/telemetry", json.dumps(
                {"ts": 1_800_000_000.0 + n, "values": {"smoke_level": n}}), qos=1)
            value = str(n)
            await wait_until(lambda v=value: all(
                (h.states.get(ENTITY) or _NONE).state == v for h in (hub_a, hub_b)))
            [owner] = [name for name, origin, state in changes.seen
                       if state == value and origin == "local"]
            owners[value] = owner
            async with http.get(f"/api/states/{ENTITY}") as response:
                assert response.status == 200
                body = await response.json()
            assert body["state"] == value  # through worker a's HTTP, whoever got the reading
            assert body["last_updated"].startswith("2027-01-15T08:")  # the sender's time kept
    assert set(owners.values()) == {"a", "b"}, f"the broker gave one worker everything: {owners}"

    # Each value changed once locally and once remotely, never echoed back.
    for value, owner in owners.items():
        assert sorted((n, o) for n, o, s in changes.seen if s == value) == sorted(
            [(owner, "local"), ("b" if owner == "a" else "a", "remote")])
    # Each state automation ran once, on the worker that got the reading.
    assert sorted(triggered) == sorted((owners[str(n)], f"level_{n}")
                                       for n in range(1, READINGS + 1))
    # Recorded once: the owner wrote each reading; the mirror wrote nothing.
    await hub_a.recorder.async_flush()
    await hub_b.recorder.async_flush()
    async with hub_a.storage.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT s.state, count(*) FROM states s JOIN states_meta m USING (metadata_id) "
            "WHERE m.entity_id = :e AND s.state NOT IN ('unknown', 'unavailable') "
            "GROUP BY s.state"), {"e": ENTITY})).all()
    assert dict(rows) == {str(n): 1 for n in range(1, READINGS + 1)}
    stats = [voltwatch_mqtt.stats(hub) for hub in (hub_a, hub_b)]
    assert sum(s["mirror_applied"] for s in stats) == READINGS
    assert all(s["mirror_malformed"] == 0 for s in stats)


class _None:
    state = None


_NONE = _None()
