"""The gsm plugin inside a real Hub: the arcm plugin polls detectors behind a simulated DTU.

Also checks the `GET /api/gsm/dtus` handler the plugin hands to the HTTP server.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
import voltwatch_gsm
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from gsm_testkit import (
    IMEI_A,
    default_harness,
)
from voltwatch_gsm.simulator import SimOptions, SimStats, SimulatedDtu

from hub.core.events import EVENT_STATE_CHANGED, Event, callback
from hub.core.plugins import PluginManager
from hub.hub import Hub

HAVE_ARCM = any(ep.name == "arcm" for ep in importlib.metadata.entry_points(group="voltwatch.plugins"))


async def wait_state(hub: Hub, entity_id: str, timeout: float = 20.0) -> Any:
    """The entity's state once it has a numeric value (set now or later)."""
    loop = asyncio.get_running_loop()
    found: asyncio.Future[Any] = loop.create_future()

    def good(state: Any) -> bool:
        return state is not None and state.as_float() is not None

    @callback
    def listener(event: Event) -> None:
        if (event.data["entity_id"] == entity_id and good(event.data["new_state"])
                and not found.done()):
            found.set_result(event.data["new_state"])

    remove = hub.bus.listen(EVENT_STATE_CHANGED, listener)
    try:
        if good(hub.states.get(entity_id)):
            return hub.states.get(entity_id)
        async with asyncio.timeout(timeout):
            return await found
    finally:
        remove()


@pytest.mark.skipif(not HAVE_ARCM, reason="the arcm plugin is not installed")
async def test_arcm_polls_through_a_simulated_dtu(tmp_path: Path) -> None:
    plugins = PluginManager()
    plugins.load_entrypoints(only=["gsm", "arcm", "modbus"])
    config = {
        "http": {"enabled": False},
        "gsm": {"port": 0, "heartbeat_timeout": "180s"},
        "projects": [{"id": "market-1", "name": "中心市场"}],
        "devices": [
            {"id": f"dtu1-arcm-{unit}", "platform": "arcm", "profile": "arcm-ref",
             "project": "market-1", "poll_interval": 0.2,
             "link": {"transport": "gsm", "imei": IMEI_A, "unit": unit}}
            for unit in (1, 2)
        ],
    }
    hub = Hub(tmp_path, config=config, plugin_manager=plugins)
    await hub.async_start()
    sim_task = None
    try:
        assert not [f for f in plugins.failures if f.name in ("gsm", "arcm")]
        server = voltwatch_gsm.get_server(hub)
        sim = SimulatedDtu(IMEI_A, [1, 2], SimOptions("127.0.0.1", server.port), SimStats())
        sim_task = asyncio.get_running_loop().create_task(sim.run())
        for unit in (1, 2):
            state = await wait_state(hub, f"sensor.dtu1_arcm_{unit}_residual_current")
            assert 5 <= state.as_float() <= 30
            temperature = await wait_state(hub, f"sensor.dtu1_arcm_{unit}_temperature_1")
            assert 20 <= temperature.as_float() <= 30
        dtu = server.dtus[IMEI_A]
        assert dtu.known and dtu.frames >= 2 and dtu.crc_errors == 0
        assert hub.states.get("binary_sensor.dtu_860000000000001_online").state == "on"
        assert hub.devices.get("dtu-860000000000001").project == "market-1"
        assert voltwatch_gsm.stats(hub)["gsm_dtus_online"] == 1
    finally:
        if sim_task is not None:
            sim_task.cancel()
            await asyncio.gather(sim_task, return_exceptions=True)
        await hub.async_stop()


async def test_api_lists_known_and_pending_dtus(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        await harness.start_sim(IMEI_A, [1, 2])
        pending = await harness.raw(b"861234567890123")
        server = harness.server
        await server.wait_until(lambda: "861234567890123" in server.dtus
                                and server.dtus["861234567890123"].connected)
        app = web.Application()
        app.add_routes(voltwatch_gsm.voltwatch_http_routes(harness.hub))
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/api/gsm/dtus")
            assert response.status == 200
            body = await response.json()
            by_imei = {entry["imei"]: entry for entry in body["dtus"]}
            assert by_imei["861234567890123"]["status"] == "pending"
            known = by_imei[IMEI_A]
            assert known["status"] == "known" and known["online"] and known["connected"]
            assert known["devices"] == ["arcm-a1", "arcm-a2"] and known["units"] == [1, 2]
            assert set(known["counters"]) >= {"frames", "bytes_up", "bytes_down", "crc_errors",
                                              "timeouts", "reconnects"}
            assert body["stats"]["gsm_dtus_pending"] == 1
            response = await client.get("/api/gsm/dtus", params={"status": "pending"})
            assert [e["imei"] for e in (await response.json())["dtus"]] == ["861234567890123"]
        pending.close()
