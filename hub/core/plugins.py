"""Finding and loading plugins: built-in and third-party alike, through one entry-point group.

We walk the `voltwatch.plugins` entry points ourselves instead of calling pluggy's
`load_setuptools_entrypoints`, for one reason: that function stops at the first plugin whose
import raises, and a hub must start without a broken plugin rather than not at all. The loop
below is the same as pluggy's otherwise (it records the distribution for `voltwatch plugins`).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

_LOGGER = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "voltwatch.plugins"
ENV_PLUGINS = "VOLTWATCH_PLUGINS"


@dataclass
class PluginInfo:
    name: str
    version: str | None
    distribution: str | None
    module: str
    hooks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "module": self.module,
            "hooks": self.hooks,
        }


@dataclass
class PluginFailure:
    name: str
    stage: str
    reason: str


def allowed_plugins(environ: dict[str, str] | None = None) -> set[str] | None:
    """Names listed in VOLTWATCH_PLUGINS (comma-separated), or None when unset (all)."""
    value = (environ if environ is not None else os.environ).get(ENV_PLUGINS)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


class PluginManager:
    """A pluggy manager that knows where each plugin came from and what failed."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.hook = self.pm.hook
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []

    def load_entrypoints(self, only: Iterable[str] | None = None) -> None:
        """Load every `voltwatch.plugins` entry point (or only the named ones)."""
        wanted = set(only) if only is not None else allowed_plugins()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as err:  # noqa: BLE001 - a broken plugin is reported, not fatal
                self.fail(ep.name, "load", f"{type(err).__name__}: {err}")
                continue
            dist = ep.dist
            self.register(
                plugin,
                ep.name,
                version=dist.version if dist else None,
                distribution=dist.metadata["name"] if dist else None,
            )
        if wanted:
            missing = wanted - set(self.infos) - {f.name for f in self.failures}
            for name in sorted(missing):
                self.fail(name, "load", f"no installed plugin is called {name!r}")

    def register(
        self,
        plugin: Any,
        name: str,
        version: str | None = None,
        distribution: str | None = None,
    ) -> None:
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # noqa: BLE001 - e.g. a hook with a misspelled argument
            self.fail(name, "register", f"{type(err).__name__}: {err}")
            return
        hooks = sorted(hc.name for hc in self.pm.get_hookcallers(plugin) or [])
        module = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__
        self.infos[name] = PluginInfo(name, version, distribution, module, hooks)

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)

    def fail(self, name: str, stage: str, reason: str) -> None:
        _LOGGER.error("Plugin %s failed to %s: %s", name, stage, reason)
        self.failures.append(PluginFailure(name, stage, reason))

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call one hook plugin by plugin, so a raising plugin is named and skipped.

        Returns (plugin name, result) for every implementation that returned non-None.
        """
        results: list[tuple[str, Any]] = []
        caller = getattr(self.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            try:
                result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as err:
                _LOGGER.exception("Plugin %s raised in %s", name, hook_name)
                self.failures.append(PluginFailure(name, hook_name, f"{type(err).__name__}: {err}"))
                continue
            if result is not None:
                results.append((name, result))
        return results

    def merged_dict(self, hook_name: str, **kwargs: Any) -> dict[str, Any]:
        """Merge dict results of a hook; a key claimed by two plugins is a failure of the second."""
        merged: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for name, result in self.call_each(hook_name, **kwargs):
            for key, value in result.items():
                if key in merged:
                    self.fail(name, hook_name, f"{key!r} is already provided by {owner[key]}")
                    continue
                merged[key] = value
                owner[key] = name
        return merged

    def list_plugins(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda info: info.name)
