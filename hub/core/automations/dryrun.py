"""Dry run: replay recorded history through an automation's triggers and conditions.

Nothing is called and nothing is written: the states come from the recorder (`states` table),
the clock is simulated (it jumps from one recorded write to the next), and `for:` timers are
deadlines on that simulated clock. The answer lists when the automation would have fired,
the trigger, the conditions' results and the actions it would have taken (service calls with
their data rendered against the replayed states, delays, branches not evaluated).

What is replayed: state, numeric_state and device_offline triggers (from recorded states) and
time / time_pattern triggers (generated over the window). Event, alarm and template triggers
are reported as not replayed.
"""

from __future__ import annotations

import heapq
from typing import Any
from zoneinfo import ZoneInfo

from ..states import State
from .conditions import EvalContext, check_all
from .templates import TemplateError, async_render_data
from .triggers import STATE_KINDS, fires, matches_now, next_fire, trigger_vars, watched_entities

MAX_FIRES = 1000


def _describe(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for action in actions:
        if "action" in action:
            out.append({"call": action["action"], "data": {**action.get("data", {}),
                                                          **action.get("target", {})}})
        elif "delay" in action:
            out.append({"delay": action["delay"]})
        else:
            kind = next(k for k in ("wait_for_trigger", "choose", "if", "repeat", "variables",
                                    "stop", "condition_action") if k in action)
            out.append({kind: "not evaluated in a dry run"})
    return out


async def async_dry_run(hub: Any, conf: dict[str, Any], start: float,
                        end: float) -> dict[str, Any]:
    try:
        zone = ZoneInfo(hub.time_zone)
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    notes: list[str] = []
    entities: set[str] = set()
    timeline: list[tuple[float, int, str, Any]] = []
    seq = 0
    for index, trig in enumerate(conf["triggers"]):
        kind = trig["trigger"]
        if kind in STATE_KINDS:
            entities.update(watched_entities(trig))
        elif kind in ("time", "time_pattern"):
            at = start
            for _ in range(MAX_FIRES):
                nxt = next_fire(trig, at, zone)
                if nxt is None or nxt >= end:
                    break
                seq += 1
                timeline.append((nxt, seq, "time", index))
                at = nxt
        else:
            notes.append(f"triggers[{index}] ({kind}) is not replayed in a dry run")
    for entity_id in sorted(entities):
        for row in await hub.recorder.history(entity_id, start, end):
            seq += 1
            timeline.append((row["last_updated"], seq, "state", (entity_id, row)))
    heapq.heapify(timeline)

    states: dict[str, State] = {}
    get_state = states.get
    pending: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
    fired: list[dict[str, Any]] = []

    async def would_fire(trigger: dict[str, Any], when: float) -> None:
        variables = {**conf.get("variables", {}), "trigger": trigger}
        engine = hub.automations
        ctx = EvalContext(get_state, when, variables, zone,
                          engine.device_project if engine else (lambda _d: None))
        if engine:
            ctx.project_lineage = engine.project_lineage
        ok = await check_all(conf["conditions"], ctx, "conditions")
        entry: dict[str, Any] = {"at": when, "trigger": trigger, "conditions": ctx.results,
                                 "would_fire": ok}
        if ok:
            actions = _describe(conf["actions"])
            for action in actions:
                if "call" in action:
                    try:
                        action["data"] = await async_render_data(action["data"], get_state,
                                                                 variables, now=when)
                    except TemplateError as err:
                        action["template_error"] = str(err)
            entry["actions"] = actions
        fired.append(entry)

    async def run_due(until: float) -> None:
        for key, (deadline, trigger) in sorted(pending.items(), key=lambda kv: kv[1][0]):
            if deadline <= until:
                del pending[key]
                await would_fire({**trigger, "fired_at": deadline}, deadline)

    while timeline and len(fired) < MAX_FIRES:
        when, _seq, kind, payload = heapq.heappop(timeline)
        await run_due(when)
        if kind == "time":
            trig = conf["triggers"][payload]
            await would_fire({"platform": trig["trigger"], "idx": payload, "now": when}, when)
            continue
        entity_id, row = payload
        old = states.get(entity_id)
        new = State(entity_id, row["state"] if row["state"] is not None else "unknown",
                    old.attributes if old else None, last_changed=row["last_changed"],
                    last_updated=row["last_updated"], validate_entity_id=False)
        states[entity_id] = new
        for index, trig in enumerate(conf["triggers"]):
            if trig["trigger"] not in STATE_KINDS or entity_id not in watched_entities(trig):
                continue
            key = (index, entity_id)
            if key in pending:
                if not matches_now(trig, new, get_state):
                    del pending[key]
                continue
            if fires(trig, old, new, get_state):
                trigger = trigger_vars(trig, index, entity_id, old, new)
                if "for" in trig:
                    pending[key] = (when + trig["for"], trigger)
                else:
                    await would_fire(trigger, when)
    await run_due(end)
    return {"automation_id": conf["id"], "start": start, "end": end, "replayed_entities":
            sorted(entities), "runs": fired,
            "fired": [run["at"] for run in fired if run["would_fire"]], "notes": notes}
