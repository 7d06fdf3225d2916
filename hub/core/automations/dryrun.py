"""Dry run: replay recorded history through an automation's triggers, conditions and actions.

Nothing is called and nothing is written. One timeline (replay.ReplayStates, a heap ordered
by time) holds everything that happened in the window, taken from what the hub records:

* recorded states (`states` table, `Recorder.history`) of the entities the state-based
  triggers watch and of every entity a template or condition reads (loaded when first read),
  each entity starting from its last reading before the window;
* recorded events (`events` table, `Recorder.events_between`) for event triggers;
* alarm records (`alarms` table, `AlarmStore.transitions`) for alarm triggers: a record's
  `started_at`, `acked_at`, `handled_at` and `cleared_at` are its raised / acknowledged /
  handled / cleared moments, and the record is rebuilt as it stood at each (not yet
  acknowledged when it was raised, and so on). `updated` is not replayed: a record keeps no
  history of its repeats;
* time / time_pattern slots generated over the window;
* template triggers re-rendered at each write of an entity they read, with `now()` at that
  moment, firing on false -> true as live.

The clock is simulated: it jumps from one item to the next, and `for:` timers are deadlines on
it. Triggers are decided by the live code (triggers.py); a trigger that fires is run by
replay.DryRun, the live Run with its calls recorded instead of made, so the report shows the
conditions' results and the actions it would have taken (rendered with the replayed states and
`now()` = the replayed moment), branches decided. Each run is independent (modes are not
simulated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from ..alarms import record_dict
from .replay import ReplayEngine, ReplayStates, async_replay_run
from .templates import DEFAULT_TIME_LIMIT, TemplateError, async_render, truthy
from .timers import json_safe
from .triggers import (
    STATE_KINDS,
    alarm_matches,
    breaks_hold,
    event_matches,
    fires,
    next_fire,
    trigger_vars,
    watched_entities,
)

MAX_FIRES = 1000
#: alarm trigger `on:` -> the record column holding when it happened
_ALARM_MOMENTS = (("raised", "started_at"), ("acknowledged", "acked_at"),
                  ("handled", "handled_at"), ("cleared", "cleared_at"))


def _alarm_as_of(row: Mapping[str, Any], when: float) -> dict[str, Any]:
    """The alarm record as it stood at `when` (later acknowledgement etc. not yet there)."""
    then = dict(row)
    for at, by in (("acked_at", "acked_by"), ("handled_at", "handled_by"),
                   ("cleared_at", "cleared_by")):
        if then.get(at) is not None and then[at] > when:
            then[at] = then[by] = None
    if then.get("cleared_at") is None:
        then["status"] = "active"
    then["last_seen_at"] = min(then.get("last_seen_at") or when, when)
    return json_safe(record_dict(then))


def _alarm_moments(row: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(on, time) of each transition the live engine announces for this record."""
    moments = []
    for name, column in _ALARM_MOMENTS:
        at = row.get(column)
        if at is None:
            continue
        if name == "cleared" and row.get("kind") == "event":
            continue  # a momentary event is stored cleared; only alarm_raised is fired
        if name == "acknowledged" and at == row.get("handled_at"):
            continue  # acknowledged by handling it: live fires alarm_handled only
        moments.append((name, float(at)))
    return moments


class _DryRun:
    """One dry run of one automation over [start, end)."""

    def __init__(self, hub: Any, conf: dict[str, Any], start: float, end: float) -> None:
        self.hub = hub
        self.conf = conf
        self.start = start
        self.end = end
        self.replay = ReplayStates(hub.recorder, start, end)
        self.live = getattr(hub, "automations", None)
        self.time_limit = getattr(self.live, "time_limit", DEFAULT_TIME_LIMIT)
        try:
            self.zone = ZoneInfo(hub.time_zone)
        except (ValueError, KeyError):
            self.zone = ZoneInfo("UTC")
        self.notes: list[str] = []
        self.runs: list[dict[str, Any]] = []
        #: (trigger index, entity id or "template") -> (deadline, trigger variables)
        self.pending: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
        #: template trigger index -> [entities it reads, its last truth]
        self.templates: dict[int, list[Any]] = {}

    def _triggers(self) -> list[tuple[int, dict[str, Any]]]:
        return [(index, trig) for index, trig in enumerate(self.conf["triggers"])
                if trig.get("enabled", True)]

    def _trigger_base(self, index: int, trig: Mapping[str, Any]) -> dict[str, Any]:
        return {"platform": trig["trigger"], "idx": index, "id": trig.get("id", str(index))}

    # -- building the timeline --------------------------------------------------------------------
    async def prepare(self) -> None:
        entities: set[str] = set()
        event_triggers: list[tuple[int, dict[str, Any]]] = []
        alarm_triggers: list[tuple[int, dict[str, Any]]] = []
        for index, trig in self._triggers():
            kind = trig["trigger"]
            if kind in STATE_KINDS:
                entities.update(watched_entities(trig))
                entities.update(_entity_limits(trig))
            elif kind in ("time", "time_pattern"):
                self._time_slots(index, trig)
            elif kind == "event":
                event_triggers.append((index, trig))
            elif kind == "alarm":
                alarm_triggers.append((index, trig))
        entities.update(_condition_entities(self.conf.get("conditions", [])))
        await self.replay.ensure(entities, self.start)
        for index, trig in self._triggers():
            if trig["trigger"] == "template":
                result = await self._render(trig, self.start, index)
                self.templates[index] = [set(result.entities) if result else set(),
                                         bool(result and truthy(result.text))]
        if event_triggers:
            await self._events(event_triggers)
        if alarm_triggers:
            await self._alarms(alarm_triggers)

    def _time_slots(self, index: int, trig: dict[str, Any]) -> None:
        at = self.start
        for _ in range(MAX_FIRES):
            nxt = next_fire(trig, at, self.zone)
            if nxt is None or nxt >= self.end:
                break
            self.replay.push(nxt, "fire", {**self._trigger_base(index, trig), "now": nxt})
            at = nxt

    async def _events(self, triggers: list[tuple[int, dict[str, Any]]]) -> None:
        rows = await self.hub.recorder.events_between(
            {trig["event_type"] for _, trig in triggers}, self.start, self.end)
        for row in rows:
            for index, trig in triggers:
                if row["event_type"] == trig["event_type"] and event_matches(trig, row["data"]):
                    self.replay.push(row["time_fired"], "fire", {
                        **self._trigger_base(index, trig),
                        "event": {"event_type": row["event_type"], "data": row["data"]}})

    async def _alarms(self, triggers: list[tuple[int, dict[str, Any]]]) -> None:
        store = getattr(getattr(self.hub, "alarms", None), "store", None)
        if store is None or not hasattr(store, "transitions"):
            self.notes.append("alarm triggers are not replayed: the hub keeps no alarm records")
            return
        for index, trig in triggers:
            if "updated" in trig["on"]:
                self.notes.append(f"triggers[{index}] on: updated is not replayed (alarm "
                                  "records keep no history of their repeats)")
        for row in await store.transitions(self.start, self.end):
            for name, at in _alarm_moments(row):
                if not self.start <= at < self.end:
                    continue
                record = _alarm_as_of(row, at)
                for index, trig in triggers:
                    if name in trig["on"] and alarm_matches(trig, record):
                        self.replay.push(at, "fire", {
                            **self._trigger_base(index, trig), "event": name, "alarm": record,
                            "device_id": record.get("device_id")})

    # -- replaying -------------------------------------------------------------------------------
    def _engine(self, when: float) -> ReplayEngine:
        return ReplayEngine(self.live, self.hub, self.replay, when, self.zone, self.time_limit)

    async def _render(self, trig: Mapping[str, Any], when: float, index: int) -> Any:
        async def render() -> Any:
            return await async_render(trig["value_template"], self.replay.get_state, {},
                                      self.time_limit, when, self.zone)

        try:
            return await self.replay.settled(when, render)
        except TemplateError as err:
            note = f"triggers[{index}] (template) failed: {err}"
            if note not in self.notes:
                self.notes.append(note)
            return None

    async def run(self) -> dict[str, Any]:
        await self.prepare()
        replay = self.replay
        while replay.timeline and len(self.runs) < MAX_FIRES:
            when, _seq, kind, payload = replay.pop()
            await self._due(when)
            if kind == "fire":
                await self._fire(payload, when)
            elif kind == "state":
                await self._state(when, *payload)
        await self._due(self.end)
        return {"automation_id": self.conf["id"], "start": self.start, "end": self.end,
                "replayed_entities": sorted(replay.known), "runs": self.runs,
                "fired": [run["at"] for run in self.runs if run["would_fire"]],
                "notes": self.notes}

    async def _fire(self, trigger: dict[str, Any], when: float) -> None:
        if len(self.runs) < MAX_FIRES:
            self.runs.append(await async_replay_run(lambda: self._engine(when), self.conf,
                                                    trigger, when))

    async def _due(self, until: float) -> None:
        for key, (deadline, trigger) in sorted(self.pending.items(), key=lambda kv: kv[1][0]):
            if deadline <= until:
                del self.pending[key]
                await self._fire({**trigger, "fired_at": deadline}, deadline)

    async def _state(self, when: float, entity_id: str, row: Mapping[str, Any]) -> None:
        old, new = self.replay.apply(entity_id, row)
        get_state = self.replay.get_state
        for index, trig in self._triggers():
            kind = trig["trigger"]
            if kind == "template":
                watch = self.templates.get(index)
                if watch is not None and entity_id in watch[0]:
                    await self._template(index, trig, when)
                continue
            if kind not in STATE_KINDS or entity_id not in watched_entities(trig):
                continue
            key = (index, entity_id)
            if key in self.pending:
                if not breaks_hold(trig, old, new, get_state):
                    continue
                del self.pending[key]  # as live: this change may start a new hold
            if fires(trig, old, new, get_state):
                trigger = trigger_vars(trig, index, entity_id, old, new)
                if "for" in trig:
                    self.pending[key] = (when + trig["for"], trigger)
                else:
                    await self._fire(trigger, when)

    async def _template(self, index: int, trig: dict[str, Any], when: float) -> None:
        """As the engine's template trigger: fire (or start `for:`) on false -> true."""
        result = await self._render(trig, when, index)
        if result is None:
            return
        watch = self.templates[index]
        watch[0].update(result.entities)
        now_true = truthy(result.text)
        was, watch[1] = watch[1], now_true
        key = (index, "template")
        if not now_true:
            self.pending.pop(key, None)
            return
        if was:
            return
        trigger = self._trigger_base(index, trig)
        if "for" in trig:
            self.pending[key] = (when + trig["for"], trigger)
        else:
            await self._fire(trigger, when)


def _entity_limits(conf: Mapping[str, Any]) -> list[str]:
    """`above: sensor.setpoint`: an entity whose state is the limit."""
    return [conf[key] for key in ("above", "below") if isinstance(conf.get(key), str)]


def _condition_entities(conditions: list[Mapping[str, Any]]) -> set[str]:
    """Entities that state / numeric_state conditions name (templates are found as read)."""
    found: set[str] = set()
    for cond in conditions:
        if cond.get("condition") in ("state", "numeric_state"):
            found.update(cond.get("entity_id", []))
            found.update(_entity_limits(cond))
        found.update(_condition_entities(cond.get("conditions", [])))
    return found


async def async_dry_run(hub: Any, conf: dict[str, Any], start: float,
                        end: float) -> dict[str, Any]:
    """The report of POST /api/automations/{id}/dry_run (see the module docstring)."""
    return await _DryRun(hub, conf, start, end).run()
