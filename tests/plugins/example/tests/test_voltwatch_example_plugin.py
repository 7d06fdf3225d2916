"""Tests of the example plugin, in the shape docs/writing-plugins.md recommends.

The plugin is registered into a real PluginManager and its hooks are called the way the hub
calls them, against a real (not started) Hub: real bus, state machine and services, no
storage, no network. `test_hub_plugins.py` in tests/core starts a full hub with it instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import voltwatch_example_plugin as example
import voluptuous as vol
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.core.context import Context
from hub.core.events import EVENT_STATE_CHANGED, Event, callback
from hub.core.plugins import PluginManager
from hub.core.services import ServiceValidationError
from hub.hub import Hub


@pytest.fixture
def plugins() -> PluginManager:
    manager = PluginManager()
    manager.register(example, "example", version="0.1.0")
    return manager


async def set_up(plugins: PluginManager, hub: Hub, config: dict[str, Any]) -> None:
    """Call voltwatch_setup as Hub.async_start does: collect results, await coroutines."""
    for _name, result in plugins.call_each("voltwatch_setup", hub=hub, config=config):
        await result
    assert plugins.failures == []


def test_config_schema_owns_the_example_section(plugins: PluginManager) -> None:
    sections = plugins.merged_dict("voltwatch_config_schema")
    assert list(sections) == ["example"]
    schema = sections["example"]
    assert schema({}) == {"greeting": "Hello"}
    assert schema({"greeting": "你好"}) == {"greeting": "你好"}
    with pytest.raises(vol.Invalid):
        schema({"greeting": 5})
    with pytest.raises(vol.Invalid):
        schema({"greting": "typo"})


async def test_hello_sets_the_state_and_answers(plugins: PluginManager, tmp_path: Path) -> None:
    hub = Hub(tmp_path, config={})
    await set_up(plugins, hub, {"example": {"greeting": "你好"}})
    changes: list[Event] = []
    hub.bus.listen(EVENT_STATE_CHANGED, callback(lambda event: changes.append(event)))
    context = Context(user_id="alice")

    response = await hub.services.async_call(
        "example", "hello", {"name": "配电箱1"}, context=context, return_response=True
    )

    assert response == {"message": "你好, 配电箱1!"}
    state = hub.states.get(example.GREETING_ENTITY)
    assert state is not None
    assert state.state == "你好, 配电箱1!"
    assert state.attributes["greeted"] == "配电箱1"
    assert state.context is context  # the audit chain reaches back to the caller
    assert [e.data["entity_id"] for e in changes] == [example.GREETING_ENTITY]


async def test_default_greeting_when_the_section_is_absent(
    plugins: PluginManager, tmp_path: Path
) -> None:
    hub = Hub(tmp_path, config={})
    await set_up(plugins, hub, {})
    assert await hub.services.async_call("example", "hello") == {"message": "Hello, world!"}


async def test_hello_validates_its_data(plugins: PluginManager, tmp_path: Path) -> None:
    hub = Hub(tmp_path, config={})
    await set_up(plugins, hub, {})
    with pytest.raises(ServiceValidationError, match="name"):
        await hub.services.async_call("example", "hello", {"name": ""})
    assert hub.states.get(example.GREETING_ENTITY) is None


async def test_http_route_serves_the_greeting(plugins: PluginManager, tmp_path: Path) -> None:
    hub = Hub(tmp_path, config={})
    await set_up(plugins, hub, {})
    [(name, routes)] = plugins.call_each("voltwatch_http_routes", hub=hub)
    assert name == "example"
    assert all(route.handler.__doc__ for route in routes)  # documented -> in the OpenAPI doc
    app = web.Application()
    app.add_routes(routes)
    async with TestClient(TestServer(app)) as client:
        before = await client.get("/api/example")
        assert before.status == 200
        assert await before.json() == {"greeting": None}
        await hub.services.async_call("example", "hello", {"name": "Li"})
        after = await client.get("/api/example")
        assert await after.json() == {"greeting": "Hello, Li!"}


async def test_shutdown_removes_the_service(plugins: PluginManager, tmp_path: Path) -> None:
    hub = Hub(tmp_path, config={})
    await set_up(plugins, hub, {})
    assert hub.services.has_service("example", "hello")
    plugins.call_each("voltwatch_shutdown", hub=hub)
    assert not hub.services.has_service("example", "hello")
