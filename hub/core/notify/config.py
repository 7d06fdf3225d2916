"""Validating `notify:` (CONTRACTS §3): a list of notifiers, each checked by its platform.

Called by hub/core/config.py's validator, so errors carry file, line and key like every other
configuration error: `configuration.yaml:40: notify[1].url: required key missing`.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from .base import NOTIFIER_COMMON


def notifier_platforms(plugins: Any) -> dict[str, tuple[Any, Any]]:
    """{platform: (schema, factory)} from every plugin's `voltwatch_notifiers`."""
    if plugins is None:
        return {}
    return plugins.merged_dict("voltwatch_notifiers")


def validate_notify(validator: Any, entries: Any) -> list[dict[str, Any]]:
    """Check each entry against the common keys plus its platform's schema; names unique,
    fallbacks pointing at configured names."""
    if not isinstance(entries, list):
        validator.issue(["notify"], "expected a list of notifiers")
        return []
    platforms = notifier_platforms(validator.plugins)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        path: list[Any] = ["notify", index]
        if not isinstance(entry, dict):
            validator.issue(path, "expected a mapping (platform, name, …)")
            continue
        platform = entry.get("platform")
        found = platforms.get(platform) if isinstance(platform, str) else None
        if "platform" in entry and found is None:
            installed = ", ".join(sorted(platforms)) or "none"
            validator.issue([*path, "platform"],
                            f"unknown notifier platform {platform!r} (installed: {installed})")
            continue
        schema = vol.Schema(NOTIFIER_COMMON)
        if found is not None:
            extra = found[0].schema if isinstance(found[0], vol.Schema) else found[0]
            schema = schema.extend(extra)
        checked = validator.check(schema, entry, path)
        if checked is None:
            continue
        if checked["name"] in seen:
            validator.issue([*path, "name"], f"duplicate notifier name {checked['name']!r}")
            continue
        seen.add(checked["name"])
        out.append(checked)
    for index, entry in enumerate(out):
        fallback = entry.get("fallback")
        if fallback and fallback not in seen:
            validator.issue(["notify", index, "fallback"], f"no notifier is called {fallback!r}")
    return out
