"""configuration.yaml: load, validate against the core's and every plugin's schema, report.

Validation collects every error before giving up (a site admin fixes them all in one go), and
each error names file, line and key: `configuration.yaml:12: devices[0].link.port: expected int`.
A hub never starts half-configured: any error raises ConfigError before anything runs.

The schema is assembled at run time: the core owns `hub`, `http`, `database`, `recorder`,
`projects` and the common keys of `devices`; plugins add top-level sections
(`voltwatch_config_schema`), device platforms (`voltwatch_device_schemas`) and link transports
(`voltwatch_link_schemas`). A top-level key nobody owns is an error, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import voluptuous as vol

from .ratelimit import rate
from .yaml_loader import NodeDict, NodeList, YamlError, load_yaml, locate

if TYPE_CHECKING:
    from .plugins import PluginManager

CONFIG_FILE = "configuration.yaml"
# The directory being validated, for plugin schemas that resolve files beside the config.
CONFIG_DIR: ContextVar[Path | None] = ContextVar("voltwatch_config_dir", default=None)
LANGUAGES = ("zh-CN", "en")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def duration(value: Any) -> float:
    """`5s`, `2m`, `1h`, `1d`, `250ms` or a number of seconds -> float seconds."""
    if isinstance(value, bool):
        raise vol.Invalid("expected a duration such as 5s, 2m, 1h or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise vol.Invalid("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise vol.Invalid(
            f"expected a duration such as 5s, 2m, 1h or a number of seconds, got {value!r}"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


#: The largest id a database row can have (a signed 64-bit integer); a bigger one in a request
#: is no row at all, and handing it to the driver would overflow instead of finding nothing.
MAX_ROW_ID = 2**63 - 1


#: A database row id (alarm, work order, patrol, subscription): declarative, so the OpenAPI
#: document shows it as an integer from 1 to 2**63-1.
row_id = vol.All(vol.Coerce(int), vol.Range(min=1, max=MAX_ROW_ID))


def device_id(value: Any) -> str:
    text = str(value)
    if not _DEVICE_ID.match(text):
        raise vol.Invalid(
            f"invalid device id {text!r}: letters, digits, '-', '_' and '.', at most 64"
        )
    return text


def port(value: Any) -> int:
    """A TCP port; YAML 1.1 reads `no`/`off` as False, which must not become port 0."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise vol.Invalid("expected int")
    try:
        number = int(value)
    except ValueError:
        raise vol.Invalid("expected int") from None
    if not 0 <= number <= 65535:
        raise vol.Invalid("expected a port between 0 and 65535")
    return number

HUB_SCHEMA = vol.Schema(
    {
        vol.Optional("name", default="Voltwatch"): str,
        vol.Optional("time_zone", default="Asia/Shanghai"): str,
        vol.Optional("language", default="zh-CN"): vol.In(LANGUAGES),
        # This worker's name among several on one PostgreSQL (hub.core.leases); generated and
        # kept in <config dir>/.worker_id when not set.
        vol.Optional("worker_id"): vol.All(str, vol.Length(min=1, max=128)),
        # How long a control call forwarded to the worker owning the device may take before
        # the caller gets a 504 (hub.core.peers): the command's own read-back fits well inside.
        vol.Optional("forward_timeout", default=15.0): vol.All(duration, vol.Range(min=0.1)),
    }
)

HTTP_SCHEMA = vol.Schema(
    {
        vol.Optional("enabled", default=True): bool,
        vol.Optional("host", default="127.0.0.1"): str,
        vol.Optional("port", default=8123): port,
        vol.Optional("max_request_size", default=1 << 20): vol.All(int, vol.Range(min=1024)),
        # a websocket client this many messages behind is disconnected, not buffered forever
        vol.Optional("websocket_max_pending", default=2048): vol.All(int, vol.Range(min=16)),
        # session cookies marked Secure: auto = when the request came over https (hub/auth)
        vol.Optional("secure_cookies", default="auto"): vol.Any(bool, "auto"),
        # the web UI's project map: a Leaflet tile URL template ({z}/{x}/{y}); empty = no
        # tiles, markers on a plain background (a closed network has no tile server)
        vol.Optional("map_tiles", default=""): str,
        vol.Optional("map_attribution", default=""): str,
        # requests per client address to the routes that declare a bucket (hub/http/security.py)
        vol.Optional("rate_limits"): {vol.In(("login", "tokens")): rate},
    }
)

DATABASE_SCHEMA = vol.Schema(
    {
        vol.Optional("url", default="sqlite+aiosqlite:///voltwatch.db"): vol.All(str, vol.Length(min=1)),
        # PostgreSQL: end a session of this hub left idle inside a transaction (its worker's
        # link hangs mid-commit) so its row locks do not stall the other workers; 0 = never
        vol.Optional("idle_in_transaction_timeout", default=60.0): vol.All(
            duration, vol.Range(max=86400)),
    }
)

def keep_for(value: Any) -> float | None:
    """A retention period (`30d`, `365d`, seconds), or None (`forever`/null): never purged."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("forever", "none")):
        return None
    seconds = duration(value)
    if seconds < 3600:
        raise vol.Invalid("a retention period shorter than 1h would purge what is being written")
    return seconds


#: Defaults of issue 11: raw 30 days, 5 min 1 year, 1 h 5 years, 1 d 10 years.
RETENTION_DEFAULTS = {"raw": 30 * 86400.0, "5m": 365 * 86400.0, "1h": 1826 * 86400.0,
                      "1d": 3652 * 86400.0}
RETENTION_SCHEMA = vol.Schema(
    {vol.Optional(name, default=default): keep_for for name, default in RETENTION_DEFAULTS.items()}
)


def _queue_holds_a_batch(recorder: dict[str, Any]) -> dict[str, Any]:
    if recorder["max_queue"] < recorder["max_batch"]:
        raise vol.Invalid("max_queue must be at least max_batch", path=["max_queue"])
    return recorder


RECORDER_SCHEMA = vol.All(
    vol.Schema(
        {
            vol.Optional("commit_interval", default=1.0): vol.All(duration, vol.Range(min=0.05, max=1.0)),
            vol.Optional("max_batch", default=1000): vol.All(int, vol.Range(min=1, max=100_000)),
            vol.Optional("max_queue", default=100_000): vol.All(int, vol.Range(min=1000)),
            # state_reported is never recorded (an unchanged value is not history).
            vol.Optional("exclude_event_types", default=[]): [str],
            vol.Optional("stop_timeout", default=30.0): duration,
            vol.Optional("retry_max", default=30.0): duration,
            # 5 min / 1 h / 1 d aggregates written with every batch (docs/history.md)
            vol.Optional("rollups", default=True): bool,
            vol.Optional("retention", default={}): RETENTION_SCHEMA,
            vol.Optional("purge_interval", default=3600.0): vol.All(duration, vol.Range(min=1)),
            vol.Optional("purge_batch", default=5000): vol.All(int, vol.Range(min=100, max=100_000)),
        }
    ),
    _queue_holds_a_batch,
)


def _project_schema(value: Any) -> Any:
    return PROJECT_SCHEMA(value)


PROJECT_SCHEMA = vol.Schema(
    {
        vol.Required("id"): device_id,
        vol.Optional("name"): str,
        vol.Optional("lat"): vol.All(vol.Coerce(float), vol.Range(min=-90, max=90)),
        vol.Optional("lon"): vol.All(vol.Coerce(float), vol.Range(min=-180, max=180)),
        vol.Optional("address"): str,
        vol.Optional("children", default=[]): [_project_schema],
    }
)

def hysteresis(value: Any) -> float | str:
    """Hysteresis of a hub-side threshold: a number in the quantity's unit, or `5%` of it."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            raise vol.Invalid(f"expected a number or a percentage such as 5%, got {value!r}") from None
        if not 0 <= percent < 100:
            raise vol.Invalid("a hysteresis percentage must be between 0 and 100")
        return f"{percent:g}%"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise vol.Invalid(f"expected a number or a percentage such as 5%, got {value!r}")
    if value < 0:
        raise vol.Invalid("a hysteresis cannot be negative")
    return float(value)


_NUMBER = vol.All(vol.Coerce(float), vol.Range(min=0))
_THRESHOLD_COMMON = {
    vol.Optional("enabled"): bool,
    vol.Optional("delay"): vol.All(duration, vol.Range(max=3600)),
    vol.Optional("hysteresis"): hysteresis,
}


def _quantity(limits: dict[Any, Any]) -> Any:
    """`false` switches a hub-side check off; a mapping overrides some of its settings."""
    schema = vol.Schema({**_THRESHOLD_COMMON, **limits})
    return vol.Any(vol.All(False, lambda _: {"enabled": False}), schema)


# Hub-side thresholds (hub/core/alarms.py; defaults from GB 51348/50116/14287 in docs/alarms.md).
# Given per device (`devices[].thresholds`) and as site defaults (`alarms.thresholds`).
THRESHOLDS_SCHEMA = vol.Schema(
    {
        vol.Optional("residual_current"): _quantity(
            {vol.Optional("alarm"): vol.All(vol.Coerce(float), vol.Range(min=1, max=10000))}
        ),
        vol.Optional("temperature"): _quantity(
            {vol.Optional("alarm"): vol.All(vol.Coerce(float), vol.Range(min=-40, max=300))}
        ),
        vol.Optional("voltage"): _quantity(
            {vol.Optional("over"): _NUMBER, vol.Optional("under"): _NUMBER}
        ),
        vol.Optional("current"): _quantity({vol.Optional("overload"): _NUMBER}),
    }
)

SEVERITIES = ("critical", "major", "minor", "info")

ALARMS_SCHEMA = vol.Schema(
    {
        vol.Optional("latching"): [str],
        vol.Optional("severity"): {str: vol.In(SEVERITIES)},
        vol.Optional("update_interval"): vol.All(duration, vol.Range(min=0, max=3600)),
        # seconds a new alarm waits for its row before it is announced anyway (stalled DB)
        vol.Optional("store_timeout"): vol.All(duration, vol.Range(min=0.1, max=60)),
        vol.Optional("thresholds"): THRESHOLDS_SCHEMA,
    }
)

DEVICE_COMMON = {
    vol.Required("id"): device_id,
    vol.Required("platform"): str,
    vol.Optional("name"): str,
    vol.Optional("profile"): str,
    vol.Optional("project"): str,
    vol.Optional("area"): str,
    vol.Optional("location"): str,
    vol.Optional("poll_interval"): duration,
    vol.Optional("link"): dict,
    vol.Optional("thresholds"): THRESHOLDS_SCHEMA,
}


@dataclass
class ConfigIssue:
    file: str | None
    line: int | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = self.file or CONFIG_FILE
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class ConfigError(Exception):
    """Every problem found in the configuration; `report()` prints them one per line."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("; ".join(str(issue) for issue in issues))
        self.issues = issues

    def report(self) -> str:
        count = len(self.issues)
        lines = [f"Configuration invalid ({count} error{'s' if count != 1 else ''}):"]
        lines += [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)


def _key_path(path: list[Any]) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else str(step)
    return out


class _Validator:
    """Collects issues while validating section by section."""

    def __init__(self, raw: Any, plugins: PluginManager | None) -> None:
        self.raw = raw
        self.issues: list[ConfigIssue] = []
        self.plugins = plugins
        merged = (lambda hook: plugins.merged_dict(hook)) if plugins else (lambda hook: {})
        self.sections: dict[str, Any] = merged("voltwatch_config_schema")
        self.device_schemas: dict[str, Any] = merged("voltwatch_device_schemas")
        self.link_schemas: dict[str, Any] = merged("voltwatch_link_schemas")

    def issue(self, path: list[Any], reason: str, root: Any = None) -> None:
        file, line = locate(self.raw if root is None else root, path)
        self.issues.append(ConfigIssue(file, line, _key_path(path), reason))

    def check(self, schema: Callable[[Any], Any], value: Any, path: list[Any]) -> Any:
        try:
            return schema(value)
        except vol.MultipleInvalid as err:
            for error in err.errors:
                self._report_invalid(error, path)
        except vol.Invalid as err:
            self._report_invalid(err, path)
        return None

    def _report_invalid(self, err: vol.Invalid, path: list[Any]) -> None:
        full = [*path, *err.path]
        reason = err.error_message or str(err)
        if reason == "extra keys not allowed":
            reason = "unknown key"
        elif reason == "required key not provided":
            reason = "required key missing"
        self.issue(full, reason)

    def run(self) -> dict[str, Any]:
        raw = self.raw
        if not isinstance(raw, dict):
            self.issue([], "the configuration must be a mapping of sections")
            return {}
        out: dict[str, Any] = {}
        core_sections: dict[str, Any] = {
            "hub": HUB_SCHEMA,
            "http": HTTP_SCHEMA,
            "database": DATABASE_SCHEMA,
            "recorder": RECORDER_SCHEMA,
            "alarms": ALARMS_SCHEMA,
        }
        from .hazard_config import HAZARD_SECTIONS  # workorders, reminders (uses duration)

        core_sections.update(HAZARD_SECTIONS)
        from hub.auth.settings import AUTH_SCHEMA  # users, sessions, lockout, service roles

        core_sections["auth"] = AUTH_SCHEMA
        from .automations.schema import config_section  # automations: !include automations.yaml

        core_sections["automations"] = config_section
        from .notify.base import NOTIFICATIONS_SCHEMA  # rate limit, escalation (hub/core/notify)

        core_sections["notifications"] = NOTIFICATIONS_SCHEMA
        for key in raw:
            if key not in core_sections and key not in ("projects", "devices", "notify") and key not in self.sections:
                self.issue([key], "unknown section (no installed plugin provides it)")
        for key, schema in core_sections.items():
            value = raw.get(key) or {}
            out[key] = self.check(schema, value, [key])
        for key, schema in self.sections.items():
            if key in raw:
                out[key] = self.check(schema, raw[key] if raw[key] is not None else {}, [key])
        out["projects"] = self._projects(raw.get("projects") or [])
        out["devices"] = self._devices(raw.get("devices") or [], out["projects"])
        from .notify.config import validate_notify  # `notify:`, checked by each platform

        out["notify"] = validate_notify(self, raw.get("notify") or [])
        return out

    def _projects(self, projects: Any) -> list[dict[str, Any]]:
        if not isinstance(projects, list):
            self.issue(["projects"], "expected a list of projects")
            return []
        result = []
        seen: set[str] = set()

        def walk(items: list[Any], path: list[Any]) -> None:
            for index, item in enumerate(items):
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    if item["id"] in seen:
                        self.issue([*path, index, "id"], f"duplicate project id {item['id']!r}")
                    seen.add(item["id"])
                if isinstance(item, dict) and isinstance(item.get("children"), list):
                    walk(item["children"], [*path, index, "children"])

        walk(projects, ["projects"])
        for index, project in enumerate(projects):
            checked = self.check(PROJECT_SCHEMA, project, ["projects", index])
            if checked is not None:
                result.append(checked)
        return result

    def _devices(self, devices: Any, projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not isinstance(devices, list):
            self.issue(["devices"], "expected a list of devices")
            return []
        project_ids = set(_project_ids(projects))
        result = []
        seen: set[str] = set()
        schemas: dict[Any, vol.Schema] = {}
        for index, device in enumerate(devices):
            path: list[Any] = ["devices", index]
            if not isinstance(device, dict):
                self.issue(path, "expected a mapping (id, platform, link, …)")
                continue
            platform = device.get("platform")
            platform_schema = self.device_schemas.get(platform) if isinstance(platform, str) else None
            if "platform" in device and platform_schema is None:
                installed = ", ".join(sorted(self.device_schemas)) or "none"
                self.issue([*path, "platform"], f"unknown device platform {platform!r} (installed: {installed})")
            # One compiled schema per platform, not one per device (100,000 devices spent
            # most of their validation compiling the same schema again).
            schema = schemas.get(platform if platform_schema is not None else None)
            if schema is None:
                schema = vol.Schema(DEVICE_COMMON)
                if platform_schema is not None:
                    extra = platform_schema.schema if isinstance(platform_schema, vol.Schema) else platform_schema
                    schema = schema.extend(extra)
                schemas[platform if platform_schema is not None else None] = schema
            checked = self.check(schema, device, path)
            if checked is None:
                continue
            if checked["id"] in seen:
                self.issue([*path, "id"], f"duplicate device id {checked['id']!r}")
            seen.add(checked["id"])
            if project_ids and checked.get("project") and checked["project"] not in project_ids:
                self.issue([*path, "project"], f"unknown project {checked['project']!r}")
            link = checked.get("link")
            if link is not None:
                checked["link"] = self._link(link, [*path, "link"])
                if checked["link"] is None:
                    continue
            result.append(checked)
        return result

    def _link(self, link: dict[str, Any], path: list[Any]) -> dict[str, Any] | None:
        transport = link.get("transport")
        schema = self.link_schemas.get(transport) if isinstance(transport, str) else None
        if schema is None:
            installed = ", ".join(sorted(self.link_schemas)) or "none"
            self.issue([*path, "transport"], f"unknown transport {transport!r} (installed: {installed})")
            return None
        return self.check(schema, link, path)


def _project_ids(projects: list[dict[str, Any]]) -> list[str]:
    ids = []
    for project in projects:
        ids.append(project["id"])
        ids.extend(_project_ids(project.get("children", [])))
    return ids


def validate_configuration(
    raw: Any, plugins: PluginManager | None = None, config_dir: str | Path | None = None
) -> dict[str, Any]:
    """Validate an already-parsed configuration (a dict from YAML or from a test).

    `config_dir` is made visible to plugin schemas through `CONFIG_DIR` while they run, so a
    schema can resolve files beside the configuration (e.g. a device profile in DIR/profiles).
    """
    token = CONFIG_DIR.set(Path(config_dir) if config_dir is not None else None)
    try:
        validator = _Validator(raw, plugins)
        config = validator.run()
    finally:
        CONFIG_DIR.reset(token)
    if validator.issues:
        raise ConfigError(validator.issues)
    return config


def validate_device(
    raw: Any,
    plugins: PluginManager | None,
    project_ids: Iterable[str],
    config_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One device as `devices:` would check it (common keys, platform schema, link schema).

    For devices created through the API: the same rules as the file, so a device that the API
    accepted never fails the next `check-config`. Issues name the key without the
    `devices[0].` prefix (`link.imei`, `project`), since the caller sent one device.
    """
    token = CONFIG_DIR.set(Path(config_dir) if config_dir is not None else None)
    try:
        validator = _Validator({"devices": [raw]}, plugins)
        checked = validator._devices([raw], [{"id": p} for p in project_ids])
    finally:
        CONFIG_DIR.reset(token)
    if validator.issues:
        raise ConfigError([
            dataclasses.replace(issue, file=None, line=None,
                                key=issue.key.removeprefix("devices[0]").lstrip("."))
            for issue in validator.issues])
    return checked[0]


def load_configuration(config_dir: str | Path, plugins: PluginManager | None = None) -> dict[str, Any]:
    """Read DIR/configuration.yaml (with !include and !secret) and validate it."""
    path = Path(config_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError([ConfigIssue(str(path), None, "", "file not found")])
    try:
        raw = load_yaml(path)
    except YamlError as err:
        raise ConfigError([ConfigIssue(err.file, err.line, "", str(err))]) from err
    return validate_configuration(raw, plugins, config_dir)


def template_text() -> str:
    return resources.files("hub").joinpath("templates/configuration.yaml").read_text("utf-8")


def ensure_config_file(config_dir: str | Path) -> Path | None:
    """Create DIR/configuration.yaml from the commented template if missing; return its path."""
    path = Path(config_dir) / CONFIG_FILE
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template_text(), encoding="utf-8")
    return path


__all__ = [
    "ConfigError",
    "ConfigIssue",
    "NodeDict",
    "NodeList",
    "duration",
    "ensure_config_file",
    "load_configuration",
    "validate_configuration",
]
