"""`wait_for_trigger`: a run pauses until one of its triggers fires, or a timeout.

Kept apart from the engine's trigger index because a wait is short-lived and private to one
run: it listens on the bus only while it waits, and every listener and timer it made is gone
when it returns (fired, timed out or cancelled).

`for:` has the semantics of a trigger's `for:` (triggers.py decides both): the change that
fires the trigger starts a hold on that entity; a later change that no longer matches cancels
it; when the hold has lasted `for`, the state is checked once more and the wait ends with
`wait.trigger` (its `fired_at` is the engine clock's time). The hold is measured on the
engine's clock. Waits are not persisted: a restart in the middle of a wait interrupts the run
(as it does a delay inside `repeat`); the run's trace shows it cancelled.
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
    handle: asyncio.TimerHandle


class TriggerWait:
    """One `wait_for_trigger` step of one run."""

    def __init__(self, engine: AutomationEngine, confs: list[Mapping[str, Any]]) -> None:
        self.engine = engine
        self.confs = confs
        self.holds: dict[tuple[int, str], WaitHold] = {}
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._unsubs: list[Callable[[], None]] = []

    async def wait(self, timeout: float | None,
                   listening: Callable[[], None] | None = None) -> dict[str, Any] | None:
        """The trigger variables of the first trigger that fired, or None on timeout.

        `listening` is called once every listener is attached (nothing can be missed after).
        """
        try:
            self._listen()
            if listening is not None:
                listening()
            return await asyncio.wait_for(self._done, timeout)
        except TimeoutError:
            return None
        finally:
            self._close()

    def _finish(self, value: dict[str, Any]) -> None:
        if not self._done.done():
            self._done.set_result(value)

    def _close(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        for hold in self.holds.values():
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
                if not matches_now(conf, new, get_state):  # broken before `for` elapsed
                    hold.handle.cancel()
                    del self.holds[key]
                return
            if not fires(conf, old, new, get_state):
                return
            trigger = trigger_vars(conf, index, entity_id, old, new)
            if "for" not in conf:
                self._finish(trigger)
                return
            deadline = self.engine.clock() + conf["for"]
            handle = self._loop.call_later(conf["for"], self._held, key, conf, trigger)
            self.holds[key] = WaitHold(index, entity_id, deadline, handle)

        return on_state

    def _held(self, key: tuple[int, str], conf: Mapping[str, Any],
              trigger: dict[str, Any]) -> None:
        """`for:` has elapsed: the state must still match (as for a trigger's `for:`)."""
        if self.holds.pop(key, None) is None:
            return
        if matches_now(conf, self.engine.get_state(key[1]), self.engine.get_state):
            trigger["fired_at"] = self.engine.clock()
            self._finish(trigger)
