"""Fixtures for the HTTP tests: a real Hub on a free port, real tokens, a real client socket.

The hub runs with one in-test plugin (registered on its own PluginManager, so installed
plugins stay out of these tests) that provides the services and the plugin route the tests
need. Clients are aiohttp ClientSessions talking to the hub's socket; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol
from aiohttp import ClientSession, web

from hub.core.hookspecs import hookimpl
from hub.core.plugins import PluginManager
from hub.core.services import ServiceCall, Unauthorized
from hub.http import tokens


class ExamplePlugin:
    """Services and a route like a real plugin would register them."""

    @hookimpl
    def voltwatch_setup(self, hub: Any, config: dict[str, Any]) -> None:
        async def echo(call: ServiceCall) -> dict[str, Any]:
            return {"value": call.data["value"], "user": call.context.user_id}

        def forbidden(call: ServiceCall) -> None:
            raise Unauthorized("Tokens of this kind may not trip breakers")

        async def crash(call: ServiceCall) -> None:
            raise RuntimeError("secret internal detail")

        hub.services.register(
            "test",
            "echo",
            echo,
            schema=vol.Schema({vol.Required("value"): vol.All(int, vol.Range(min=0, max=10))}),
            supports_response=True,
            description="Answers with the value it got",
        )
        hub.services.register("test", "forbidden", forbidden)
        hub.services.register("test", "crash", crash)

    @hookimpl
    def voltwatch_http_routes(self, hub: Any) -> list[Any]:
        async def hello(request: web.Request) -> web.Response:
            """Say hello from a plugin.

            Used by the tests to check that plugin routes are authenticated and documented.
            """
            return web.json_response({"hello": "plugin"})

        return [web.get("/api/example/hello", hello)]


def make_plugins() -> PluginManager:
    """A plugin manager holding only the example plugin."""
    plugins = PluginManager()
    plugins.register(ExamplePlugin(), "example", version="1.2.3")
    return plugins


def hub_config(**extra: Any) -> dict[str, Any]:
    return {
        "hub": {"name": "Test hub", "language": "en"},
        "http": {"port": 0},
        "database": {"url": "sqlite+aiosqlite:///test.db"},
        **extra,
    }


@pytest.fixture
async def hub(tmp_path: Path, hub_db_url: str) -> AsyncIterator[Any]:
    from hub.hub import Hub

    config = hub_config(database={"url": hub_db_url})
    instance = Hub(config_dir=tmp_path, config=config, plugin_manager=make_plugins())
    await instance.async_start()
    try:
        yield instance
    finally:
        await instance.async_stop()


@pytest.fixture(name="make_plugins")
def make_plugins_fixture() -> Any:
    return make_plugins


@pytest.fixture(name="hub_config")
def hub_config_fixture() -> Any:
    return hub_config


@pytest.fixture
async def token(hub: Any) -> str:
    return await tokens.create_token(hub.storage, "test-client")


@pytest.fixture
async def client(hub: Any) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=hub.http.url) as session:
        yield session


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
