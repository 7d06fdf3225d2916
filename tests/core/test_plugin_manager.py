"""PluginManager: registration, isolation of a raising plugin, merge conflicts, the allow-list."""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

import pytest
import voluptuous as vol

from hub import hookimpl
from hub.core import plugins as plugins_mod
from hub.core.plugins import PluginFailure, PluginManager, allowed_plugins


class GoodPlugin:
    @hookimpl
    def voltwatch_config_schema(self) -> dict[str, vol.Schema]:
        return {"good": vol.Schema({})}

    @hookimpl
    def voltwatch_link_schemas(self) -> dict[str, vol.Schema]:
        return {"modbus_tcp": vol.Schema({})}


class RaisingPlugin:
    @hookimpl
    def voltwatch_config_schema(self) -> dict[str, vol.Schema]:
        raise RuntimeError("schema file missing")


class SilentPlugin:
    @hookimpl
    def voltwatch_config_schema(self) -> None:
        return None


class RivalPlugin:
    @hookimpl
    def voltwatch_link_schemas(self) -> dict[str, vol.Schema]:
        return {"modbus_tcp": vol.Schema({"other": int}), "modbus_rtu": vol.Schema({})}


class MisspelledArgument:
    @hookimpl
    def voltwatch_setup(self, hub: Any, config: Any, extra: Any) -> None: ...


def test_register_records_name_version_module_and_hooks() -> None:
    manager = PluginManager()
    manager.register(GoodPlugin(), "good", version="1.2.3", distribution="voltwatch-good")
    [info] = manager.list_plugins()
    assert info.as_dict() == {
        "name": "good",
        "version": "1.2.3",
        "distribution": "voltwatch-good",
        "module": __name__,
        "hooks": ["voltwatch_config_schema", "voltwatch_link_schemas"],
    }
    assert manager.failures == []


def test_list_plugins_is_sorted_by_name() -> None:
    manager = PluginManager()
    manager.register(RivalPlugin(), "zeta")
    manager.register(GoodPlugin(), "alpha")
    assert [info.name for info in manager.list_plugins()] == ["alpha", "zeta"]


def test_a_plugin_that_does_not_match_the_specs_is_reported_not_registered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = PluginManager()
    with caplog.at_level(logging.ERROR, logger="hub.core.plugins"):
        manager.register(MisspelledArgument(), "misspelled")
    assert manager.infos == {}
    [failure] = manager.failures
    assert (failure.name, failure.stage) == ("misspelled", "register")
    assert "extra" in failure.reason
    assert "misspelled" in caplog.text


def test_call_each_isolates_a_raising_plugin(caplog: pytest.LogCaptureFixture) -> None:
    manager = PluginManager()
    manager.register(GoodPlugin(), "good")
    manager.register(RaisingPlugin(), "raising")
    manager.register(SilentPlugin(), "silent")
    with caplog.at_level(logging.ERROR, logger="hub.core.plugins"):
        results = manager.call_each("voltwatch_config_schema")
    assert [name for name, _ in results] == ["good"]  # None results are left out
    assert manager.failures == [
        PluginFailure("raising", "voltwatch_config_schema", "RuntimeError: schema file missing")
    ]
    assert "raising" in caplog.text


def test_call_each_passes_only_the_arguments_a_plugin_asks_for() -> None:
    seen: list[Any] = []

    class WantsHubOnly:
        @hookimpl
        def voltwatch_setup(self, hub: Any) -> str:
            seen.append(hub)
            return "ok"

    manager = PluginManager()
    manager.register(WantsHubOnly(), "hub-only")
    assert manager.call_each("voltwatch_setup", hub="HUB", config={}) == [("hub-only", "ok")]
    assert seen == ["HUB"]


def test_merged_dict_reports_a_conflict_and_keeps_one_owner() -> None:
    manager = PluginManager()
    manager.register(GoodPlugin(), "good")
    manager.register(RivalPlugin(), "rival")
    merged = manager.merged_dict("voltwatch_link_schemas")
    assert sorted(merged) == ["modbus_rtu", "modbus_tcp"]
    [failure] = manager.failures
    assert failure.stage == "voltwatch_link_schemas"
    assert "'modbus_tcp'" in failure.reason
    # The failure names both plugins: the one refused and the one that owns the key.
    assert {failure.name, failure.reason.rsplit(" ", 1)[-1]} == {"good", "rival"}


def test_unregister() -> None:
    manager = PluginManager()
    manager.register(GoodPlugin(), "good")
    manager.unregister("good")
    assert manager.list_plugins() == []
    assert manager.merged_dict("voltwatch_config_schema") == {}
    manager.unregister("never-registered")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"VOLTWATCH_PLUGINS": "arcm"}, {"arcm"}),
        ({"VOLTWATCH_PLUGINS": " arcm, gsm ,,notify_sms "}, {"arcm", "gsm", "notify_sms"}),
        ({"VOLTWATCH_PLUGINS": ""}, set()),
    ],
)
def test_allowed_plugins_reads_voltwatch_plugins(
    environ: dict[str, str], expected: set[str] | None
) -> None:
    assert allowed_plugins(environ) == expected


def _fake_entry_points(*eps: importlib.metadata.EntryPoint) -> Any:
    def entry_points(group: str) -> tuple[importlib.metadata.EntryPoint, ...]:
        assert group == "voltwatch.plugins"
        return eps

    return entry_points


def test_an_entry_point_that_fails_to_import_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = importlib.metadata.EntryPoint(
        name="ghost", value="voltwatch_no_such_module_xyz", group="voltwatch.plugins"
    )
    good = importlib.metadata.EntryPoint(
        name="example", value="voltwatch_example_plugin", group="voltwatch.plugins"
    )
    monkeypatch.setattr(plugins_mod.importlib.metadata, "entry_points", _fake_entry_points(bad, good))
    monkeypatch.delenv("VOLTWATCH_PLUGINS", raising=False)
    manager = PluginManager()
    manager.load_entrypoints()
    assert list(manager.infos) == ["example"]  # the broken import did not stop the rest
    [failure] = manager.failures
    assert (failure.name, failure.stage) == ("ghost", "load")
    assert "ModuleNotFoundError" in failure.reason


def test_loading_twice_does_not_register_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTWATCH_PLUGINS", "example")
    manager = PluginManager()
    manager.load_entrypoints()
    manager.load_entrypoints()
    assert list(manager.infos) == ["example"]
    assert manager.failures == []
