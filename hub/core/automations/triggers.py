"""Trigger matching: pure functions deciding "does this change fire this trigger?".

Kept apart from the engine so the dry run replays recorded history through exactly the code
that decides live. The engine indexes state-based triggers by entity id (see engine.py); this
module never scans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..states import slugify
from .conditions import numeric_matches

#: Trigger kinds decided by state writes (indexed by entity id).
STATE_KINDS = frozenset({"state", "numeric_state", "device_offline"})


def online_entity(device_id: str) -> str:
    """CONTRACTS §4: `binary_sensor.<obj>_online`."""
    return f"binary_sensor.{slugify(device_id)}_online"


def watched_entities(conf: Mapping[str, Any]) -> list[str]:
    if conf["trigger"] == "device_offline":
        return [online_entity(d) for d in conf["device_id"]]
    return list(conf.get("entity_id", []))


def state_dict(state: Any) -> dict[str, Any] | None:
    """A State as JSON-friendly data for trigger variables, traces and persisted timers."""
    if state is None:
        return None
    return {"entity_id": state.entity_id, "state": state.state,
            "attributes": dict(state.attributes), "last_changed": state.last_changed,
            "last_updated": state.last_updated}


def _value(state: Any, attribute: str | None) -> Any:
    if state is None:
        return None
    return state.attributes.get(attribute) if attribute else state.state


def matches_now(conf: Mapping[str, Any], state: Any, get_state: Callable[[str], Any]) -> bool:
    """Does the current state satisfy the trigger's target (used to hold or re-check a `for:`)."""
    kind = conf["trigger"]
    if state is None:
        return False
    if kind == "numeric_state":
        return numeric_matches(conf, _value(state, conf.get("attribute")), get_state)
    if kind == "device_offline":
        return state.state == "off"
    to = conf.get("to")
    if to is None:
        return True
    value = _value(state, conf.get("attribute"))
    return str(value) in (to if isinstance(to, list) else [to])


def breaks_hold(conf: Mapping[str, Any], old: Any, new: Any,
                get_state: Callable[[str], Any]) -> bool:
    """Does the change old -> new end a `for:` hold in progress? When the target is no longer
    met; and for a `state` trigger without `to` ("changed, and stayed so for `for`"), when the
    watched value changes again (that change may start a hold of its own). The first reading
    after a restart (`old` None) is no change: it confirms a resumed hold."""
    if not matches_now(conf, new, get_state):
        return True
    if conf["trigger"] == "state" and conf.get("to") is None and old is not None:
        attribute = conf.get("attribute")
        return bool(_value(old, attribute) != _value(new, attribute))
    return False


def fires(conf: Mapping[str, Any], old: Any, new: Any, get_state: Callable[[str], Any]) -> bool:
    """Does the change old -> new fire the trigger (start its `for:` when it has one)?"""
    kind = conf["trigger"]
    if new is None:
        return False
    if kind == "numeric_state":
        return matches_now(conf, new, get_state) and not matches_now(conf, old, get_state)
    if kind == "device_offline":
        return new.state == "off" and (old is None or old.state != "off")
    attribute = conf.get("attribute")
    old_value, new_value = _value(old, attribute), _value(new, attribute)
    if old is not None and old_value == new_value:
        return False
    frm = conf.get("from")
    if frm is not None and str(old_value) not in (frm if isinstance(frm, list) else [frm]):
        return False
    return matches_now(conf, new, get_state)


def trigger_vars(conf: Mapping[str, Any], index: int, entity_id: str, old: Any,
                 new: Any) -> dict[str, Any]:
    data = {"platform": conf["trigger"], "id": conf.get("id", str(index)), "idx": index,
            "entity_id": entity_id, "from_state": state_dict(old), "to_state": state_dict(new)}
    if conf["trigger"] == "device_offline":
        data["device_id"] = next((d for d in conf["device_id"] if online_entity(d) == entity_id),
                                 None)
    if new is not None:
        data["device_id"] = data.get("device_id") or new.attributes.get("device_id")
    if "for" in conf:
        data["for"] = conf["for"]
    return data


_ALARM_EVENTS = {"raised": "alarm_raised", "acknowledged": "alarm_acknowledged",
                 "cleared": "alarm_cleared", "handled": "alarm_handled",
                 "updated": "alarm_updated"}


def alarm_event_types(conf: Mapping[str, Any]) -> list[str]:
    return [_ALARM_EVENTS[name] for name in conf["on"]]


def alarm_matches(conf: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    for key, field in (("type", "type"), ("kind", "kind"), ("severity", "severity"),
                       ("device_id", "device_id"), ("project", "project")):
        if key in conf and record.get(field) not in conf[key]:
            return False
    if "alarm_id" in conf:
        ids = conf["alarm_id"]
        if not isinstance(ids, list) or record.get("id") not in ids:
            return False  # an unrendered template (top-level trigger) matches nothing
    return True


def event_matches(conf: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    return all(data.get(key) == value for key, value in conf.get("event_data", {}).items())


def _pattern_values(text: str, limit: int) -> list[int]:
    if text == "*":
        return list(range(limit))
    if text.startswith("/"):
        return list(range(0, limit, int(text[1:])))
    return [int(text)]


def next_fire(conf: Mapping[str, Any], after: float, zone: ZoneInfo) -> float | None:
    """The next time (unix seconds, strictly after `after`) a time/time_pattern trigger fires."""
    local = datetime.fromtimestamp(after, zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if conf["trigger"] == "time":
        for day in range(3):
            base = midnight + timedelta(days=day)
            for seconds in sorted(conf["at"]):
                candidate = (base.replace(tzinfo=None) + timedelta(seconds=seconds)).replace(
                    tzinfo=zone).timestamp()
                if candidate > after:
                    return candidate
        return None
    hours = _pattern_values(conf["hours"], 24)
    minutes = _pattern_values(conf["minutes"], 60)
    seconds = _pattern_values(conf["seconds"], 60)
    for day in range(3):
        base = (midnight + timedelta(days=day)).replace(tzinfo=None)
        today = day == 0
        for hour in hours:
            if today and hour < local.hour:
                continue
            for minute in minutes:
                if today and hour == local.hour and minute < local.minute:
                    continue
                for second in seconds:
                    candidate = (base + timedelta(hours=hour, minutes=minute, seconds=second)
                                 ).replace(tzinfo=zone).timestamp()
                    if candidate > after:
                        return candidate
    return None
