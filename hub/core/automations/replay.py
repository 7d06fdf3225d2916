"""What a dry run's automation sees: recorded states at a replayed moment, and a run that acts
on nothing.

Why a `Run` subclass and not a description of the actions: the dry run must say what the
automation *would have done*, so its actions go through exactly the live code (actions.Run):
variables rendered, `if`/`choose`/`repeat` conditions evaluated, templates rendered, missing
services reported as the live run would. Only three things differ, each an override:

* `_invoke` records the service call instead of making it (the response is None);
* a delay advances the run's replayed clock instead of sleeping (the states stay those of the
  moment the run was triggered; later readings are not replayed into a running run);
* `wait_for_trigger` is not replayed: the run stops there with a note.

The engine the run talks to is a `ReplayEngine`: its clock is the replayed moment (so `now()`
in templates, `time` conditions and trace times are the replayed ones) and its states are the
replay's (`ReplayStates`), which loads an entity's history from the recorder the first time
anything reads it, so a condition or template on an entity no trigger watches sees its
recorded value too.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..states import State
from .actions import Run, StopRun
from .traces import OUTCOME_CONDITION_FALSE

#: how often a run is re-evaluated after it read entities the replay had not loaded yet
MAX_SETTLE = 5


def _state(entity_id: str, row: Mapping[str, Any], old: State | None) -> State:
    return State(entity_id, row["state"] if row["state"] is not None else "unknown",
                 old.attributes if old else None, last_changed=row["last_changed"],
                 last_updated=row["last_updated"], validate_entity_id=False)


class ReplayStates:
    """The states as recorded, and the timeline of what comes next (a heap)."""

    def __init__(self, recorder: Any, start: float, end: float) -> None:
        self.recorder = recorder
        self.start = start
        self.end = end
        self.states: dict[str, State] = {}
        self.known: set[str] = set()
        #: entities read (by a template or condition) before the replay had loaded them
        self.missing: set[str] = set()
        self.timeline: list[tuple[float, int, str, Any]] = []
        self._seq = 0

    def push(self, when: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.timeline, (when, self._seq, kind, payload))

    def pop(self) -> tuple[float, int, str, Any]:
        return heapq.heappop(self.timeline)

    def get_state(self, entity_id: str) -> State | None:
        if entity_id not in self.known:
            self.missing.add(entity_id)  # called from template threads too: a set add is safe
        return self.states.get(entity_id)

    def apply(self, entity_id: str, row: Mapping[str, Any]) -> tuple[State | None, State]:
        """A recorded write happens: (old, new) state."""
        old = self.states.get(entity_id)
        new = self.states[entity_id] = _state(entity_id, row, old)
        return old, new

    async def ensure(self, entity_ids: Iterable[str], now: float) -> None:
        """Load entities not loaded yet: their value at `now` and their later writes."""
        for entity_id in sorted(set(entity_ids) - self.known):
            self.known.add(entity_id)
            before = await self.recorder.state_before(entity_id, self.start)
            if before is not None:
                self.apply(entity_id, before)
            for row in await self.recorder.history(entity_id, self.start, self.end):
                if row["last_updated"] < now:  # already in the past of the replay
                    self.apply(entity_id, row)
                else:
                    self.push(row["last_updated"], "state", (entity_id, row))

    async def settled(self, now: float, evaluate: Callable[[], Awaitable[Any]]) -> Any:
        """`evaluate()` again until it reads only loaded entities (a template may read any)."""
        result = None
        for _ in range(MAX_SETTLE):
            self.missing.clear()
            result = await evaluate()
            if not self.missing:
                break
            await self.ensure(self.missing, now)
        return result


@dataclass
class ReplayEngine:
    """The part of AutomationEngine a Run uses, on replayed states and a replayed clock."""

    live: Any  # the real engine (projects, devices, time limit) or None
    hub: Any
    replay: ReplayStates
    now: float
    zone: Any
    time_limit: float

    def clock(self) -> float:
        return self.now

    def get_state(self, entity_id: str) -> Any:
        return self.replay.get_state(entity_id)

    def device_project(self, device_id: str) -> str | None:
        return self.live.device_project(device_id) if self.live is not None else None

    def project_lineage(self, project_id: str) -> list[str]:
        return self.live.project_lineage(project_id) if self.live is not None else [project_id]

    async def wait_ready(self) -> None:
        return None


@dataclass
class ReplayedAutomation:
    conf: dict[str, Any]
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = str(self.conf["id"])


class DryRun(Run):
    """A Run that records what it would do; see the module docstring."""

    def __init__(self, engine: ReplayEngine, conf: dict[str, Any],
                 trigger: dict[str, Any]) -> None:
        super().__init__(engine, ReplayedAutomation(conf), trigger, None)  # type: ignore[arg-type]
        self.trace.clock = engine.clock
        self.trace.started_at = engine.now
        #: service calls and delays in the order the run would have made them
        self.planned: list[dict[str, Any]] = []

    async def _invoke(self, domain: str, service: str, data: dict[str, Any]) -> Any:
        self.planned.append({"call": f"{domain}.{service}", "data": data})
        return None

    async def _sleep_persisted(self, seconds: float, path: str, deadline: float | None) -> None:
        self.planned.append({"delay": seconds})
        self.engine.now += seconds  # type: ignore[attr-defined]

    async def _wait(self, action: Mapping[str, Any], path: str,
                    resumed: Mapping[str, Any] | None = None) -> None:
        self.planned.append({"wait_for_trigger": "not replayed in a dry run", "path": path})
        raise StopRun(f"{path}: wait_for_trigger is not replayed in a dry run; the steps "
                      "after it are not shown", False)


async def async_replay_run(make_engine: Callable[[], ReplayEngine], conf: dict[str, Any],
                           trigger: dict[str, Any], when: float) -> dict[str, Any]:
    """One would-be run at `when`: conditions and actions, as the report shows it.

    Run again from the start when it read an entity not loaded yet (nothing it did is real,
    so a second evaluation is harmless), until it sees only recorded states.
    """
    replay = make_engine().replay

    async def evaluate() -> DryRun:
        run = DryRun(make_engine(), conf, trigger)
        await run.execute()
        return run

    run: DryRun = await replay.settled(when, evaluate)
    trace = run.trace
    entry: dict[str, Any] = {"at": when, "trigger": trigger, "conditions": trace.conditions,
                             "would_fire": trace.outcome != OUTCOME_CONDITION_FALSE,
                             "outcome": trace.outcome}
    if entry["would_fire"]:
        entry["actions"] = run.planned
        entry["steps"] = trace.steps
    if trace.error:
        entry["error"] = trace.error
    if trace.notes:
        entry["notes"] = trace.notes
    return entry
