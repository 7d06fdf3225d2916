"""The state relay between workers (issue 12; plugins/mqtt/voltwatch_mqtt/mirror.py), in process.

Every changed reading on one worker costs the others an apply: decode a batch and
`StateMachine.async_mirror` each entry (a remote `state_changed` the other listeners skip). The
sender pays a bus callback, an entity-registry lookup and a share of one JSON encode per batch.
Both are measured in states/s against the same run's baseline: `StateMachine.async_set` of the
same changing readings, i.e. what the reading cost the worker that received it. No broker:
the broker's share is in bench_fleet.py (`FLEET_BENCH_MIRROR=1`).

The sender's figure includes making each state's context id (a ULID; ids are made lazily),
which a real hub's recorder pays for every state anyway; the baseline does not.

`MIRROR_BENCH_ENTITIES` (default 2000) entities, `MIRROR_BENCH_ROUNDS` (default 20) rounds of
one changed value each, batches of BATCH_STATES as the relay sends them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result
from voltwatch_mqtt import mirror as mirror_module
from voltwatch_mqtt.settings import MqttSettings

from hub.core.events import EventBus, callback
from hub.core.registries import EntityRegistry
from hub.core.states import StateMachine

ENTITIES = int(os.environ.get("MIRROR_BENCH_ENTITIES", "2000"))
ROUNDS = int(os.environ.get("MIRROR_BENCH_ROUNDS", "20"))
ATTRS = {"unit_of_measurement": "mA", "device_class": "current", "friendly_name": "剩余电流"}


class _Connection:
    """What StateMirror needs of an MqttConnection, without a broker."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.settings = MqttSettings.from_config({"client_id": "bench", "mirror_states": True})
        self.connected = False  # the sender gathers; the benchmark encodes the batches itself
        self._client = None


class _Hub:
    def __init__(self) -> None:
        self.bus = EventBus()
        self.states = StateMachine(self.bus)
        self.entities = EntityRegistry(self.bus)


def _ids() -> list[str]:
    return [f"sensor.arcm_{n}_residual_current" for n in range(ENTITIES)]


async def _baseline(ids: list[str]) -> float:
    hub = _Hub()
    hub.bus.listen("state_changed", callback(lambda event: None))  # one listener, as below
    set_state = hub.states.async_set
    start = time.perf_counter()
    for r in range(ROUNDS):
        for entity_id in ids:
            set_state(entity_id, r, ATTRS, timestamp=1000.0 + r)
    return ENTITIES * ROUNDS / (time.perf_counter() - start)


async def _sender(ids: list[str]) -> tuple[float, list[bytes]]:
    hub = _Hub()
    for entity_id in ids:
        await hub.entities.async_register(entity_id, "arcm", device_id=entity_id.split(".")[1])
    relay = mirror_module.StateMirror(_Connection(hub))  # type: ignore[arg-type]
    relay.start()
    set_state = hub.states.async_set
    payloads: list[bytes] = []
    batch = mirror_module.BATCH_STATES
    start = time.perf_counter()
    for r in range(ROUNDS):
        for entity_id in ids:
            set_state(entity_id, r, ATTRS, timestamp=1000.0 + r)
        states = list(relay._pending.values())
        relay._pending = {}
        payloads += [mirror_module.encode(states[i:i + batch], relay._attr_cache).encode()
                     for i in range(0, len(states), batch)]
    rate = ENTITIES * ROUNDS / (time.perf_counter() - start)
    relay.stop()
    return rate, payloads


async def _receiver(payloads: list[bytes]) -> float:
    hub = _Hub()
    hub.bus.listen("state_changed", callback(lambda event: None))
    relay = mirror_module.StateMirror(_Connection(hub))  # type: ignore[arg-type]
    topic = relay.topic_prefix + "other"
    start = time.perf_counter()
    for payload in payloads:
        relay.handle(topic, payload)
    rate = ENTITIES * ROUNDS / (time.perf_counter() - start)
    assert relay.applied == ENTITIES * ROUNDS, relay.stats()
    return rate


def run() -> list[Result]:
    ids = _ids()
    base = asyncio.run(_baseline(ids))
    send, payloads = asyncio.run(_sender(ids))
    receive = asyncio.run(_receiver(payloads))
    size = sum(len(p) for p in payloads) / (ENTITIES * ROUNDS)
    return [
        Result("state relay: sender (set + gather + encode) states/s", send, "states/s", base,
               "async_set states/s", "≥ 0.5x"),
        Result("state relay: receiver (decode + async_mirror) states/s", receive, "states/s",
               base, "async_set states/s", "≥ 0.5x"),
        Result("state relay: bytes per relayed state", size, "B", None, "", "-"),
    ]


if __name__ == "__main__":
    for result in run():
        print(result.row())
