"""The automation schema (voluptuous), and errors that name the automation, path and reason.

Home Assistant's shape is kept where users know it (`triggers`/`conditions`/`actions`, the
`trigger:` key naming a trigger's type, `action: domain.service`), with the old spellings
(`trigger`/`condition`/`action` as list keys, `platform:`, `service:`) accepted and
normalised, so examples copied from HA documentation work.

`validate_automations(raw)` checks a whole list and returns every issue at once, each a
`ConfigIssue` with file:line when the automation came from YAML (hub/core/yaml_loader.py keeps
the lines): `automations.yaml:14: automations[1].triggers[0].above: automation 'trip_on_leak':
expected a number`.
"""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol

from ..config import ConfigIssue, duration
from ..yaml_loader import locate
from .templates import validate_template

MODES = ("single", "restart", "queued", "parallel")
ALARM_EVENTS = ("raised", "acknowledged", "cleared", "handled", "updated")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_SERVICE = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")


def automation_id(value: Any) -> str:
    text = str(value)
    if not _ID.match(text):
        raise vol.Invalid(f"invalid automation id {text!r}: letters, digits, '-', '_', '.'")
    return text


def entity_ids(value: Any) -> list[str]:
    """One entity id or a list (a comma-separated string too, as HA accepts)."""
    items = value if isinstance(value, list) else str(value).split(",")
    out = [str(item).strip() for item in items if str(item).strip()]
    if not out:
        raise vol.Invalid("expected at least one entity id")
    for item in out:
        if "." not in item:
            raise vol.Invalid(f"invalid entity id {item!r} (expected domain.object_id)")
    return out


def time_of_day(value: Any) -> int:
    """`HH:MM[:SS]` -> seconds after midnight (YAML 1.1 may hand an unquoted `18:30` over as an int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 sexagesimal (unquoted, no leading zero): 18:30 -> 1110 (H*60+M) and
        # 18:30:15 -> 66615 (H*3600+M*60+S); a two-part time is below 24*60, a three-part one
        # (hours >= 1) at least 3600. `08:30` (leading zero) stays a string.
        seconds = value if value >= 3600 else value * 60
        if not 0 <= seconds < 86400:
            raise vol.Invalid(f"expected a time of day such as 08:30 or 22:00:05, got {value!r}")
        return seconds
    match = _TIME.match(str(value).strip())
    if not match:
        raise vol.Invalid(f"expected a time of day such as 08:30 or 22:00:05, got {value!r}")
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + int(match.group(3) or 0)


def service_name(value: Any) -> str:
    text = str(value).strip().lower()
    if not _SERVICE.match(text):
        raise vol.Invalid(f"expected domain.service, e.g. notify.sms, got {value!r}")
    return text


def _pattern(limit: int) -> Any:
    """time_pattern fields: `*`, a number, or `/N` (every N)."""

    def check(value: Any) -> str:
        text = str(value).strip()
        if text == "*":
            return text
        body = text.removeprefix("/")
        if not body.isdigit() or int(body) >= limit or (text.startswith("/") and int(body) == 0):
            raise vol.Invalid(f"expected *, a number below {limit} or /N, got {value!r}")
        return text

    return check


def _to_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise vol.Invalid("expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise vol.Invalid(f"expected a number, got {value!r}") from None


def _number_or_entity(value: Any) -> float | str:
    if isinstance(value, str) and "." in value and not value.replace(".", "", 1).lstrip("-").isdigit():
        return value
    return _number(value)


def _above_or_below(conf: dict[str, Any]) -> dict[str, Any]:
    if "above" not in conf and "below" not in conf:
        raise vol.Invalid("give above, below or both")
    return conf


def _normalise(kind_key: str, old_key: str) -> Any:
    """`platform: state` -> `trigger: state`; `service:` -> `action:` (HA's older spellings)."""

    def fix(value: Any) -> Any:
        if isinstance(value, dict) and old_key in value and kind_key not in value:
            value = dict(value)
            value[kind_key] = value.pop(old_key)
        return value

    return fix


def _alarm_ids(value: Any) -> Any:
    """Alarm record ids, or a template (`{{ trigger.alarm.id }}`) rendered when a wait starts."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return validate_template(value)
    return vol.Schema([vol.Coerce(int)])(_to_list(value))


def _yaml11_on(value: Any) -> Any:
    """YAML 1.1 reads the key `on:` as the boolean True; take it back as `on`."""
    if isinstance(value, dict) and True in value and "on" not in value:
        value = dict(value)
        value["on"] = value.pop(True)
    return value


_BASE_TRIGGER = {vol.Optional("id"): str, vol.Optional("enabled", default=True): bool}
_FOR = vol.All(duration, vol.Range(max=30 * 86400))

TRIGGER_SCHEMAS: dict[str, vol.Schema] = {
    "state": vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "state",
        vol.Required("entity_id"): entity_ids,
        vol.Optional("from"): vol.Any(None, str, [str]),
        vol.Optional("to"): vol.Any(None, str, [str]),
        vol.Optional("attribute"): str,
        vol.Optional("for"): _FOR,
    }),
    "numeric_state": vol.All(vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "numeric_state",
        vol.Required("entity_id"): entity_ids,
        vol.Optional("above"): _number_or_entity,
        vol.Optional("below"): _number_or_entity,
        vol.Optional("attribute"): str,
        vol.Optional("for"): _FOR,
    }), _above_or_below),
    "event": vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "event",
        vol.Required("event_type"): vol.All(str, vol.Length(min=1)),
        vol.Optional("event_data", default={}): dict,
    }),
    "alarm": vol.All(_yaml11_on, vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "alarm",
        vol.Optional("on", default=["raised"]): vol.All(_to_list, [vol.In(ALARM_EVENTS)]),
        vol.Optional("type"): vol.All(_to_list, [str]),
        vol.Optional("kind"): vol.All(_to_list, [vol.In(("alarm", "fault", "event"))]),
        vol.Optional("severity"): vol.All(_to_list, [str]),
        vol.Optional("device_id"): vol.All(_to_list, [str]),
        vol.Optional("project"): vol.All(_to_list, [str]),
        # One alarm record: ids, or (inside wait_for_trigger) a template rendered when the
        # wait starts, e.g. "{{ trigger.alarm.id }}" — wait for *this* alarm's acknowledgement.
        vol.Optional("alarm_id"): _alarm_ids,
    })),
    "time": vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "time",
        vol.Required("at"): vol.All(_to_list, [time_of_day]),
    }),
    "time_pattern": vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "time_pattern",
        vol.Optional("hours", default="*"): _pattern(24),
        vol.Optional("minutes", default="*"): _pattern(60),
        vol.Optional("seconds", default="0"): _pattern(60),
    }),
    "device_offline": vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "device_offline",
        vol.Required("device_id"): vol.All(_to_list, [str]),
        vol.Optional("for"): _FOR,
    }),
    "template": vol.Schema({
        **_BASE_TRIGGER, vol.Required("trigger"): "template",
        vol.Required("value_template"): validate_template,
        vol.Optional("for"): _FOR,
    }),
}


def _by_kind(kind_key: str, schemas: dict[str, Any], what: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise vol.Invalid(f"expected a {what} mapping")
        kind = value.get(kind_key)
        schema = schemas.get(kind)
        if schema is None:
            raise vol.Invalid(
                f"unknown {what} type {kind!r} (one of: {', '.join(schemas)})", path=[kind_key]
            )
        return schema(value)

    return check


TRIGGER = vol.All(_normalise("trigger", "platform"), _by_kind("trigger", TRIGGER_SCHEMAS,
                                                             "trigger"))


def _condition(value: Any) -> Any:
    return CONDITION(value)


def _shorthand_condition(value: Any) -> Any:
    """A bare template string is a template condition (HA's shorthand)."""
    if isinstance(value, str):
        return {"condition": "template", "value_template": value}
    return value


_BASE_CONDITION = {vol.Optional("enabled", default=True): bool}
CONDITION_SCHEMAS: dict[str, Any] = {
    **{
        name: vol.Schema({**_BASE_CONDITION, vol.Required("condition"): name,
                          vol.Required("conditions"): vol.All(_to_list, [_condition])})
        for name in ("and", "or", "not")
    },
    "state": vol.Schema({
        **_BASE_CONDITION, vol.Required("condition"): "state",
        vol.Required("entity_id"): entity_ids,
        vol.Required("state"): vol.All(_to_list, [vol.Coerce(str)]),
        vol.Optional("attribute"): str,
        vol.Optional("for"): _FOR,
    }),
    "numeric_state": vol.All(vol.Schema({
        **_BASE_CONDITION, vol.Required("condition"): "numeric_state",
        vol.Required("entity_id"): entity_ids,
        vol.Optional("above"): _number_or_entity,
        vol.Optional("below"): _number_or_entity,
        vol.Optional("attribute"): str,
    }), _above_or_below),
    "time": vol.Schema({
        **_BASE_CONDITION, vol.Required("condition"): "time",
        vol.Optional("after"): time_of_day,
        vol.Optional("before"): time_of_day,
        vol.Optional("weekday"): vol.All(_to_list, [vol.In(WEEKDAYS)]),
    }),
    "template": vol.Schema({
        **_BASE_CONDITION, vol.Required("condition"): "template",
        vol.Required("value_template"): validate_template,
    }),
    "project": vol.Schema({
        **_BASE_CONDITION, vol.Required("condition"): "project",
        vol.Required("project"): vol.All(_to_list, [str]),
        vol.Optional("device_id"): str,
    }),
}
CONDITION = vol.All(_shorthand_condition, _by_kind("condition", CONDITION_SCHEMAS, "condition"))


def _action(value: Any) -> Any:
    return ACTION(value)


def _sequence(value: Any) -> Any:
    return vol.Schema([_action])(_to_list(value))


_BASE_ACTION = {
    vol.Optional("alias"): str,
    vol.Optional("enabled", default=True): bool,
    vol.Optional("continue_on_error", default=False): bool,
}
def _duration_or_template(value: Any) -> Any:
    """A duration (`5s`, `2m`), or a template that renders one at run time."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return validate_template(value)
    return duration(value)


_DURATION_OR_TEMPLATE = _duration_or_template


def _action_kind(value: Any) -> str:
    """Which action a mapping is, from the key that names it (as HA decides)."""
    if not isinstance(value, dict):
        raise vol.Invalid("expected an action mapping")
    for key in ("action", "delay", "wait_for_trigger", "choose", "if", "repeat", "variables",
                "stop", "condition"):
        if key in value:
            return key
    raise vol.Invalid("unknown action: expected one of action, delay, wait_for_trigger, "
                      "choose, if, repeat, variables, stop, condition")


ACTION_SCHEMAS: dict[str, Any] = {
    "action": vol.Schema({
        **_BASE_ACTION, vol.Required("action"): service_name,
        vol.Optional("data", default={}): dict,
        vol.Optional("target", default={}): dict,
        vol.Optional("response_variable"): str,
        # skip (with a note in the trace) when the service is not registered, e.g. notify.sms
        # on a hub without a modem; the default is to fail the run as Home Assistant does
        vol.Optional("if_missing", default="error"): vol.In(("error", "skip")),
    }),
    "delay": vol.Schema({**_BASE_ACTION, vol.Required("delay"): _DURATION_OR_TEMPLATE}),
    "wait_for_trigger": vol.Schema({
        **_BASE_ACTION, vol.Required("wait_for_trigger"): vol.All(_to_list, [TRIGGER]),
        vol.Optional("timeout"): duration,
        vol.Optional("continue_on_timeout", default=True): bool,
    }),
    "choose": vol.Schema({
        **_BASE_ACTION,
        vol.Required("choose"): vol.All(_to_list, [vol.Schema({
            vol.Required("conditions"): vol.All(_to_list, [_condition]),
            vol.Required("sequence"): _sequence,
        })]),
        vol.Optional("default"): _sequence,
    }),
    "if": vol.Schema({
        **_BASE_ACTION, vol.Required("if"): vol.All(_to_list, [_condition]),
        vol.Required("then"): _sequence,
        vol.Optional("else"): _sequence,
    }),
    "repeat": vol.Schema({
        **_BASE_ACTION,
        vol.Required("repeat"): vol.All(vol.Schema({
            vol.Optional("count"): vol.Any(vol.All(int, vol.Range(min=0, max=10_000)),
                                           validate_template),
            vol.Optional("while"): vol.All(_to_list, [_condition]),
            vol.Optional("until"): vol.All(_to_list, [_condition]),
            vol.Required("sequence"): _sequence,
        }), vol.Msg(lambda v: v if len({"count", "while", "until"} & set(v)) == 1
                    else (_ for _ in ()).throw(vol.Invalid("x")),
                    "repeat needs exactly one of count, while, until")),
    }),
    "variables": vol.Schema({**_BASE_ACTION, vol.Required("variables"): dict}),
    "stop": vol.Schema({**_BASE_ACTION, vol.Required("stop"): str,
                        vol.Optional("error", default=False): bool}),
    "condition": _condition,
}


def _action_check(value: Any) -> Any:
    kind = _action_kind(value)
    checked = ACTION_SCHEMAS[kind](value)
    if kind == "condition":
        return {"condition_action": checked}
    return checked


ACTION = vol.All(_normalise("action", "service"), _action_check)


def _rename(old: str, new: str) -> Any:
    def fix(value: Any) -> Any:
        if isinstance(value, dict) and old in value and new not in value:
            value = dict(value)
            value[new] = value.pop(old)
        return value

    return fix


AUTOMATION_SCHEMA = vol.All(
    _rename("trigger", "triggers"), _rename("condition", "conditions"),
    _rename("action", "actions"),
    vol.Schema({
        vol.Required("id"): automation_id,
        vol.Optional("alias"): str,
        vol.Optional("description"): str,
        vol.Optional("enabled", default=True): bool,
        vol.Optional("project"): str,
        vol.Optional("mode", default="single"): vol.In(MODES),
        vol.Optional("max", default=10): vol.All(int, vol.Range(min=1, max=1000)),
        vol.Optional("variables", default={}): dict,
        vol.Optional("trace", default={}): vol.Schema({
            vol.Optional("stored_traces", default=20): vol.All(int, vol.Range(min=1, max=1000)),
        }),
        vol.Required("triggers"): vol.All(_to_list, vol.Length(min=1), [TRIGGER]),
        vol.Optional("conditions", default=[]): vol.All(_to_list, [_condition]),
        vol.Required("actions"): _sequence,
    }),
)

_RENAMED = {"trigger": "triggers", "condition": "conditions", "action": "actions"}


def _path_text(path: list[Any]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _raw_path(raw: Any, path: list[Any]) -> list[Any]:
    """Map a path through normalised keys back to what the file says (for the line)."""
    if path and isinstance(raw, dict) and path[0] in _RENAMED.values() and path[0] not in raw:
        for old, new in _RENAMED.items():
            if new == path[0] and old in raw:
                return [old, *path[1:]]
    return path


def validate_one(raw: Any, where: list[Any] | None = None,
                 root: Any = None) -> tuple[dict[str, Any] | None, list[ConfigIssue]]:
    """Validate one automation; issues name it (its id), the path inside it and the reason."""
    where = where if where is not None else []
    name = raw.get("id") if isinstance(raw, dict) else None
    label = f"automation {name!r}" if name is not None else "automation without id"
    try:
        return AUTOMATION_SCHEMA(raw), []
    except vol.MultipleInvalid as err:
        errors = err.errors
    except vol.Invalid as err:
        errors = [err]
    issues = []
    for error in errors:
        inner = _raw_path(raw, list(error.path))
        reason = error.error_message or str(error)
        if reason == "extra keys not allowed":
            reason = "unknown key"
        elif reason == "required key not provided":
            reason = "required key missing"
        file, line = locate(root if root is not None else raw,
                            [*where, *inner] if root is not None else inner)
        issues.append(ConfigIssue(file, line, _path_text([*where, *inner]) if where else
                                  _path_text(inner), f"{label}: {reason}"))
    return None, issues


def validate_automations(raw: Any, root_key: str = "automations"
                         ) -> tuple[list[dict[str, Any]], list[ConfigIssue]]:
    """Validate a list of automations; ids must be unique. Returns (valid ones, issues)."""
    if raw is None or raw == {}:
        return [], []
    if not isinstance(raw, list):
        file, line = locate(raw, [])
        return [], [ConfigIssue(file, line, root_key, "expected a list of automations")]
    out: list[dict[str, Any]] = []
    issues: list[ConfigIssue] = []
    seen: set[str] = set()
    holder = {root_key: raw}
    for index, item in enumerate(raw):
        checked, found = validate_one(item, [root_key, index], _Root(holder, raw, root_key))
        issues.extend(found)
        if checked is None:
            continue
        if checked["id"] in seen:
            file, line = locate(item, ["id"])
            issues.append(ConfigIssue(file, line, f"{root_key}[{index}].id",
                                      f"automation {checked['id']!r}: duplicate id"))
            continue
        seen.add(checked["id"])
        out.append(checked)
    return out, issues


class _Root(dict):  # type: ignore[type-arg]
    """A one-key mapping whose value is the automations list, so `locate` can walk it."""

    def __init__(self, holder: dict[str, Any], raw: Any, key: str) -> None:
        super().__init__(holder)
        self.file = getattr(raw, "file", None)
        self.line = getattr(raw, "line", None)
        self.key_lines = {key: self.line}


def config_section(value: Any) -> list[dict[str, Any]]:
    """The `automations:` section of configuration.yaml, for hub/core/config.py.

    Raises vol.MultipleInvalid with paths relative to the section, so the config validator
    reports file:line as for every other section; reasons name the automation.
    """
    valid, issues = validate_automations(value)
    if issues:
        raise vol.MultipleInvalid([_issue_to_invalid(issue) for issue in issues])
    return valid


def _issue_to_invalid(issue: ConfigIssue) -> vol.Invalid:
    path: list[Any] = []
    for part in re.findall(r"\[(\d+)\]|\.?([^.\[\]]+)", issue.key):
        path.append(int(part[0]) if part[0] else part[1])
    return vol.Invalid(issue.reason, path=path[1:])
