"""Traces: what one run of an automation did, step by step, kept where people can read it.

HA keeps the last N traces per automation, so the one interesting run (the night the trip did
not happen) is evicted by a hundred boring ones. Here the store keeps the last N *and* the
latest run of every outcome (fired, condition_false, error, ...), whatever came after, and
keeps them in the database so they survive a restart (hub/storage/automation_store.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..context import ulid_now

OUTCOME_FIRED = "fired"
OUTCOME_CONDITION_FALSE = "condition_false"
OUTCOME_ERROR = "error"
OUTCOME_STOPPED = "stopped"
OUTCOME_CANCELLED = "cancelled"
OUTCOMES = (OUTCOME_FIRED, OUTCOME_CONDITION_FALSE, OUTCOME_ERROR, OUTCOME_STOPPED,
            OUTCOME_CANCELLED)


@dataclass
class Trace:
    """One run. `steps` holds each action as it ran: path, kind, time, result or error."""

    automation_id: str
    trigger: dict[str, Any]
    context: dict[str, Any]
    run_id: str = field(default_factory=ulid_now)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    outcome: str | None = None
    error: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed: bool = False
    #: what "now" is for step times (a dry run's replayed clock; not part of the record)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def step(self, path: str, kind: str, **info: Any) -> dict[str, Any]:
        entry = {"path": path, "kind": kind, "at": self.clock(), **info}
        self.steps.append(entry)
        return entry

    def finish(self, outcome: str, error: str | None = None) -> None:
        self.outcome = outcome
        self.error = error
        self.finished_at = self.clock()

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "automation_id": self.automation_id,
            "outcome": self.outcome, "error": self.error, "started_at": self.started_at,
            "finished_at": self.finished_at, "trigger": self.trigger,
            "context": self.context, "conditions": self.conditions, "steps": self.steps,
            "notes": self.notes, "resumed": self.resumed,
        }


def keep_ids(rows: list[tuple[int, str]], last_n: int) -> set[int]:
    """Of (id, outcome) rows newest first: the ids to keep (last N + latest of each outcome)."""
    keep = {row_id for row_id, _ in rows[:last_n]}
    seen: set[str] = set()
    for row_id, outcome in rows:
        if outcome not in seen:
            seen.add(outcome)
            keep.add(row_id)
    return keep
