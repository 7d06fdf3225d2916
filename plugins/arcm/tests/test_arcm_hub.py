"""End to end in a real Hub: config validation, storage, entry-point plugins, services, alarms.

Needs hub/core/config.py and hub/storage (the full hub); it fails rather than skips without.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from voltwatch_arcm import runtime_for
from voltwatch_arcm.simulator import ArcmSimulator, SimOptions

from hub.core.conditions import EVENT_DEVICE_CONDITION
from hub.core.config import ConfigError
from hub.core.events import Event, callback
from hub.core.plugins import PluginManager
from hub.core.services import ServiceValidationError
from hub.hub import Hub


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plugins() -> PluginManager:
    manager = PluginManager()
    manager.load_entrypoints(only=["modbus", "arcm"])
    return manager


def _config(tmp_path: Path, port: int) -> dict[str, Any]:
    link = {"transport": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.5}
    return {
        "hub": {"name": "arcm e2e", "language": "zh-CN"},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        "http": {"enabled": False},
        "projects": [{"id": "school-1", "name": "第一中学",
                      "children": [{"id": "school-1-a", "name": "教学楼A"}]}],
        "devices": [
            {"id": "arcm-1", "name": "配电箱1", "platform": "arcm", "profile": "arcm-ref",
             "project": "school-1-a", "area": "一层", "location": "配电室",
             "poll_interval": "100ms", "link": {**link, "unit": 1}},
            {"id": "arcm-2", "name": "配电箱2", "platform": "arcm", "project": "school-1",
             "poll_interval": 0.1, "link": {**link, "unit": 2}},
        ],
    }


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Hub, ArcmSimulator]]:
    port = free_port()
    sim = ArcmSimulator([1, 2], SimOptions(wander=False, leak_every=None))
    server = await sim.start_tcp("127.0.0.1", port)
    hub = Hub(tmp_path, config=_config(tmp_path, port), plugin_manager=_plugins())
    await hub.async_start()
    try:
        yield hub, sim
    finally:
        await hub.async_stop()
        await server.shutdown()


async def _wait_state(hub: Hub, entity_id: str, value: str) -> None:
    import asyncio

    state = hub.states.get(entity_id)
    if state is not None and state.state == value:
        return
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @callback
    def changed(event: Event) -> None:
        new = event.data.get("new_state")
        if event.data["entity_id"] == entity_id and new is not None and new.state == value \
                and not future.done():
            future.set_result(None)

    unsub = hub.bus.listen("state_changed", changed)
    try:
        await asyncio.wait_for(future, 10)
    finally:
        unsub()


async def test_full_hub_polls_alarms_and_controls(site: tuple[Hub, ArcmSimulator]) -> None:
    import asyncio

    hub, sim = site
    assert not [f for f in hub.plugins.failures if f.name in ("arcm", "modbus")]
    assert runtime_for(hub) is not None
    await _wait_state(hub, "sensor.arcm_1_residual_current", "30")
    assert hub.devices.get("arcm-1").location == "配电室"
    assert hub.entities.get("sensor.arcm_2_temperature_3").unit == "°C"
    assert runtime_for(hub).devices["arcm-1"].poll_interval == 0.1

    raised: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    @callback
    def on_condition(event: Event) -> None:
        if event.data["type"] == "residual_current_high" and not raised.done():
            raised.set_result(event.data)

    hub.bus.listen(EVENT_DEVICE_CONDITION, on_condition)
    sim.units[2].regs[49] = 0
    sim.units[2].set_override("residual_current", 550)
    data = await asyncio.wait_for(raised, 10)
    assert (data["device_id"], data["message"]) == ("arcm-2", "剩余电流过大 550mA")

    result = await hub.services.async_call("arcm", "trip", {"device_id": "arcm-2"},
                                           return_response=True)
    assert result["breaker"] == "tripped"
    with pytest.raises(ServiceValidationError):
        await hub.services.async_call("arcm", "set_parameter", {
            "device_id": "arcm-1", "name": "residual_current_alarm", "value": 1001})


def test_bad_device_config_is_reported_with_its_key(tmp_path: Path) -> None:
    from hub.core.config import validate_configuration

    config = _config(tmp_path, 5020)
    config["devices"][0]["link"]["baudrate"] = "fast"
    config["devices"][1]["profile"] = "no-such-model"
    with pytest.raises(ConfigError) as info:
        validate_configuration(config, _plugins())
    report = info.value.report()
    assert "devices[1].profile" in report or "devices.1.profile" in report, report
    assert "no-such-model" in report
