"""Hazard reminders (隐患提醒): what nobody has dealt with in time becomes a `reminder` event.

Three reasons:

| reason | late when |
|---|---|
| `alarm_unacknowledged` | an active alarm (or fault) is unacknowledged `reminders.alarm_unacknowledged` (10 min) after it started |
| `workorder_overdue` | a work order is still created / dispatched / accepted after its `due_at` |
| `patrol_overdue` | a patrol round is still pending after its `due_at` |

Why it is built this way:

* One task wakes every `reminders.interval` (60 s) and runs one indexed query per reason
  that returns only what is late; nothing is kept in memory between checks, so a restart or
  a second hub on the same database loses nothing.
* A reminder is fired once per threshold crossing. That it was sent is persisted *before* it
  is fired (`reminders_sent`, claimed with a conditional upsert), so a restart does not repeat
  it and two hubs do not both send it. An object that stops being late (acknowledged,
  repaired, done) has its row released, so its next crossing (a due time moved and missed
  again, counted by the threshold it crossed) reminds again. `reminders.repeat` re-sends
  while the condition lasts.
* Reminders are grouped per (reason, project): one event with the ids of everything that
  became late in that project, which is what a duty officer's SMS should say ("3 条报警超过
  10 分钟未确认"), not one message per alarm. Delivery is the notification issue's job; this
  module only decides and fires.

Event `reminder`: {reason, project, ids, count, repeat, items, message, message_en}.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .context import Context
from .hazard_config import REMINDERS_SCHEMA
from .states import iso

_LOGGER = logging.getLogger(__name__)

EVENT_REMINDER = "reminder"
ALARM_UNACKNOWLEDGED = "alarm_unacknowledged"
WORKORDER_OVERDUE = "workorder_overdue"
PATROL_OVERDUE = "patrol_overdue"
REASONS: tuple[str, ...] = (ALARM_UNACKNOWLEDGED, WORKORDER_OVERDUE, PATROL_OVERDUE)

#: The service's time source; tests replace it (or pass `clock=`) to cross thresholds.
CLOCK: Callable[[], float] = time.time


class ReminderStore(Protocol):
    """Implemented by hub.storage.reminder_store.SqlReminderStore."""

    async def unacknowledged_alarms(self, started_before: float,
                                    kinds: Sequence[str]) -> list[dict[str, Any]]: ...

    async def overdue_workorders(self, now: float) -> list[dict[str, Any]]: ...

    async def overdue_patrols(self, now: float) -> list[dict[str, Any]]: ...

    async def claim(self, reason: str, thresholds: dict[int, float], now: float,
                    repeat: float) -> dict[int, int]: ...

    async def release_others(self, reason: str, keep: Sequence[int]) -> int: ...

    async def sent(self, reason: str) -> list[dict[str, Any]]: ...


def _duration_words(seconds: float) -> tuple[str, str]:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} 小时", f"{int(seconds // 3600)} h"
    return f"{seconds / 60:g} 分钟", f"{seconds / 60:g} min"


def _messages(reason: str, count: int, delay: float) -> tuple[str, str]:
    if reason == ALARM_UNACKNOWLEDGED:
        zh, en = _duration_words(delay)
        return (f"{count} 条报警超过 {zh}未确认",
                f"{count} alarm{'s' if count != 1 else ''} unacknowledged for over {en}")
    if reason == WORKORDER_OVERDUE:
        return (f"{count} 个工单已超期",
                f"{count} work order{'s' if count != 1 else ''} overdue")
    return (f"{count} 个巡检任务已超期",
            f"{count} patrol round{'s' if count != 1 else ''} overdue")


class ReminderService:
    """See the module docstring. `hub.reminders` once the hub started."""

    def __init__(self, hub: Any, config: dict[str, Any] | None, store: ReminderStore,
                 clock: Callable[[], float] | None = None) -> None:
        conf = REMINDERS_SCHEMA(dict(config or {}))
        self.hub = hub
        self.store = store
        self.clock: Callable[[], float] = clock or (lambda: CLOCK())
        self.enabled: bool = conf["enabled"]
        self.interval: float = conf["interval"]
        self.alarm_delay: float = conf["alarm_unacknowledged"]
        self.alarm_kinds: tuple[str, ...] = tuple(conf["alarm_kinds"])
        self.repeat: float = conf["repeat"]
        self.fired_total = 0
        self.check_errors = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def async_start(self) -> None:
        if self.enabled:
            self._task = self.hub.create_task(self._loop(), "hazard reminders")

    async def async_stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            # A check in progress holds the lock and may be inside a write transaction: let
            # it commit first. Cancelled mid-transaction, its connection kept SQLite's write
            # lock past the hub's stop, and the next start failed with "database is locked".
            async with self._lock:
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.async_check()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the database may come back next time
                self.check_errors += 1
                if self.check_errors % 10 == 1:
                    _LOGGER.error("Reminder check failed (%s: %s); retrying in %.0f s",
                                  type(err).__name__, err, self.interval)
            await asyncio.sleep(self.interval)

    async def async_check(self) -> list[dict[str, Any]]:
        """Look for what became late and fire its reminders; returns the events' data.

        Safe to call at any time (tests call it with an injected clock); checks never overlap.
        """
        async with self._lock:
            now = self.clock()
            fired: list[dict[str, Any]] = []
            alarms = await self.store.unacknowledged_alarms(now - self.alarm_delay,
                                                            self.alarm_kinds)
            fired += await self._remind(ALARM_UNACKNOWLEDGED, alarms, "started_at", now)
            orders = await self.store.overdue_workorders(now)
            fired += await self._remind(WORKORDER_OVERDUE, orders, "due_at", now)
            rounds = await self.store.overdue_patrols(now)
            fired += await self._remind(PATROL_OVERDUE, rounds, "due_at", now)
            return fired

    async def _remind(self, reason: str, rows: list[dict[str, Any]], threshold_key: str,
                      now: float) -> list[dict[str, Any]]:
        thresholds = {int(row["id"]): float(row[threshold_key]) for row in rows}
        # Steady state (everything late already reminded) costs one read, no writes.
        sent = {int(r["object_id"]): r for r in await self.store.sent(reason)}
        due = {
            object_id: threshold for object_id, threshold in thresholds.items()
            if object_id not in sent
            or float(sent[object_id]["threshold_at"]) != threshold
            or (self.repeat > 0 and now - float(sent[object_id]["last_sent_at"]) >= self.repeat)
        }
        won = await self.store.claim(reason, due, now, self.repeat) if due else {}
        if set(sent) - set(thresholds):
            await self.store.release_others(reason, list(thresholds))
        if not won:
            return []
        groups: dict[tuple[str | None, bool], list[dict[str, Any]]] = {}
        for row in rows:
            count = won.get(int(row["id"]))
            if count is not None:
                groups.setdefault((row.get("project"), count > 1), []).append(row)
        fired = []
        context = Context()
        for (project, repeat), items in groups.items():
            message, message_en = _messages(reason, len(items), self.alarm_delay)
            data = {
                "reason": reason,
                "project": project,
                "ids": [int(item["id"]) for item in items],
                "count": len(items),
                "repeat": repeat,
                "items": [_item(item) for item in items],
                "message": message,
                "message_en": message_en,
            }
            self.hub.bus.async_fire(EVENT_REMINDER, data, context=context)
            self.fired_total += 1
            fired.append(data)
        _LOGGER.info("Reminders: %s for %d item(s)", reason, len(won))
        return fired


def _item(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_at") and isinstance(value, int | float):
            out[key] = iso(float(value))
        else:
            out[key] = value
    return out
