"""Core hot paths: events through the bus, and state writes through the state machine.

Each figure is measured next to a raw baseline in the same run: the same listener function
called directly in a plain Python loop with a pre-built object. The ratio says what the bus
(or the state machine plus bus) costs on top of "just calling the function"; the targets are
absolute, because what a site needs is readings per second, whatever the machine.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result, Timer

from hub.core.events import EVENT_STATE_CHANGED, Event, EventBus, callback
from hub.core.states import StateMachine

EVENTS = 300_000
WRITES = 200_000
ENTITIES = 100  # a site's worth of sensors, written round-robin
EVENTS_TARGET = 500_000.0
WRITES_TARGET = 150_000.0
REPEATS = 3  # best of: the figure is what the code can do, not what a noisy neighbour allowed


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    @callback
    def listener(self, event: Event) -> None:
        self.count += 1


def _raw_calls(n: int) -> float:
    """The listener called directly with one pre-built event: the floor for any dispatch."""
    counter = _Counter()
    listener = counter.listener
    event = Event("reading", {"value": 1})
    with Timer() as timer:
        for _ in range(n):
            listener(event)
    assert counter.count == n
    return n / timer.elapsed


def _raw_dict_writes(n: int) -> float:
    """A plain dict write of the new value plus the direct listener call: a state write's floor."""
    counter = _Counter()
    listener = counter.listener
    event = Event(EVENT_STATE_CHANGED, {"entity_id": "sensor.x"})
    entity_ids = [f"sensor.arcm_{i}_residual_current" for i in range(ENTITIES)]
    store: dict[str, Any] = {}
    with Timer() as timer:
        for i in range(n):
            store[entity_ids[i % ENTITIES]] = i
            listener(event)
    assert counter.count == n
    return n / timer.elapsed


async def _bus_events(n: int) -> float:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    counter = _Counter()
    bus.listen("reading", counter.listener)
    bus.listen("other", counter.listener)  # a second type, so lookup is not trivially one key
    fire = bus.async_fire
    data = {"value": 1}
    with Timer() as timer:
        for _ in range(n):
            fire("reading", data)
    assert counter.count == n
    return n / timer.elapsed


async def _state_writes(n: int) -> float:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    states = StateMachine(bus)
    counter = _Counter()
    bus.listen(EVENT_STATE_CHANGED, counter.listener)
    entity_ids = [f"sensor.arcm_{i}_residual_current" for i in range(ENTITIES)]
    attributes = {"unit_of_measurement": "mA", "device_class": "current"}
    for entity_id in entity_ids:
        states.async_set(entity_id, -1, attributes)
    counter.count = 0
    async_set = states.async_set
    with Timer() as timer:
        for i in range(n):
            # Every write is a new value (i changes), so every write is a state_changed.
            async_set(entity_ids[i % ENTITIES], i)
    assert counter.count == n
    return n / timer.elapsed


def _best(measure: Any, n: int) -> float:
    best = 0.0
    for _ in range(REPEATS):
        rate = asyncio.run(measure(n)) if asyncio.iscoroutinefunction(measure) else measure(n)
        best = max(best, rate)
    return best


def run() -> list[Result]:
    raw = _best(_raw_calls, EVENTS)
    events = _best(_bus_events, EVENTS)
    raw_writes = _best(_raw_dict_writes, WRITES)
    writes = _best(_state_writes, WRITES)
    return [
        Result(
            "bus: async_fire -> 1 @callback listener",
            events, "events/s", raw, "direct call, pre-built Event",
            target=f">= {EVENTS_TARGET:,.0f}/s", met=events >= EVENTS_TARGET,
        ),
        Result(
            "states: async_set (new value) + state_changed -> 1 @callback",
            writes, "writes/s", raw_writes, "dict write + direct call, pre-built Event",
            target=f">= {WRITES_TARGET:,.0f}/s", met=writes >= WRITES_TARGET,
        ),
    ]


if __name__ == "__main__":
    for result in run():
        print(result.row())
