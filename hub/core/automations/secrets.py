"""`!secret` values in what the automations API shows, takes and writes.

Why: the hub loads automations.yaml with `!secret name` resolved (the engine needs the value),
so the automation it holds carries the secret itself: an SMS gateway token, a phone number.
Anyone allowed to read automations (project_admin) must not see it through the API, in a
trace, a version or a dry run; and an edit must never write the value into automations.yaml.

How: the values of secrets.yaml (beside configuration.yaml) are known, so what goes out is
redacted by value: a value equal to a secret reads `!secret name`, and (in traces, version
texts and dry runs, which hold rendered text) a secret inside a longer string is replaced by
`!secret name` too. What comes in is resolved: a string `!secret name` becomes the secret's
value before validation, so an editor that sends back what it was shown saves the same
automation. What is written goes through `refs`: every value equal to a secret becomes a
`SecretRef`, which the file writer emits as the `!secret name` tag (yamlmerge.py, yamlfile.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..yaml_loader import load_yaml

_REFERENCE = re.compile(r"^!secret\s+(\S+)\s*$")
#: a secret shorter than this is not searched for inside longer strings, and a number shorter
#: than this is not redacted at all (too many false hits: ports, counts, versions)
MIN_PARTIAL = 4


class SecretError(ValueError):
    """A `!secret name` that secrets.yaml does not define."""


@dataclass(frozen=True)
class SecretRef:
    """A value to be written as `!secret name`."""

    name: str

    def __str__(self) -> str:
        return f"!secret {self.name}"


def reference(name: str) -> str:
    return f"!secret {name}"


class Secrets:
    """The secrets of one configuration directory, looked up by name and by value."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = {str(k): v for k, v in values.items()
                       if isinstance(v, str | int | float) and not isinstance(v, bool)
                       and v != ""}
        self._by_value: dict[tuple[type, Any], str] = {}
        for name in sorted(self.values):
            value = self.values[name]
            # a short number (a port, a count) would "redact" every 1 and 80 in a trace
            if isinstance(value, str) or len(_text(value)) >= MIN_PARTIAL:
                self._by_value.setdefault((_kind(value), value), name)
        # longest first, so a secret containing another is replaced whole; a number (an
        # unquoted phone number in secrets.yaml) is searched for as its text
        self._partial = sorted(((_text(v), n) for (_k, v), n in self._by_value.items()
                                if len(_text(v)) >= MIN_PARTIAL),
                               key=lambda item: -len(item[0]))

    @classmethod
    def of_dir(cls, config_dir: Path) -> Secrets:
        path = config_dir / "secrets.yaml"
        data = load_yaml(path, {}) if path.is_file() else {}
        return cls(data if isinstance(data, Mapping) else {})

    def name_of(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        return self._by_value.get((_kind(value), value))

    def redact(self, data: Any, partial: bool = False) -> Any:
        """`data` with every secret value shown as `!secret name` (inside longer strings too
        when `partial`: rendered text in traces and dry runs, YAML text in versions)."""
        if isinstance(data, Mapping):
            return {k: self.redact(v, partial) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.redact(v, partial) for v in data]
        name = self.name_of(data)
        if name is not None:
            return reference(name)
        if partial and isinstance(data, str):
            for value, name in self._partial:
                if value in data:
                    data = data.replace(value, reference(name))
        return data

    def resolve(self, data: Any, path: tuple[Any, ...] = ()) -> Any:
        """`data` with every string `!secret name` replaced by the secret's value."""
        if isinstance(data, Mapping):
            return {k: self.resolve(v, (*path, k)) for k, v in data.items()}
        if isinstance(data, list):
            return [self.resolve(v, (*path, i)) for i, v in enumerate(data)]
        if isinstance(data, str):
            found = _REFERENCE.match(data)
            if found:
                name = found.group(1)
                if name not in self.values:
                    where = ".".join(str(p) for p in path)
                    raise SecretError(f"{where}: !secret {name}: not found in secrets.yaml")
                return self.values[name]
        return data

    def refs(self, data: Any) -> Any:
        """`data` for the file writer: each secret value a `SecretRef` (written as the tag)."""
        if isinstance(data, Mapping):
            return {k: self.refs(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.refs(v) for v in data]
        name = self.name_of(data)
        return SecretRef(name) if name is not None else data


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _kind(value: Any) -> type:
    """Strings match strings, numbers match numbers (1 == 1.0, never "1")."""
    return str if isinstance(value, str) else float
