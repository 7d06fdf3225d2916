"""The automation engine: triggers in, runs out, indexed so an unrelated write costs nothing.

Why it is shaped this way:

* State-based triggers (state, numeric_state, device_offline, template) are indexed by entity
  id. The engine has ONE `state_changed` listener whose `event_filter` is a single dict
  membership test, so with 1,000 automations a write to an entity none of them watches costs
  one function call and one dict lookup (bench/bench_automations.py measures it).
* Matching runs inline (`@callback`); only a trigger that fires schedules work.
* `for:` timers are armed in memory at once and written to `automation_timers` by an ordered
  writer (arm, then cancel, never reordered). On start they are loaded: a timer whose entity
  already has a state is re-checked at once; one whose entity has no state yet (the device has
  not reported since the restart) waits for the first write: matching confirms it (and fires
  it at once if its deadline passed while the hub was down), not matching cancels it. A timer is
  never fired on the strength of a reading from before the restart alone.
* Wiring (hub/hub.py): the engine starts after alarms, hazards and auth and *before* plugins
  set up, so it subscribes before any plugin can write a state or fire an event, and no early
  event is missed. Runs evaluate conditions at once but wait for `async_plugins_ready()`
  (called once plugins have set up) before taking actions, so the services they call exist.
* Each run has its own Context whose parent is the trigger's (actions.Run), and its trace is
  stored (traces.py): last N per automation plus the latest of each outcome.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from ..context import Context
from ..events import EVENT_STATE_CHANGED, ORIGIN_REMOTE, Event, callback
from .actions import Run
from .templates import DEFAULT_TIME_LIMIT, TemplateError, async_render, truthy
from .timers import Timers, TimerStore, for_key, wait_key
from .traces import Trace
from .triggers import (
    STATE_KINDS,
    alarm_event_types,
    alarm_matches,
    breaks_hold,
    event_matches,
    fires,
    matches_now,
    next_fire,
    trigger_vars,
    watched_entities,
)
from .waits import TriggerWait

_LOGGER = logging.getLogger(__name__)

EVENT_AUTOMATION_TRIGGERED = "automation_triggered"
EVENT_AUTOMATION_FINISHED = "automation_finished"
#: alarm record field that dates each transition an alarm trigger can wait for
_TRANSITION_AT = {"acknowledged": "acked_at", "cleared": "cleared_at", "handled": "handled_at",
                  "raised": "started_at"}


class AutomationStore(TimerStore, Protocol):
    async def add_trace(self, automation_id: str, trace: dict[str, Any], keep: int) -> None: ...


@dataclass
class _Watch:
    automation: Automation
    index: int
    conf: Mapping[str, Any]
    #: template triggers: last truth, to fire on false -> true only
    last: bool = False
    #: template triggers: renders run in worker threads; one at a time keeps `last` in order
    render_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Pending:
    """A `for:` timer in flight."""

    watch: _Watch
    entity_id: str
    deadline: float
    trigger: dict[str, Any]
    context: Context | None
    handle: asyncio.TimerHandle | None = None
    #: False after a restart until the entity reports a matching state again
    confirmed: bool = True
    due: bool = False


@dataclass
class Automation:
    """One configured automation and its runs."""

    conf: dict[str, Any]
    engine: AutomationEngine
    running: set[asyncio.Task[Any]] = field(default_factory=set)
    queue: collections.deque[tuple[dict[str, Any], Context | None]] = field(
        default_factory=collections.deque)
    unsubs: list[Callable[[], None]] = field(default_factory=list)
    handles: list[asyncio.TimerHandle] = field(default_factory=list)
    last_triggered: float | None = None
    dropped: int = 0

    @property
    def id(self) -> str:
        return str(self.conf["id"])

    @property
    def enabled(self) -> bool:
        return bool(self.conf.get("enabled", True))

    def trigger(self, trigger: dict[str, Any], context: Context | None) -> None:
        """A trigger fired: start a run as the mode says (single, restart, queued, parallel)."""
        if not self.enabled or self.engine.stopping:
            return
        mode, most = self.conf["mode"], self.conf["max"]
        active = [task for task in self.running if not task.done()]
        if active:
            if mode == "single":
                self.dropped += 1
                _LOGGER.info("Automation %s already running (mode single): trigger dropped",
                             self.id)
                return
            if mode == "restart":
                for task in active:
                    task.cancel()
            elif mode == "parallel" and len(active) >= most:
                self.dropped += 1
                return
            elif mode == "queued":
                if len(self.queue) + len(active) >= most:
                    self.dropped += 1
                    return
                self.queue.append((trigger, context))
                return
        self.start(Run(self.engine, self, trigger, context))

    def start(self, run: Run, **kwargs: Any) -> None:
        self.last_triggered = self.engine.clock()
        self.engine.hub.bus.async_fire(
            EVENT_AUTOMATION_TRIGGERED,
            {"automation_id": self.id, "run_id": run.trace.run_id,
             "trigger": run.variables.get("trigger")}, context=run.context)
        task = asyncio.get_running_loop().create_task(self._run(run, **kwargs),
                                                      name=f"automation {self.id}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, run: Run, **kwargs: Any) -> None:
        try:
            trace = await run.execute(**kwargs)
        except asyncio.CancelledError:
            self.engine.save_trace(self, run.trace)
            raise
        self.engine.save_trace(self, trace)
        self.engine.hub.bus.async_fire(
            EVENT_AUTOMATION_FINISHED,
            {"automation_id": self.id, "run_id": trace.run_id, "outcome": trace.outcome,
             "error": trace.error}, context=run.context)
        if self.queue and not self.engine.stopping:
            trigger, context = self.queue.popleft()
            self.start(Run(self.engine, self, trigger, context))


class AutomationEngine:
    """Holds every automation; see the module docstring for the design."""

    def __init__(self, hub: Any, store: AutomationStore,
                 clock: Callable[[], float] = time.time,
                 time_limit: float = DEFAULT_TIME_LIMIT) -> None:
        self.hub = hub
        self.store = store
        self.clock = clock
        self.time_limit = time_limit
        self.timers = Timers(store, clock)
        self.automations: dict[str, Automation] = {}
        self._state_index: dict[str, list[_Watch]] = {}
        self._pending: dict[str, _Pending] = {}
        self._parents: dict[str, str | None] = {}
        #: template renders in flight (a reference keeps each task alive until it is done)
        self._tasks_hold: set[asyncio.Task[Any]] = set()
        self._parents_of: Any = None  # the `projects` list the parent map was built from
        self._writes: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._unsub_state: Callable[[], None] | None = None
        self._ready = asyncio.Event()
        #: `wait_for_trigger` steps in progress (waits.py)
        self.waits: set[TriggerWait] = set()
        self.stopping = False
        #: persisted timer rows dropped at start because they could not be read
        self.resume_failures = 0

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(getattr(self.hub, "time_zone", "UTC"))
        except (ValueError, KeyError):
            return ZoneInfo("UTC")

    async def async_start(self, confs: list[dict[str, Any]]) -> None:
        """Subscribe, load automations, resume persisted timers (before plugins set up)."""
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(),
                                                              name="automation writer")
        self._unsub_state = self.hub.bus.listen(EVENT_STATE_CHANGED, self._on_state_changed,
                                                event_filter=self._filter)
        for conf in confs:
            await self.async_set(conf)
        await self._resume_timers()

    def async_plugins_ready(self) -> None:
        """Plugins have set up: their services exist, runs may take actions."""
        self._ready.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def async_stop(self) -> None:
        """Cancel runs and timers (rows stay: they resume at the next start), flush writes."""
        self.stopping = True
        tasks = [t for a in self.automations.values() for t in a.running]
        for automation in self.automations.values():
            self._detach(automation, keep_rows=True)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._unsub_state is not None:
            self._unsub_state()
        await self.async_flush()
        if self._writer is not None:
            self._writes.put_nowait(None)
            await self._writer

    async def async_flush(self) -> None:
        """Wait until every queued timer and trace write is in the database."""
        await self._writes.join()

    # -- helpers for runs and conditions --------------------------------------------------------
    def get_state(self, entity_id: str) -> Any:
        return self.hub.states.get(entity_id)

    def device_project(self, device_id: str) -> str | None:
        device = self.hub.devices.get(device_id) if hasattr(self.hub.devices, "get") else None
        return getattr(device, "project", None)

    def project_lineage(self, project_id: str) -> list[str]:
        """The project and its ancestors in the configured tree (a cycle cannot hang it)."""
        parents = self._project_parents()
        lineage: list[str] = []
        current: str | None = project_id
        while current is not None and current not in lineage:
            lineage.append(current)
            current = parents.get(current)
        return lineage

    def _project_parents(self) -> dict[str, str | None]:
        projects = self.hub.config.get("projects") or []
        if self._parents_of is not projects:  # the tree is rebuilt only when config changes
            parents: dict[str, str | None] = {}

            def walk(items: list[dict[str, Any]], parent: str | None) -> None:
                for item in items:
                    parents[item["id"]] = parent
                    walk(item.get("children") or [], item["id"])

            walk(projects, None)
            self._parents, self._parents_of = parents, projects
        return self._parents

    def save_trace(self, automation: Automation, trace: Trace) -> None:
        keep = automation.conf.get("trace", {}).get("stored_traces", 20)
        self._writes.put_nowait(("trace", automation.id, trace.as_dict(), keep))

    # -- automations ------------------------------------------------------------------------------
    async def async_set(self, conf: dict[str, Any]) -> Automation:
        """Add or replace an automation (a replaced one's runs and timers are cancelled)."""
        old = self.automations.get(conf["id"])
        if old is not None:
            await self.async_remove(conf["id"])
        automation = Automation(conf, self)
        self.automations[automation.id] = automation
        if automation.enabled:
            await self._attach(automation)
        return automation

    async def async_remove(self, automation_id: str) -> None:
        automation = self.automations.pop(automation_id, None)
        if automation is None:
            return
        self._detach(automation, keep_rows=False)
        for task in list(automation.running):
            task.cancel()

    async def _attach(self, automation: Automation) -> None:
        bus = self.hub.bus
        for index, conf in enumerate(automation.conf["triggers"]):
            if not conf.get("enabled", True):
                continue
            kind = conf["trigger"]
            watch = _Watch(automation, index, conf)
            if kind in STATE_KINDS:
                for entity_id in watched_entities(conf):
                    self._state_index.setdefault(entity_id, []).append(watch)
            elif kind == "template":
                await self._attach_template(watch)
            elif kind == "event":
                automation.unsubs.append(bus.listen(
                    conf["event_type"], self._event_listener(watch),
                    event_filter=_filter_of(lambda e, c=conf: event_matches(c, e.data))))
            elif kind == "alarm":
                for event_type in alarm_event_types(conf):
                    automation.unsubs.append(bus.listen(
                        event_type, self._alarm_listener(watch),
                        event_filter=_filter_of(lambda e, c=conf: alarm_matches(c, e.data))))
            elif kind in ("time", "time_pattern"):
                self._schedule_time(watch)

    def _detach(self, automation: Automation, keep_rows: bool) -> None:
        for unsub in automation.unsubs:
            unsub()
        automation.unsubs.clear()
        for handle in automation.handles:
            handle.cancel()
        automation.handles.clear()
        for entity_id in list(self._state_index):
            kept = [w for w in self._state_index[entity_id] if w.automation is not automation]
            if kept:
                self._state_index[entity_id] = kept
            else:
                del self._state_index[entity_id]
        for key, pending in list(self._pending.items()):
            if pending.watch.automation is automation:
                self._cancel_pending(key, delete_row=not keep_rows)

    # -- state triggers -----------------------------------------------------------------------------
    @callback
    def _filter(self, event: Event) -> bool:
        # A remote (mirrored) state already triggered the owning worker's automations.
        return event.data["entity_id"] in self._state_index and event.origin != ORIGIN_REMOTE

    @callback
    def _on_state_changed(self, event: Event) -> None:
        entity_id = event.data["entity_id"]
        old, new = event.data["old_state"], event.data["new_state"]
        for watch in self._state_index.get(entity_id, ()):
            conf = watch.conf
            if conf["trigger"] == "template":
                self._spawn(self._eval_template(watch, event.context))
                continue
            key = for_key(watch.automation.id, watch.index, entity_id)
            pending = self._pending.get(key)
            if pending is not None:
                if not breaks_hold(conf, old, new, self.get_state):
                    if not pending.confirmed:
                        pending.confirmed = True
                        if pending.due:
                            self._pending_due(key)
                    continue
                self._cancel_pending(key, delete_row=True)  # this change may start a new one
            if fires(conf, old, new, self.get_state):
                trigger = trigger_vars(conf, watch.index, entity_id, old, new)
                if "for" in conf:
                    self._arm(watch, entity_id, trigger, event.context, self.clock() + conf["for"])
                else:
                    watch.automation.trigger(trigger, event.context)

    def _arm(self, watch: _Watch, entity_id: str, trigger: dict[str, Any],
             context: Context | None, deadline: float, confirmed: bool = True,
             persist: bool = True) -> None:
        key = for_key(watch.automation.id, watch.index, entity_id)
        pending = _Pending(watch, entity_id, deadline, trigger, context, confirmed=confirmed)
        loop = asyncio.get_running_loop()
        pending.handle = loop.call_later(max(0.0, deadline - self.clock()), self._pending_due, key)
        self._pending[key] = pending
        if persist:
            self._writes.put_nowait(("for", watch.automation.id, watch.index, entity_id,
                                     deadline, trigger))

    def _pending_due(self, key: str) -> None:
        pending = self._pending.get(key)
        if pending is None:
            return
        if not pending.confirmed:  # no reading since the restart: wait for one
            pending.due = True
            return
        self._cancel_pending(key, delete_row=True)
        state = self.get_state(pending.entity_id)
        if pending.watch.conf["trigger"] == "template" or matches_now(
                pending.watch.conf, state, self.get_state):
            pending.trigger["fired_at"] = self.clock()
            pending.watch.automation.trigger(pending.trigger, pending.context)

    def _cancel_pending(self, key: str, delete_row: bool) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.handle is not None:
            pending.handle.cancel()
        if delete_row:
            self._writes.put_nowait(("delete", key))

    def pending_timers(self) -> list[dict[str, Any]]:
        return [{"automation_id": p.watch.automation.id, "entity_id": p.entity_id,
                 "deadline": p.deadline, "confirmed": p.confirmed}
                for p in self._pending.values()]

    # -- template triggers ----------------------------------------------------------------------------
    async def _attach_template(self, watch: _Watch) -> None:
        try:
            result = await async_render(watch.conf["value_template"], self.get_state, {},
                                        self.time_limit, self.clock(), self.zone)
        except TemplateError as err:
            _LOGGER.warning("Template trigger of %s failed: %s", watch.automation.id, err)
            return
        watch.last = truthy(result.text)
        for entity_id in result.entities:
            self._state_index.setdefault(entity_id, []).append(watch)

    async def _eval_template(self, watch: _Watch, context: Context | None) -> None:
        async with watch.render_lock:
            await self._eval_template_locked(watch, context)

    async def _eval_template_locked(self, watch: _Watch, context: Context | None) -> None:
        try:
            result = await async_render(watch.conf["value_template"], self.get_state, {},
                                        self.time_limit, self.clock(), self.zone)
        except TemplateError as err:
            _LOGGER.warning("Template trigger of %s failed: %s", watch.automation.id, err)
            return
        # index what this render read too: a template that short-circuited at start (`a and
        # b` with `a` false) reads `b` only now, and a change of `b` must re-evaluate it
        for entity_id in result.entities:
            watches = self._state_index.setdefault(entity_id, [])
            if not any(w is watch for w in watches):
                watches.append(watch)
        now_true = truthy(result.text)
        was, watch.last = watch.last, now_true
        key = for_key(watch.automation.id, watch.index, "template")
        if not now_true:
            self._cancel_pending(key, delete_row=True)
            return
        if was:
            return
        trigger = {"platform": "template", "id": watch.conf.get("id", str(watch.index)),
                   "idx": watch.index}
        if "for" in watch.conf:
            self._arm(watch, "template", trigger, context, self.clock() + watch.conf["for"])
        else:
            watch.automation.trigger(trigger, context)

    # -- event, alarm and time triggers --------------------------------------------------------------
    def _event_listener(self, watch: _Watch) -> Callable[[Event], None]:
        @callback
        def on_event(event: Event) -> None:
            watch.automation.trigger({"platform": "event", "idx": watch.index,
                                      "id": watch.conf.get("id", str(watch.index)),
                                      "event": {"event_type": event.event_type,
                                                "data": _plain(event.data)}}, event.context)

        return on_event

    def _alarm_listener(self, watch: _Watch) -> Callable[[Event], None]:
        @callback
        def on_alarm(event: Event) -> None:
            record = _plain(event.data)
            watch.automation.trigger({"platform": "alarm", "idx": watch.index,
                                      "id": watch.conf.get("id", str(watch.index)),
                                      "event": event.event_type.removeprefix("alarm_"),
                                      "alarm": record, "device_id": record.get("device_id")},
                                     event.context)

        return on_alarm

    def _schedule_time(self, watch: _Watch, after: float | None = None) -> None:
        now = self.clock()
        when = next_fire(watch.conf, now if after is None else max(now, after), self.zone)
        if when is None:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            if watch.automation.id not in self.automations or self.stopping:
                return
            watch.automation.handles[:] = [h for h in watch.automation.handles if h is not handle]
            watch.automation.trigger({"platform": watch.conf["trigger"], "idx": watch.index,
                                      "id": watch.conf.get("id", str(watch.index)),
                                      "now": when}, None)
            # the next slot after this one: the loop's timer is monotonic, so the wall clock
            # may read a hair (or, after an NTP step, more) before `when`, and "the next slot
            # after now" would be this slot again, firing twice
            self._schedule_time(watch, after=when)

        handle = loop.call_later(max(0.0, when - now), fire)
        watch.automation.handles.append(handle)

    # -- wait_for_trigger ----------------------------------------------------------------------------
    async def wait_for_trigger(self, confs: list[Mapping[str, Any]], timeout_at: float | None,
                               listening: Callable[[], None] | None = None,
                               run: Run | None = None, path: str = "",
                               started_at: float | None = None,
                               resumed: Mapping[str, Any] | None = None
                               ) -> dict[str, Any] | None:
        """Wait until one of `confs` fires (holding for its `for:`), or None at `timeout_at`
        (engine clock). With `run`, the wait is a row of `automation_timers` while it lasts
        (waits.py), so a restart resumes it; `resumed` is that row's data."""
        persist = forget = None
        if run is not None:
            begun = self.clock() if started_at is None else started_at

            def persist(holds: list[dict[str, Any]]) -> None:
                self._writes.put_nowait(("timer", self.timers.wait_row(
                    run, path, confs, timeout_at, begun, holds)))

            def forget() -> None:
                self._writes.put_nowait(("delete", wait_key(run)))

        waiting = run.pending_wait if run is not None else None
        if waiting is None:
            waiting = TriggerWait(self, confs)
        else:
            run.pending_wait = None  # listening since the engine's start (_resume_run)
        waiting.set_persistence(persist, forget)
        resumed = resumed or {}
        return await waiting.wait(timeout_at, listening, resumed.get("holds"),
                                  resumed.get("early"))

    async def _seen_while_down(self, confs: list[Mapping[str, Any]],
                               since: float) -> dict[str, Any] | None:
        """An awaited alarm transition the records show happened after the wait began (the
        hub was down when the event would have ended the wait), as its trigger variables."""
        store = getattr(getattr(self.hub, "alarms", None), "store", None)
        for index, conf in enumerate(confs):
            ids = conf.get("alarm_id") if conf.get("trigger") == "alarm" else None
            if not ids or store is None or not isinstance(ids, list):
                continue
            from ..alarms import record_dict

            for row in await store.get_many(ids):
                record = _plain(record_dict(row))
                if not alarm_matches(conf, record):
                    continue
                for name in conf["on"]:
                    at = row.get(_TRANSITION_AT.get(name, ""))
                    if at is not None and float(at) >= since:
                        return {"platform": "alarm", "idx": index, "alarm": record,
                                "event": name, "resumed": True}
        return None

    def pending_wait_timers(self) -> list[dict[str, Any]]:
        """`for:` holds inside waiting runs (deadlines on the engine's clock)."""
        return [{"trigger_index": hold.index, "entity_id": hold.entity_id,
                 "deadline": hold.deadline, "confirmed": hold.confirmed}
                for wait in self.waits for hold in wait.holds.values()]

    # -- persistence ----------------------------------------------------------------------------------
    async def _resume_timers(self) -> None:
        for row in await self.timers.load():
            automation = self.automations.get(row["automation_id"])
            data = row["data"] or {}
            if automation is None or not automation.enabled:
                await self.timers.delete(row["key"])
                continue
            try:
                if row["kind"] == "for":
                    self._resume_for(automation, row, data)
                elif row["kind"] in ("delay", "wait"):
                    await self._resume_run(automation, row, data, row["kind"])
            except (KeyError, TypeError, ValueError) as err:
                # one unreadable row must not stop the hub's start, nor the other rows
                self.resume_failures += 1
                _LOGGER.error("Automation %s: persisted %s %s cannot be resumed (%s: %s); "
                              "dropped", automation.id, row["kind"], row["key"],
                              type(err).__name__, err)
                await self.timers.delete(row["key"])

    def _resume_for(self, automation: Automation, row: dict[str, Any],
                    data: dict[str, Any]) -> None:
        index = int(data["trigger_index"])
        triggers = automation.conf["triggers"]
        if index >= len(triggers) or "for" not in triggers[index]:
            self._writes.put_nowait(("delete", row["key"]))
            return
        watch = next((w for ws in self._state_index.values() for w in ws
                      if w.automation is automation and w.index == index), None)
        if watch is None:
            self._writes.put_nowait(("delete", row["key"]))
            return
        entity_id = data["entity_id"]
        state = self.get_state(entity_id) if entity_id != "template" else None
        if state is not None and not matches_now(watch.conf, state, self.get_state):
            self._writes.put_nowait(("delete", row["key"]))  # broke while the hub was down
            return
        trigger = dict(data.get("trigger") or {})
        trigger["resumed"] = True
        self._arm(watch, entity_id, trigger, None, float(row["deadline"]),
                  confirmed=state is not None, persist=False)

    async def _resume_run(self, automation: Automation, row: dict[str, Any],
                          data: dict[str, Any], kind: str) -> None:
        """A run a restart interrupted in a delay or a wait: continue it there."""
        context = data.get("context") or {}
        parent = Context(user_id=context.get("user_id"), parent_id=context.get("parent_id"),
                         id=context.get("parent_id")) if context.get("parent_id") else None
        trace = Trace(automation.id, data.get("trigger") or {}, {}, run_id=data["run_id"])
        trace.resumed = True
        trace.notes.append("resumed after a restart in the middle of a "
                           + ("delay" if kind == "delay" else "wait_for_trigger"))
        run = Run(self, automation, data.get("trigger") or {}, parent,
                  variables=data.get("variables"), trace=trace)
        trace.context = run.context.as_dict()
        if kind == "wait" and "/repeat/" not in "/".join(map(str, data["path"])):
            # the row stays until the resumed wait ends (it is rewritten as it listens again);
            # the wait listens now, before plugins set up, so nothing they fire is missed
            run.resume_wait = {**data, "started_at": row["created_at"]}
            run.pending_wait = TriggerWait(self, list(data["confs"]))
            try:
                run.pending_wait.listen(data.get("holds"))
                # asked here, in the engine's start (never cancelled half-way through a
                # query), after the wait listens (nothing falls between records and events)
                run.resume_wait["early"] = await self._seen_while_down(
                    run.pending_wait.confs, float(row["created_at"]))
            except BaseException:
                run.pending_wait.close()
                raise
        else:
            self._writes.put_nowait(("delete", row["key"]))
        automation.start(run, resume=list(data["path"]), deadline=float(row["deadline"]))

    async def _write_loop(self) -> None:
        """The one writer: timer rows and traces in the order they were decided."""
        while True:
            item = await self._writes.get()
            try:
                if item is None:
                    return
                kind = item[0]
                if kind == "for":
                    _, automation_id, index, entity_id, deadline, trigger = item
                    await self.timers.save_for(automation_id, index, entity_id, deadline, trigger)
                elif kind == "timer":
                    await self.timers.save(item[1])
                elif kind == "delete":
                    await self.timers.delete(item[1])
                elif kind == "trace":
                    await self.store.add_trace(item[1], item[2], item[3])
            except Exception:
                _LOGGER.exception("Automation store write failed (%s)", item[0] if item else "")
            finally:
                self._writes.task_done()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks_hold.add(task)
        task.add_done_callback(self._tasks_hold.discard)


def _filter_of(fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
    """Mark a lambda as a bus callback (event filters must be)."""
    return callback(fn)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    from .timers import json_safe

    return json_safe(dict(data))
