"""Automations: a state write that matches no trigger must cost <= 2x a write with none.

1,000 enabled numeric_state automations watch 1,000 other entities; we time state writes to an
unrelated entity with and without them, on the same engine (the index makes the difference one
dict lookup in the `state_changed` event filter).
"""

from __future__ import annotations

import asyncio
from typing import Any

from common import Result, Timer  # bench/run.py puts bench/ on sys.path

WRITES = 200_000


class _MemoryStore:
    async def save_timer(self, row: dict[str, Any]) -> None: ...
    async def delete_timer(self, key: str) -> None: ...
    async def load_timers(self) -> list[dict[str, Any]]:
        return []
    async def add_trace(self, automation_id: str, trace: dict[str, Any], keep: int) -> None: ...


def _writes(states: Any) -> float:
    with Timer() as timer:
        for n in range(WRITES):
            states.async_set("sensor.unrelated_power", n)
    return WRITES / timer.elapsed


async def _measure() -> tuple[float, float]:
    from hub.core.automations.engine import AutomationEngine
    from hub.core.automations.schema import validate_automations
    from hub.core.events import EventBus
    from hub.core.registries import DeviceRegistry
    from hub.core.states import StateMachine

    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    hub = type("BenchHub", (), {})()
    hub.bus, hub.states, hub.time_zone = bus, StateMachine(bus), "UTC"
    hub.devices = DeviceRegistry(bus)
    baseline = _writes(hub.states)
    confs, issues = validate_automations([
        {"id": f"a{n}", "triggers": [{"trigger": "numeric_state",
                                      "entity_id": f"sensor.d{n}_residual_current",
                                      "above": 500, "for": "30s"}],
         "actions": [{"action": "notify.sms", "data": {"message": "x"}}]}
        for n in range(1000)])
    assert not issues
    engine = AutomationEngine(hub, _MemoryStore())
    await engine.async_start(confs)
    with_automations = _writes(hub.states)
    await engine.async_stop()
    return with_automations, baseline


def run() -> list[Result]:
    measured, baseline = asyncio.run(_measure())
    return [Result("state writes, 1,000 numeric_state automations on other entities",
                   measured, "writes/s", baseline, "no automations", ">= 0.5x",
                   measured >= 0.5 * baseline)]


if __name__ == "__main__":
    from bench.common import HEADER

    print(HEADER)
    for result in run():
        print(result.row())
