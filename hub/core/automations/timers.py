"""Persisted deadlines: `for:` timers, delays and waits that survive a restart.

A row per pending deadline (`automation_timers`): kind `for` (key: automation, trigger index,
entity), `delay` or `wait` (key: the run id), the absolute deadline, and what is needed to
carry on: the trigger variables, and for a delay or a wait the path inside the actions, the
run's variables and Context. A wait (`wait_for_trigger`, waits.py) also keeps its bound
triggers, its holds in progress and `timeout_at`; its `deadline` column is that timeout, or
`NO_DEADLINE` for a wait without one. Writes are awaited before the timer counts as armed, so a timer the engine knows of is
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


#: the `deadline` of a wait without a timeout (a column that is never NULL; year 9999)
NO_DEADLINE = 253402300799.0


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
        await self.store.save_timer({
            "key": key, "automation_id": run.automation.id, "kind": "delay",
            "deadline": deadline, "created_at": self.clock(), "data": json_safe(run_data(run, path)),
        })
        return key

    def wait_row(self, run: Run, path: str, confs: list[Any], timeout_at: float | None,
                 started_at: float, holds: list[dict[str, Any]]) -> dict[str, Any]:
        """The row of a run parked in `wait_for_trigger` (saved through the engine's writer)."""
        return {
            "key": wait_key(run), "automation_id": run.automation.id, "kind": "wait",
            "deadline": NO_DEADLINE if timeout_at is None else timeout_at,
            "created_at": started_at,
            "data": json_safe({**run_data(run, path), "confs": confs, "timeout_at": timeout_at,
                               "holds": holds}),
        }

    async def save(self, row: dict[str, Any]) -> None:
        await self.store.save_timer(row)

    async def delete(self, key: str) -> None:
        await self.store.delete_timer(key)

    async def load(self) -> list[dict[str, Any]]:
        return await self.store.load_timers()


def wait_key(run: Run) -> str:
    return f"wait:{run.trace.run_id}"


def run_data(run: Run, path: str) -> dict[str, Any]:
    """What a resumed run needs: where it stood, its variables, trigger and Context."""
    return {"path": path.split("/")[1:],  # "actions/1/then/0" -> ["1", "then", "0"]
            "variables": {k: v for k, v in run.variables.items() if k not in ("trigger", "this")},
            "trigger": run.variables.get("trigger"), "context": run.context.as_dict(),
            "run_id": run.trace.run_id}
