"""Conditions: pure checks against a view of the states and a clock.

They take an `EvalContext` rather than the hub, so the same code decides a live run and a dry
run over recorded history (hub/core/automations/dryrun.py), where the "states" are the replayed
ones and "now" is the simulated time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .schema import WEEKDAYS
from .templates import DEFAULT_TIME_LIMIT, async_render, truthy


@dataclass
class EvalContext:
    """Everything a condition may look at."""

    get_state: Callable[[str], Any]
    now: float
    variables: Mapping[str, Any]
    zone: ZoneInfo
    #: device id -> project id (for the `project` condition)
    device_project: Callable[[str], str | None] = lambda _device: None
    time_limit: float = DEFAULT_TIME_LIMIT
    #: project id -> itself and its ancestors, so `project: school-1` covers `school-1-a`
    project_lineage: Callable[[str], Iterable[str]] = lambda project: (project,)
    #: filled as conditions run: (path, result) for the trace
    results: list[dict[str, Any]] = field(default_factory=list)


def _value(state: Any, attribute: str | None) -> Any:
    if state is None:
        return None
    return state.attributes.get(attribute) if attribute else state.state


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _limit(value: Any, get_state: Callable[[str], Any]) -> float | None:
    if isinstance(value, str):
        return _number(_value(get_state(value), None))
    return value


def numeric_matches(conf: Mapping[str, Any], raw: Any, get_state: Callable[[str], Any]) -> bool:
    """above < value < below, both limits optional (an entity id as a limit reads its state)."""
    number = _number(raw)
    if number is None:
        return False
    if "above" in conf:
        above = _limit(conf["above"], get_state)
        if above is None or not number > above:
            return False
    if "below" in conf:
        below = _limit(conf["below"], get_state)
        if below is None or not number < below:
            return False
    return True


def _time_ok(conf: Mapping[str, Any], ctx: EvalContext) -> bool:
    local = datetime.fromtimestamp(ctx.now, ctx.zone)
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    if "weekday" in conf and WEEKDAYS[local.weekday()] not in conf["weekday"]:
        return False
    after, before = conf.get("after"), conf.get("before")
    if after is not None and before is not None and after > before:  # spans midnight
        return seconds >= after or seconds < before
    if after is not None and seconds < after:
        return False
    return not (before is not None and seconds >= before)


def _trigger_device(ctx: EvalContext) -> str | None:
    trigger = ctx.variables.get("trigger") or {}
    if trigger.get("device_id"):
        return str(trigger["device_id"])
    alarm = trigger.get("alarm") or {}
    return alarm.get("device_id")


async def check(conf: Mapping[str, Any], ctx: EvalContext, path: str) -> bool:
    """Evaluate one condition; the result (or error) is appended to `ctx.results`."""
    if not conf.get("enabled", True):
        return True
    kind = conf["condition"]
    result: bool
    if kind == "and":
        result = await check_all(conf["conditions"], ctx, f"{path}/conditions")
    elif kind == "or":
        result = False
        for index, sub in enumerate(conf["conditions"]):
            if await check(sub, ctx, f"{path}/conditions/{index}"):
                result = True
                break
    elif kind == "not":
        result = True
        for index, sub in enumerate(conf["conditions"]):
            if await check(sub, ctx, f"{path}/conditions/{index}"):
                result = False
                break
    elif kind == "state":
        result = all(
            _state_held(ctx.get_state(entity_id), conf, ctx.now) for entity_id in conf["entity_id"]
        )
    elif kind == "numeric_state":
        result = all(
            numeric_matches(conf, _value(ctx.get_state(e), conf.get("attribute")), ctx.get_state)
            for e in conf["entity_id"]
        )
    elif kind == "time":
        result = _time_ok(conf, ctx)
    elif kind == "template":
        rendered = await async_render(conf["value_template"], ctx.get_state, ctx.variables,
                                      ctx.time_limit, ctx.now, ctx.zone)
        result = truthy(rendered.text)
    elif kind == "project":
        if conf.get("device_id"):  # the device named here, whatever triggered the run
            project = ctx.device_project(conf["device_id"])
        else:
            device = _trigger_device(ctx)
            trigger = ctx.variables.get("trigger") or {}
            project = (trigger.get("alarm") or {}).get("project") or (
                ctx.device_project(device) if device else None)
        result = project is not None and any(
            candidate in conf["project"] for candidate in ctx.project_lineage(project))
    else:  # pragma: no cover - the schema admits no other kind
        raise ValueError(f"unknown condition {kind}")
    ctx.results.append({"path": path, "result": result})
    return result


def _state_held(state: Any, conf: Mapping[str, Any], now: float) -> bool:
    value = _value(state, conf.get("attribute"))
    if value is None or str(value) not in conf["state"]:
        return False
    held_for = conf.get("for")
    return held_for is None or (now - state.last_changed) >= held_for


async def check_all(conditions: list[Mapping[str, Any]], ctx: EvalContext, path: str) -> bool:
    for index, conf in enumerate(conditions):
        if not await check(conf, ctx, f"{path}/{index}"):
            return False
    return True
