"""`wait_for_trigger`: a run pauses until one of its triggers fires, or a timeout.

Kept apart from the engine's trigger index because a wait is short-lived and private to one
run: it listens on the bus only while it waits, and every listener and timer it made is gone
when it returns (fired, timed out or cancelled).

`for:` has the semantics of a trigger's `for:` (triggers.py decides both): the change that
fires the trigger starts a hold on that entity; a later change that no longer matches cancels
it; when the hold has lasted `for`, the state is checked once more and the wait ends with
`wait.trigger` (its `fired_at` is the engine clock's time). The hold is measured on the
engine's clock.

Persistence (the issue: "`for:` timers and delays survive a restart"): a wait of a run is a row
of `automation_timers` (kind `wait`, timers.py) while it listens: its triggers as bound when it
started (a templated `alarm_id` already rendered), the absolute timeout deadline, the holds in
progress, and the run's path, variables and Context. Every change goes through the engine's
ordered writer (save on start and on each hold change, delete when the wait ends), so the row
always describes the latest wait. A hub stop keeps the row; the next start resumes the run in
the same wait (engine.py `_resume_wait`): a timeout that passed while the hub was down ends the
wait at once; an awaited alarm transition (acknowledged, cleared, handled) that the alarm
record shows happened after the wait began ends it as if the event had been seen; a hold is
re-armed with its original deadline but, as a `for:` timer, needs a matching reading after the
restart before it may end the wait. A wait inside `repeat` is not persisted (the loop state is
not), and a restart interrupts that run (its trace says cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..events import EVENT_STATE_CHANGED, Event, callback
from .timers import json_safe
from .triggers import (
    STATE_KINDS,
    alarm_event_types,
    alarm_matches,
    breaks_hold,
    event_matches,
    fires,
    matches_now,
    trigger_vars,
    watched_entities,
)

if TYPE_CHECKING:
    from .engine import AutomationEngine


@dataclass
class WaitHold:
    """A `for:` in progress inside a wait (the engine lists them in `pending_wait_timers`)."""

    index: int
    entity_id: str
    deadline: float
    handle: asyncio.TimerHandle | None
    trigger: dict[str, Any]
    #: False after a restart until the entity reports a matching state again
    confirmed: bool = True
    #: the deadline passed while unconfirmed: end the wait at the confirming reading
    due: bool = False

    def as_row(self) -> dict[str, Any]:
        return {"index": self.index, "entity_id": self.entity_id, "deadline": self.deadline,
                "trigger": self.trigger}


class TriggerWait:
    """One `wait_for_trigger` step of one run."""

    def __init__(self, engine: AutomationEngine, confs: list[Mapping[str, Any]]) -> None:
        self.engine = engine
        self.confs = confs
        self.holds: dict[tuple[int, str], WaitHold] = {}
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._unsubs: list[Callable[[], None]] = []
        #: write the wait's row (with these holds) / delete it; None: not persisted
        self._persist: Callable[[list[dict[str, Any]]], None] | None = None
        self._forget: Callable[[], None] | None = None
        self._listening = False

    def listen(self, holds: list[Mapping[str, Any]] | None = None) -> None:
        """Attach the listeners (and re-arm persisted `holds`); once only. A resumed wait
        listens from the engine's start, before any plugin can fire what it waits for."""
        if self._listening:
            return
        self._listening = True
        self._listen()
        for row in holds or ():
            self._resume_hold(row)

    def set_persistence(self, persist: Callable[[list[dict[str, Any]]], None] | None,
                        forget: Callable[[], None] | None) -> None:
        self._persist, self._forget = persist, forget

    def close(self) -> None:
        """A wait that listened but never waited (its run was cancelled first)."""
        self._close()

    async def wait(self, timeout_at: float | None,
                   listening: Callable[[], None] | None = None,
                   holds: list[Mapping[str, Any]] | None = None,
                   early: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The trigger variables of the first trigger that fired, or None on timeout.

        `timeout_at` is a deadline on the engine's clock. `holds` are persisted holds to
        re-arm (a resumed wait), `early` a result known before listening (an alarm already
        acknowledged while the hub was down). `listening` is called once every listener is
        attached and the row is queued for writing (nothing can be missed after).
        """
        try:
            self.listen(holds)
            if early is not None:
                self._finish(early)
            self._save()
            if listening is not None:
                listening()
            timeout = None if timeout_at is None else max(0.0, timeout_at - self.engine.clock())
            if timeout == 0.0 and not self._done.done():
                return None  # the deadline passed (while the hub was down)
            return await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            return self._done.result() if self._done.done() else None
        finally:
            self._close()
            if self._forget is not None and not self.engine.stopping:
                self._forget()  # a hub stop keeps the row: the next start resumes the wait

    def _save(self) -> None:
        if self._persist is not None:
            self._persist([hold.as_row() for hold in self.holds.values()])

    def _finish(self, value: dict[str, Any]) -> None:
        if not self._done.done():
            self._done.set_result(value)

    def _close(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        for hold in self.holds.values():
            if hold.handle is not None:
                hold.handle.cancel()
        self.holds.clear()
        self.engine.waits.discard(self)

    def _listen(self) -> None:
        bus = self.engine.hub.bus
        self.engine.waits.add(self)
        for index, conf in enumerate(self.confs):
            kind = conf["trigger"]
            if kind in STATE_KINDS:
                entities = set(watched_entities(conf))
                self._unsubs.append(bus.listen(
                    EVENT_STATE_CHANGED, self._state_listener(index, conf),
                    event_filter=callback(lambda e, ids=entities: e.data["entity_id"] in ids)))
            elif kind == "event":
                self._unsubs.append(bus.listen(
                    conf["event_type"], self._event_listener(index, "event"),
                    event_filter=callback(lambda e, c=conf: event_matches(c, e.data))))
            elif kind == "alarm":
                for event_type in alarm_event_types(conf):
                    self._unsubs.append(bus.listen(
                        event_type, self._event_listener(index, "alarm"),
                        event_filter=callback(lambda e, c=conf: alarm_matches(c, e.data))))
            else:
                raise ValueError(f"wait_for_trigger does not support {kind} triggers")

    def _event_listener(self, index: int, platform: str) -> Callable[[Event], None]:
        @callback
        def on_event(event: Event) -> None:
            data = json_safe(dict(event.data))
            if platform == "event":
                self._finish({"platform": "event", "idx": index,
                              "event": {"event_type": event.event_type, "data": data}})
            else:
                self._finish({"platform": "alarm", "idx": index, "alarm": data,
                              "event": event.event_type.removeprefix("alarm_")})

        return on_event

    def _state_listener(self, index: int, conf: Mapping[str, Any]) -> Callable[[Event], None]:
        get_state = self.engine.get_state

        @callback
        def on_state(event: Event) -> None:
            entity_id = event.data["entity_id"]
            old, new = event.data["old_state"], event.data["new_state"]
            key = (index, entity_id)
            hold = self.holds.get(key)
            if hold is not None:
                if not breaks_hold(conf, old, new, get_state):
                    if not hold.confirmed:  # the first matching reading since the restart
                        hold.confirmed = True
                        if hold.due:
                            self._held(key, conf, hold.trigger)
                    return
                if hold.handle is not None:  # broken before `for` elapsed
                    hold.handle.cancel()
                del self.holds[key]
                self._save()
            if not fires(conf, old, new, get_state):
                return
            trigger = trigger_vars(conf, index, entity_id, old, new)
            if "for" not in conf:
                self._finish(trigger)
                return
            deadline = self.engine.clock() + conf["for"]
            handle = self._loop.call_later(conf["for"], self._held, key, conf, trigger)
            self.holds[key] = WaitHold(index, entity_id, deadline, handle, trigger)
            self._save()

        return on_state

    def _resume_hold(self, row: Mapping[str, Any]) -> None:
        """A hold persisted before a restart: its original deadline, confirmed only by a
        matching reading (one already here, or the next); a reading that does not match
        cancels it. A pre-restart reading alone never ends the wait."""
        index, entity_id = int(row["index"]), str(row["entity_id"])
        if index >= len(self.confs) or "for" not in self.confs[index]:
            return
        conf = self.confs[index]
        state = self.engine.get_state(entity_id)
        if state is not None and not matches_now(conf, state, self.engine.get_state):
            return  # broken while the hub was down
        key = (index, entity_id)
        trigger = dict(row.get("trigger") or {})
        trigger["resumed"] = True
        deadline = float(row["deadline"])
        handle = self._loop.call_later(max(0.0, deadline - self.engine.clock()),
                                       self._held, key, conf, trigger)
        self.holds[key] = WaitHold(index, entity_id, deadline, handle, trigger,
                                   confirmed=state is not None)

    def _held(self, key: tuple[int, str], conf: Mapping[str, Any],
              trigger: dict[str, Any]) -> None:
        """`for:` has elapsed: the state must still match (as for a trigger's `for:`)."""
        hold = self.holds.get(key)
        if hold is None:
            return
        if not hold.confirmed:  # no reading since the restart: the next one decides
            hold.due, hold.handle = True, None
            return
        del self.holds[key]
        if matches_now(conf, self.engine.get_state(key[1]), self.engine.get_state):
            trigger["fired_at"] = self.engine.clock()
            self._finish(trigger)
        else:
            self._save()
