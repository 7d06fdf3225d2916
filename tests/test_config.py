"""configuration.yaml: !include, !secret, durations, and errors that name file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import voluptuous as vol

from hub import hookimpl
from hub.core.config import (
    ConfigError,
    duration,
    ensure_config_file,
    load_configuration,
    validate_configuration,
)
from hub.core.plugins import PluginManager


class _FakeDetectorPlugin:
    """A device platform and a transport, as a plugin would provide them."""

    @hookimpl
    def voltwatch_device_schemas(self):  # type: ignore[no-untyped-def]
        return {"fake": vol.Schema({vol.Optional("profile", default="fake-ref"): str})}

    @hookimpl
    def voltwatch_link_schemas(self):  # type: ignore[no-untyped-def]
        return {
            "tcp": vol.Schema(
                {
                    vol.Required("transport"): "tcp",
                    vol.Required("host"): str,
                    vol.Required("port"): vol.All(int, vol.Range(min=1, max=65535)),
                    vol.Optional("unit", default=1): int,
                }
            )
        }

    @hookimpl
    def voltwatch_config_schema(self):  # type: ignore[no-untyped-def]
        return {"fake": vol.Schema({vol.Optional("timeout", default=2.0): duration})}


@pytest.fixture
def plugins() -> PluginManager:
    manager = PluginManager()
    manager.register(_FakeDetectorPlugin(), "fake")
    return manager


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_template_is_created_and_valid(tmp_path: Path) -> None:
    created = ensure_config_file(tmp_path)
    assert created == tmp_path / "configuration.yaml"
    assert ensure_config_file(tmp_path) is None  # never overwritten
    config = load_configuration(tmp_path)
    assert config["http"]["port"] == 8123
    assert config["hub"]["language"] == "zh-CN"
    assert config["recorder"]["commit_interval"] <= 1.0


def test_include_secret_and_durations(tmp_path: Path, plugins: PluginManager) -> None:
    write(tmp_path, "secrets.yaml", "db_url: sqlite+aiosqlite:///secret.db\n")
    write(tmp_path, "devices.yaml", "- {id: d-1, platform: fake, poll_interval: 2m, "
          "link: {transport: tcp, host: 127.0.0.1, port: 5020}}\n")
    write(
        tmp_path,
        "configuration.yaml",
        "hub: {name: 张家口示范}\n"
        "database: {url: !secret db_url}\n"
        "fake: {timeout: 250ms}\n"
        "projects: [{id: school-1, name: 第一中学, children: [{id: school-1-a}]}]\n"
        "devices: !include devices.yaml\n",
    )
    config = load_configuration(tmp_path, plugins)
    assert config["hub"]["name"] == "张家口示范"
    assert config["database"]["url"] == "sqlite+aiosqlite:///secret.db"
    assert config["fake"]["timeout"] == pytest.approx(0.25)
    device = config["devices"][0]
    assert device["poll_interval"] == 120.0
    assert device["profile"] == "fake-ref"
    assert device["link"] == {"transport": "tcp", "host": "127.0.0.1", "port": 5020, "unit": 1}


@pytest.mark.parametrize(
    ("value", "seconds"), [("5s", 5), ("2m", 120), ("1h", 3600), (30, 30), ("1.5", 1.5)]
)
def test_duration(value: object, seconds: float) -> None:
    assert duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "-1", -3, True, "s"])
def test_bad_duration(value: object) -> None:
    with pytest.raises(vol.Invalid):
        duration(value)


def test_every_error_named_with_file_line_and_key(tmp_path: Path, plugins: PluginManager) -> None:
    write(tmp_path, "more.yaml", "- id: d-2\n  platform: fake\n  link: {transport: tcp, host: h, port: 99999}\n")
    write(
        tmp_path,
        "configuration.yaml",
        "hub: {language: fr}\n"             # 1
        "http:\n"                            # 2
        "  port: eighty\n"                   # 3
        "mqtt_typo: {}\n"                    # 4
        "projects:\n"                        # 5
        "  - {id: p1, children: [{id: p1}]}\n"  # 6
        "devices:\n"                         # 7
        "  - id: d-1\n"                      # 8
        "    platform: nosuch\n"             # 9
        "  - id: d-1\n"                      # 10
        "    platform: fake\n"               # 11
        "    project: nowhere\n"             # 12
        "    colour: red\n"                  # 13
        "extra: !include more.yaml\n",       # 14
    )
    with pytest.raises(ConfigError) as caught:
        load_configuration(tmp_path, plugins)
    lines = {str(issue).replace(str(tmp_path) + "/", "") for issue in caught.value.issues}
    assert "configuration.yaml:1: hub.language: value must be one of ['en', 'zh-CN']" in lines
    assert "configuration.yaml:3: http.port: expected int" in lines
    assert "configuration.yaml:4: mqtt_typo: unknown section (no installed plugin provides it)" in lines
    assert "configuration.yaml:14: extra: unknown section (no installed plugin provides it)" in lines
    assert "configuration.yaml:6: projects[0].children[0].id: duplicate project id 'p1'" in lines
    assert (
        "configuration.yaml:9: devices[0].platform: unknown device platform 'nosuch' (installed: fake)"
        in lines
    )
    assert "configuration.yaml:13: devices[1].colour: unknown key" in lines
    assert "configuration.yaml:12: devices[1].project: unknown project 'nowhere'" not in lines  # d-1 failed
    assert len(lines) == len(caught.value.issues)


def test_errors_inside_an_include_point_into_that_file(tmp_path: Path, plugins: PluginManager) -> None:
    write(tmp_path, "devices.yaml", "- id: d-2\n  platform: fake\n  link:\n    transport: tcp\n"
          "    host: h\n    port: 99999\n")
    write(tmp_path, "configuration.yaml", "devices: !include devices.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_configuration(tmp_path, plugins)
    (issue,) = caught.value.issues
    assert Path(issue.file).name == "devices.yaml"
    assert issue.line == 6
    assert issue.key == "devices[0].link.port"


def test_duplicate_keys_and_broken_yaml_name_the_line(tmp_path: Path) -> None:
    write(tmp_path, "configuration.yaml", "hub: {}\nhttp: {}\nhub: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_configuration(tmp_path)
    assert caught.value.issues[0].line == 3
    assert "duplicate key 'hub'" in str(caught.value)

    write(tmp_path, "configuration.yaml", "hub:\n  name: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_configuration(tmp_path)
    assert caught.value.issues[0].line is not None
    assert "invalid YAML" in str(caught.value)


def test_missing_secret_names_it(tmp_path: Path) -> None:
    write(tmp_path, "configuration.yaml", "hub: {}\ndatabase: {url: !secret nope}\n")
    with pytest.raises(ConfigError) as caught:
        load_configuration(tmp_path)
    assert "configuration.yaml:2" in str(caught.value)
    assert "!secret nope" in str(caught.value)


def test_dict_config_without_files(plugins: PluginManager) -> None:
    config = validate_configuration({"devices": [{"id": "d", "platform": "fake"}]}, plugins)
    assert config["devices"][0]["profile"] == "fake-ref"
    with pytest.raises(ConfigError) as caught:
        validate_configuration({"devices": [{"id": "bad id!", "platform": "fake"}]}, plugins)
    assert caught.value.issues[0].key == "devices[0].id"


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    write(tmp_path, "configuration.yaml", "hub: {language: xx}\nhttp: {port: no}\n")
    result = subprocess.run(
        [sys.executable, "-m", "hub", "check-config", "--config", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    assert "configuration.yaml:1: hub.language" in result.stdout
    assert "configuration.yaml:2: http.port: expected int" in result.stdout

    write(tmp_path, "configuration.yaml", "hub: {name: ok}\n")
    result = subprocess.run(
        [sys.executable, "-m", "hub", "check-config", "--config", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_recorder_retention_defaults_and_errors(tmp_path: Path, plugins: PluginManager) -> None:
    write(tmp_path, "configuration.yaml", "recorder:\n  retention: {raw: 7d, 1d: forever}\n")
    retention = load_configuration(tmp_path, plugins)["recorder"]["retention"]
    assert retention == {"raw": 7 * 86400.0, "5m": 365 * 86400.0, "1h": 1826 * 86400.0,
                         "1d": None}
    write(tmp_path, "configuration.yaml",
          "recorder:\n"                      # 1
          "  retention:\n"                   # 2
          "    raw: 10m\n"                   # 3
          "    1w: 30d\n")                   # 4
    with pytest.raises(ConfigError) as caught:
        load_configuration(tmp_path, plugins)
    lines = {str(issue).replace(str(tmp_path) + "/", "") for issue in caught.value.issues}
    assert any(line.startswith("configuration.yaml:3: recorder.retention.raw: a retention "
                               "period shorter than 1h") for line in lines), lines
    assert any(line.startswith("configuration.yaml:4: recorder.retention.1w") for line in lines), lines
