"""Plugins are found through installed entry points, exactly as a third party's would be.

These tests need tests/plugins/example and tests/plugins/broken installed (`make install`
does it; by hand: `pip install -e tests/plugins/example -e tests/plugins/broken`). They fail,
rather than skip, when they are not: a silently skipped discovery test proves nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.core.plugins import ENTRY_POINT_GROUP, PluginManager

EXAMPLE_HOOKS = [
    "voltwatch_config_schema",
    "voltwatch_http_routes",
    "voltwatch_metrics",
    "voltwatch_setup",
    "voltwatch_shutdown",
]
VOLTWATCH = Path(sys.executable).with_name("voltwatch")


def test_example_is_installed_as_an_entry_point() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert "example" in eps, "pip install -e tests/plugins/example (make install does it)"
    assert eps["example"].value == "voltwatch_example_plugin"
    assert eps["example"].dist is not None
    assert eps["example"].dist.metadata["name"] == "voltwatch-example-plugin"
    assert "broken" in eps, "pip install -e tests/plugins/broken (make install does it)"


def test_load_entrypoints_finds_the_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOLTWATCH_PLUGINS", raising=False)
    manager = PluginManager()
    manager.load_entrypoints()
    info = manager.infos["example"]
    assert info.version == "0.1.0"
    assert info.distribution == "voltwatch-example-plugin"
    assert info.module == "voltwatch_example_plugin"
    assert info.hooks == EXAMPLE_HOOKS
    assert "broken" in manager.infos  # it imports fine; it fails only when set up
    assert "example" in manager.merged_dict("voltwatch_config_schema")


def test_voltwatch_plugins_loads_only_the_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTWATCH_PLUGINS", "example")
    manager = PluginManager()
    manager.load_entrypoints()
    assert list(manager.infos) == ["example"]
    assert manager.failures == []


def test_only_argument_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTWATCH_PLUGINS", "example")
    manager = PluginManager()
    manager.load_entrypoints(only=["broken"])
    assert list(manager.infos) == ["broken"]


def test_empty_voltwatch_plugins_loads_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTWATCH_PLUGINS", "")
    manager = PluginManager()
    manager.load_entrypoints()
    assert manager.infos == {}
    assert manager.failures == []


def test_unknown_name_in_voltwatch_plugins_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTWATCH_PLUGINS", "example, no_such_plugin")
    manager = PluginManager()
    manager.load_entrypoints()
    assert list(manager.infos) == ["example"]
    [failure] = manager.failures
    assert failure.name == "no_such_plugin"
    assert failure.stage == "load"
    assert "no installed plugin is called 'no_such_plugin'" in failure.reason


def _voltwatch_plugins(plugins: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOLTWATCH_PLUGINS": plugins}
    return subprocess.run(
        [str(VOLTWATCH), "plugins", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )


def test_cli_lists_the_example_with_version_and_hooks() -> None:
    result = _voltwatch_plugins("example,broken")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    by_name = {plugin["name"]: plugin for plugin in listing["plugins"]}
    assert sorted(by_name) == ["broken", "example"]
    assert by_name["example"]["version"] == "0.1.0"
    assert by_name["example"]["distribution"] == "voltwatch-example-plugin"
    assert by_name["example"]["hooks"] == EXAMPLE_HOOKS
    assert listing["failures"] == []


def test_cli_reports_an_unknown_plugin_and_exits_non_zero() -> None:
    result = _voltwatch_plugins("example,no_such_plugin")
    assert result.returncode == 1
    listing = json.loads(result.stdout)
    assert [p["name"] for p in listing["plugins"]] == ["example"]
    assert [f["name"] for f in listing["failures"]] == ["no_such_plugin"]
