"""The event bus: the one place where parts of the hub hear about each other.

Modelled on Home Assistant's bus. Three decisions matter for speed and safety:

* How a listener runs is decided once, when it subscribes (`Job`): a function marked with
  `@callback` runs inline in the event loop, a coroutine function is scheduled as a task, any
  other function runs in the default executor. Nothing is inspected per event.
* An optional `event_filter` (always a plain callback) runs before any work is scheduled, so a
  listener interested in one entity costs one function call per foreign event, not a task.
* A listener that raises is logged with its name and the event type; the others still run.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .context import Context

_LOGGER = logging.getLogger(__name__)

MATCH_ALL = "*"

# `Event.origin`: fired by this hub, or applied from another hub worker's relay (a mirrored
# state, `StateMachine.async_mirror`). Listeners that act on readings (record, trigger, alarm,
# relay) skip remote events: the owning worker did that already.
ORIGIN_LOCAL = "local"
ORIGIN_REMOTE = "remote"

# Event types fired by the core. Plugins may fire their own (document them in their docs page).
EVENT_HUB_START = "hub_start"
EVENT_HUB_STARTED = "hub_started"
EVENT_HUB_STOP = "hub_stop"
EVENT_STATE_CHANGED = "state_changed"
EVENT_STATE_REPORTED = "state_reported"
EVENT_SERVICE_REGISTERED = "service_registered"
EVENT_CALL_SERVICE = "call_service"
EVENT_DEVICE_REGISTRY_UPDATED = "device_registry_updated"
EVENT_ENTITY_REGISTRY_UPDATED = "entity_registry_updated"

# Delivered only to listeners that name them (as in Home Assistant). `state_reported` is only
# fired when someone listens for it by name; without this a MATCH_ALL listener (recorder,
# websocket) would see it or not depending on whether an unrelated listener exists.
EVENTS_EXCLUDED_FROM_MATCH_ALL = frozenset({EVENT_STATE_REPORTED})

_T = TypeVar("_T")


def callback(func: Callable[..., _T]) -> Callable[..., _T]:
    """Mark a function as safe to run inline in the event loop (it must never block)."""
    func._voltwatch_callback = True
    return func


def is_callback(func: Callable[..., Any]) -> bool:
    return getattr(func, "_voltwatch_callback", False) is True


class JobType(enum.Enum):
    CALLBACK = "callback"
    COROUTINE = "coroutine"
    EXECUTOR = "executor"


def _unwrap(func: Callable[..., Any]) -> Callable[..., Any]:
    while isinstance(func, functools.partial):
        func = func.func
    return func


class Job(Generic[_T]):
    """A function together with how it must be run, decided once."""

    __slots__ = ("job_type", "name", "target")

    def __init__(self, target: Callable[..., Any], name: str | None = None) -> None:
        self.target = target
        inner = _unwrap(target)
        self.name = name or getattr(inner, "__qualname__", repr(inner))
        if asyncio.iscoroutinefunction(inner):
            self.job_type = JobType.COROUTINE
        elif is_callback(target) or is_callback(inner):
            self.job_type = JobType.CALLBACK
        else:
            self.job_type = JobType.EXECUTOR

    def __repr__(self) -> str:
        return f"<Job {self.name} {self.job_type.value}>"


class Event:
    """Something that happened: a type, its data, where it came from, when, and why."""

    __slots__ = ("context", "data", "event_type", "origin", "time_fired")

    def __init__(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        origin: str = "local",
        time_fired: float | None = None,
        context: Context | None = None,
    ) -> None:
        self.event_type = event_type
        self.data = data if data is not None else {}
        self.origin = origin
        self.time_fired = time.time() if time_fired is None else time_fired
        self.context = context if context is not None else Context()

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "data": self.data,
            "origin": self.origin,
            "time_fired": self.time_fired,
            "context": self.context.as_dict(),
        }

    def __repr__(self) -> str:
        return f"<Event {self.event_type} {self.data}>"


EventFilter = Callable[[Event], bool]


class _Listener:
    __slots__ = ("event_filter", "job")

    def __init__(self, job: Job[Any], event_filter: EventFilter | None) -> None:
        self.job = job
        self.event_filter = event_filter


class EventBus:
    """Delivers events to listeners of one event type or of all (`MATCH_ALL`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._listeners: dict[str, list[_Listener]] = {}
        self._match_all: list[_Listener] = []
        self._loop = loop
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.listener_errors = 0

    # -- wiring ---------------------------------------------------------------------------
    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the running loop; fire() from other threads is marshalled onto it."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def listen(
        self,
        event_type: str,
        listener: Callable[[Event], Any],
        event_filter: EventFilter | None = None,
    ) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes (safe to call twice)."""
        if event_filter is not None and not is_callback(event_filter):
            raise ValueError("event_filter must be a @callback (it runs inline for every event)")
        entry = _Listener(Job(listener), event_filter)
        if event_type == MATCH_ALL:
            bucket = self._match_all
        else:
            bucket = self._listeners.setdefault(event_type, [])
        # Copy on write: an unsubscribe from inside a listener must not skip a neighbour.
        new = [*bucket, entry]
        if event_type == MATCH_ALL:
            self._match_all = new
        else:
            self._listeners[event_type] = new

        def remove() -> None:
            current = self._match_all if event_type == MATCH_ALL else self._listeners.get(
                event_type, []
            )
            if entry not in current:
                return
            remaining = [item for item in current if item is not entry]
            if event_type == MATCH_ALL:
                self._match_all = remaining
            elif remaining:
                self._listeners[event_type] = remaining
            else:
                del self._listeners[event_type]

        return remove

    def listen_once(
        self, event_type: str, listener: Callable[[Event], Any]
    ) -> Callable[[], None]:
        """Subscribe for exactly one event."""
        job = Job(listener)
        remove: Callable[[], None]

        @callback
        def _once(event: Event) -> None:
            remove()
            self._run(job, event)

        remove = self.listen(event_type, _once)
        return remove

    def listener_count(self) -> dict[str, int]:
        counts = {key: len(value) for key, value in self._listeners.items()}
        if self._match_all:
            counts[MATCH_ALL] = len(self._match_all)
        return counts

    # -- firing ---------------------------------------------------------------------------
    def async_fire(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        origin: str = "local",
        context: Context | None = None,
        time_fired: float | None = None,
    ) -> Event:
        """Fire from inside the event loop. Callbacks have run when this returns."""
        event = Event(event_type, data, origin, time_fired, context)
        self.async_fire_event(event)
        return event

    def async_fire_event(self, event: Event) -> None:
        listeners = self._listeners.get(event.event_type)
        if listeners:
            self._dispatch(listeners, event)
        if self._match_all and event.event_type not in EVENTS_EXCLUDED_FROM_MATCH_ALL:
            self._dispatch(self._match_all, event)

    def fire(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        origin: str = "local",
        context: Context | None = None,
    ) -> None:
        """Fire from any thread (a serial reader, a library callback)."""
        if self._loop is None:
            raise RuntimeError("EventBus is not bound to an event loop yet")
        if threading.get_ident() == self._loop_thread:
            self.async_fire(event_type, data, origin, context)
        else:
            self._loop.call_soon_threadsafe(
                functools.partial(self.async_fire, event_type, data, origin, context)
            )

    def _dispatch(self, listeners: list[_Listener], event: Event) -> None:
        for entry in listeners:
            if entry.event_filter is not None:
                try:
                    if not entry.event_filter(event):
                        continue
                except Exception:
                    self.listener_errors += 1
                    _LOGGER.exception(
                        "Event filter of %s raised on %s", entry.job.name, event.event_type
                    )
                    continue
            job = entry.job
            if job.job_type is JobType.CALLBACK:
                try:
                    job.target(event)
                except Exception:
                    self.listener_errors += 1
                    _LOGGER.exception(
                        "Listener %s raised on event %s", job.name, event.event_type
                    )
            else:
                self._run(job, event)

    def _run(self, job: Job[Any], event: Event) -> None:
        if job.job_type is JobType.CALLBACK:
            try:
                job.target(event)
            except Exception:
                self.listener_errors += 1
                _LOGGER.exception("Listener %s raised on event %s", job.name, event.event_type)
            return
        loop = self._loop or asyncio.get_running_loop()
        if job.job_type is JobType.COROUTINE:
            task = loop.create_task(job.target(event), name=f"listener {job.name}")
        else:
            task = asyncio.ensure_future(loop.run_in_executor(None, job.target, event))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, job, event.event_type))

    def _task_done(self, job: Job[Any], event_type: str, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)  # type: ignore[arg-type]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.listener_errors += 1
            _LOGGER.error(
                "Listener %s raised on event %s", job.name, event_type, exc_info=exc
            )

    async def async_drain(self) -> None:
        """Wait for every listener task scheduled so far (used at shutdown and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
