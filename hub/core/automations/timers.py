"""Persisted deadlines: `for:` timers and delays that survive a restart.

A row per pending deadline (`automation_timers`): kind `for` (key: automation, trigger index,
entity) or `delay` (key: the run id), the absolute deadline, and what is needed to carry on:
the trigger variables, and for a delay the path inside the actions, the run's variables and
Context. Writes are awaited before the timer counts as armed, so a timer the engine knows of is
in the database when the hub goes down.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .actions import Run


class TimerStore(Protocol):
    async def save_timer(self, row: dict[str, Any]) -> None: ...
    async def delete_timer(self, key: str) -> None: ...
    async def load_timers(self) -> list[dict[str, Any]]: ...


def json_safe(value: Any) -> Any:
    """Round-trip through JSON, dropping what cannot be stored (so a resumed run sees the same)."""
    return json.loads(json.dumps(value, default=str))


def for_key(automation_id: str, trigger_index: int, entity_id: str) -> str:
    return f"for:{automation_id}:{trigger_index}:{entity_id}"


class Timers:
    """The engine's view of the timer table."""

    def __init__(self, store: TimerStore, clock: Any) -> None:
        self.store = store
        self.clock = clock

    async def save_for(self, automation_id: str, trigger_index: int, entity_id: str,
                       deadline: float, trigger: dict[str, Any]) -> str:
        key = for_key(automation_id, trigger_index, entity_id)
        await self.store.save_timer({
            "key": key, "automation_id": automation_id, "kind": "for", "deadline": deadline,
            "created_at": self.clock(),
            "data": json_safe({"trigger_index": trigger_index, "entity_id": entity_id,
                               "trigger": trigger}),
        })
        return key

    async def save_delay(self, run: Run, path: str, deadline: float) -> str:
        key = f"delay:{run.trace.run_id}"
        where = path.split("/")[1:]  # "actions/1/then/0" -> ["1", "then", "0"]
        await self.store.save_timer({
            "key": key, "automation_id": run.automation.id, "kind": "delay",
            "deadline": deadline, "created_at": self.clock(),
            "data": json_safe({"path": where, "variables": {
                k: v for k, v in run.variables.items() if k not in ("trigger", "this")},
                "trigger": run.variables.get("trigger"), "context": run.context.as_dict(),
                "run_id": run.trace.run_id}),
        })
        return key

    async def delete(self, key: str) -> None:
        await self.store.delete_timer(key)

    async def load(self) -> list[dict[str, Any]]:
        return await self.store.load_timers()
