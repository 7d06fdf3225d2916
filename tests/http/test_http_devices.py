"""Device writes over the API (issue 10): add, edit, remove; roles, scope, audit, validation.

A real hub with the modbus, arcm and gsm plugins and a project tree; users of three roles
with their own tokens. Adoption of a pending DTU is the gsm plugin reacting to the registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from hub.core.events import EVENT_ENTITY_REGISTRY_UPDATED, Event, callback
from hub.core.plugins import PluginManager
from hub.http import tokens
from hub.hub import Hub

IMEI = "861234567890123"
ROLES = {"super_admin": [], "project_admin": ["school-1"], "user": ["school-1"]}


@pytest.fixture
async def site(tmp_path: Path, hub_db_url: str) -> AsyncIterator[tuple[Hub, dict[str, str]]]:
    plugins = PluginManager()
    plugins.load_entrypoints(only=["modbus", "arcm", "gsm"])
    config = {
        "hub": {"name": "Devices", "language": "en"},
        "http": {"port": 0},
        "database": {"url": hub_db_url},
        "gsm": {"port": 0},
        "projects": [{"id": "school-1", "name": "第一中学",
                      "children": [{"id": "school-1-a", "name": "教学楼A"}]},
                     {"id": "hospital-1", "name": "人民医院"}],
        "devices": [{"id": "arcm-1", "platform": "arcm", "project": "school-1-a",
                     "link": {"transport": "modbus_tcp", "host": "127.0.0.1", "port": 9,
                              "unit": 1}}],
    }
    hub = Hub(tmp_path, config=config, plugin_manager=plugins)
    await hub.async_start()
    try:
        auth: dict[str, str] = {}
        for role, projects in ROLES.items():
            user = await hub.auth.users.create(f"u-{role}", role, None, projects=projects)
            auth[role] = await tokens.create_token(hub.storage, role, user_id=user.id)
        yield hub, auth
    finally:
        await hub.async_stop()


async def until(hub: Hub, event_type: str, done: Any, timeout: float = 20.0) -> None:
    """Wait for `done()` to hold, checked at each event of `event_type` (no polling)."""
    woken = asyncio.Event()

    @callback
    def wake(event: Event) -> None:
        woken.set()

    remove = hub.bus.listen(event_type, wake)
    try:
        async with asyncio.timeout(timeout):
            while not done():
                woken.clear()
                await woken.wait()
    finally:
        remove()


@pytest.fixture
async def client(site: tuple[Hub, dict[str, str]]) -> AsyncIterator[Any]:
    hub, auth = site

    class Client:
        async def call(self, role: str, method: str, path: str, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {auth[role]}"}
            async with ClientSession(base_url=hub.http.url) as session, session.request(
                    method, path, json=body, headers=headers) as response:
                return response.status, await response.json()

    yield Client()


NEW = {"id": "arcm-9", "name": "配电箱9", "platform": "arcm", "project": "school-1-a",
       "area": "二层", "location": "弱电间", "poll_interval": "2s",
       "link": {"transport": "modbus_tcp", "host": "127.0.0.1", "port": 9, "unit": 9}}


async def test_admin_adds_edits_and_removes_a_device(site: Any, client: Any) -> None:
    hub, _ = site
    status, body = await client.call("project_admin", "POST", "/api/devices", NEW)
    assert status == 201, body
    assert body["name"] == "配电箱9" and body["source"] == "api" and body["project"] == "school-1-a"
    entry = hub.devices.get("arcm-9")
    assert entry.link["unit"] == 9 and entry.options["poll_interval"] == 2.0
    status, listed = await client.call("user", "GET", "/api/devices")
    assert "arcm-9" in [d["id"] for d in listed]

    status, body = await client.call("project_admin", "PATCH", "/api/devices/arcm-9",
                                     {"name": "配电箱九", "project": "school-1", "area": None})
    assert status == 200, body
    assert (body["name"], body["project"], body["area"], body["location"]) == \
        ("配电箱九", "school-1", None, "弱电间")
    assert hub.devices.get("arcm-9").link["host"] == "127.0.0.1"

    status, body = await client.call("project_admin", "DELETE", "/api/devices/arcm-9")
    assert (status, body) == (200, {"id": "arcm-9", "removed": True})
    assert hub.devices.get("arcm-9") is None
    # The plugin may still be finishing the edit's restart: its entities go with it.
    await until(hub, EVENT_ENTITY_REGISTRY_UPDATED,
                lambda: not hub.entities.for_device("arcm-9"))
    assert hub.states.get("sensor.arcm_9_residual_current") is None

    status, audit = await client.call("super_admin", "GET", "/api/audit?limit=50")
    actions = [(row["action"], row["target"], row["actor"]) for row in audit
               if row["action"].startswith("device.")]
    assert actions == [("device.delete", "arcm-9", "u-project_admin"),
                       ("device.update", "arcm-9", "u-project_admin"),
                       ("device.create", "arcm-9", "u-project_admin")]
    assert all(row["context_id"] for row in audit if row["action"].startswith("device."))


async def test_validation_errors_name_the_field(client: Any) -> None:
    bad_link = {**NEW, "link": {"transport": "gsm", "imei": "12", "unit": 1}}
    status, body = await client.call("super_admin", "POST", "/api/devices", bad_link)
    assert status == 400 and "link.imei" in body["error"]
    assert body["details"][0]["path"] == ["link", "imei"]

    status, body = await client.call("super_admin", "POST", "/api/devices",
                                     {**NEW, "platform": "toaster"})
    assert status == 400 and "platform: unknown device platform 'toaster'" in body["error"]
    status, body = await client.call("super_admin", "POST", "/api/devices",
                                     {**NEW, "project": "nowhere"})
    assert status == 400 and "project: unknown project 'nowhere'" in body["error"]
    status, body = await client.call("super_admin", "POST", "/api/devices",
                                     {**NEW, "id": "has space"})
    assert status == 400 and body["error"].startswith("Invalid device: id:")
    status, body = await client.call("super_admin", "POST", "/api/devices",
                                     {**NEW, "id": "arcm-1"})
    assert status == 409 and "exists" in body["error"]


async def test_roles_and_scope_decide_who_writes(site: Any, client: Any) -> None:
    hub, _ = site
    status, body = await client.call("user", "POST", "/api/devices", NEW)
    assert status == 403 and "project_admin" in body["error"]
    status, body = await client.call("project_admin", "POST", "/api/devices",
                                     {**NEW, "project": "hospital-1"})
    assert status == 403 and "outside the scope" in body["error"]
    assert hub.devices.get("arcm-9") is None
    status, body = await client.call("user", "DELETE", "/api/devices/arcm-1")
    assert status == 403
    # The file owns its devices: the API says so instead of a change lost at the next start.
    status, body = await client.call("super_admin", "PATCH", "/api/devices/arcm-1", {"name": "x"})
    assert status == 409 and "configuration.yaml" in body["error"]
    status, body = await client.call("super_admin", "DELETE", "/api/devices/arcm-1")
    assert status == 409 and hub.devices.get("arcm-1") is not None


async def test_adding_a_device_behind_a_pending_dtu_adopts_it(site: Any, client: Any) -> None:
    import voltwatch_gsm

    hub, _ = site
    server = voltwatch_gsm.get_server(hub)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(IMEI.encode())
        await writer.drain()
        await server.wait_until(lambda: IMEI in server.dtus and server.dtus[IMEI].connected)
        status, body = await client.call("super_admin", "GET", "/api/gsm/dtus?status=pending")
        assert [d["imei"] for d in body["dtus"]] == [IMEI]

        status, body = await client.call("project_admin", "POST", "/api/devices", {
            "id": "dtu9-arcm-1", "platform": "arcm", "project": "school-1",
            "link": {"transport": "gsm", "imei": IMEI, "unit": 1}})
        assert status == 201, body
        await server.wait_until(lambda: server.dtus[IMEI].known)
        status, body = await client.call("super_admin", "GET", "/api/gsm/dtus")
        adopted = {d["imei"]: d for d in body["dtus"]}[IMEI]
        assert adopted["status"] == "known" and adopted["devices"] == ["dtu9-arcm-1"]
    finally:
        writer.close()
