"""Devices from configuration.yaml follow the file across restarts; API-made ones stay."""

from __future__ import annotations

from pathlib import Path

import voluptuous as vol

from hub import hookimpl
from hub.core.plugins import PluginManager
from hub.hub import Hub


class _Platform:
    @hookimpl
    def voltwatch_device_schemas(self):  # type: ignore[no-untyped-def]
        return {"fake": vol.Schema({})}


def _hub(tmp_path: Path, device_ids: list[str]) -> Hub:
    plugins = PluginManager()
    plugins.register(_Platform(), "fake")
    config = {
        "http": {"enabled": False},
        "database": {"url": "sqlite+aiosqlite:///devices.db"},
        "devices": [{"id": device_id, "platform": "fake"} for device_id in device_ids],
    }
    return Hub(tmp_path, config=config, plugin_manager=plugins)


async def test_a_device_deleted_from_the_file_leaves_the_registry(tmp_path: Path) -> None:
    hub = _hub(tmp_path, ["d-1", "d-2"])
    await hub.async_start()
    await hub.devices.async_upsert(id="api-1", platform="fake", source="api")
    assert {d.id for d in hub.devices} == {"d-1", "d-2", "api-1"}
    await hub.async_stop()

    hub = _hub(tmp_path, ["d-1"])
    await hub.async_start()
    try:
        assert {d.id for d in hub.devices} == {"d-1", "api-1"}
    finally:
        await hub.async_stop()
