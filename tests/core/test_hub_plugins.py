"""A full Hub with real plugins from entry points: the broken one is named, the example works.

This is the end-to-end proof of the plugin system: configuration validated with the example's
section, storage opened, plugins set up one by one (a failing one isolated and named), the
example's service answering through the service registry and through the HTTP API, its route
mounted behind the bearer token, and shutdown reaching every plugin.

Needs hub/core/config.py, hub/storage and hub/http (the full hub); it does not skip when they
are missing, it fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub import hookimpl
from hub.core.context import Context
from hub.core.plugins import PluginManager
from hub.hub import Hub, HubState

BROKEN_MESSAGE = "the broken plugin always fails to set up"


class FailsLater:
    """An in-process plugin whose *coroutine* set-up raises (the broken one raises at call)."""

    @hookimpl
    async def voltwatch_setup(self, hub: Hub, config: dict[str, Any]) -> None:
        raise ConnectionRefusedError("modem not answering")


def _plugins() -> PluginManager:
    # Only the test plugins: the built-in ones have their own tests, and this test must not
    # depend on their configuration.
    manager = PluginManager()
    manager.load_entrypoints(only=["example", "broken"])
    manager.register(FailsLater(), "fails_later")
    return manager


def _config(tmp_path: Path, http: bool) -> dict[str, Any]:
    return {
        "hub": {"name": "plugin test", "language": "en"},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        "http": {"enabled": http, "host": "127.0.0.1", "port": 0},
        "example": {"greeting": "你好"},
    }


@pytest.fixture
async def hub(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Hub]:
    http = bool(getattr(request, "param", False))
    instance = Hub(tmp_path, config=_config(tmp_path, http), plugin_manager=_plugins())
    await instance.async_start()
    try:
        yield instance
    finally:
        await instance.async_stop()


async def test_hub_starts_without_the_broken_plugins_and_names_them(hub: Hub) -> None:
    assert hub.state is HubState.RUNNING
    failures = {f.name: f for f in hub.plugins.failures}
    assert sorted(failures) == ["broken", "fails_later"]
    assert failures["broken"].stage == "voltwatch_setup"
    assert BROKEN_MESSAGE in failures["broken"].reason
    assert failures["fails_later"].stage == "setup"
    assert "ConnectionRefusedError: modem not answering" in failures["fails_later"].reason
    # Still listed as installed: `voltwatch plugins` shows what is there, failures say why.
    assert {"example", "broken"} <= set(hub.plugins.infos)


async def test_example_service_answers_in_the_full_hub(hub: Hub) -> None:
    assert hub.config["example"] == {"greeting": "你好"}  # validated by the plugin's schema
    context = Context(user_id="alice")
    response = await hub.services.async_call(
        "example", "hello", {"name": "配电箱1"}, context=context, return_response=True
    )
    assert response == {"message": "你好, 配电箱1!"}
    state = hub.states.get("sensor.example_greeting")
    assert state is not None and state.state == "你好, 配电箱1!"
    assert state.context is context


@pytest.mark.parametrize("hub", [True], indirect=True)
async def test_example_route_and_service_over_http(hub: Hub) -> None:
    from hub.http.tokens import create_token

    token = await create_token(hub.storage, "plugin-test")
    base = f"http://127.0.0.1:{hub.http.port}"
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/example") as response:
            assert response.status == 401  # plugin routes under /api/ need a token too
        async with session.get(f"{base}/api/example", headers=auth) as response:
            assert response.status == 200
            assert await response.json() == {"greeting": None}
        async with session.post(
            f"{base}/api/services/example/hello", json={"name": "Li"}, headers=auth
        ) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
            assert body["response"] == {"message": "你好, Li!"}
        async with session.get(f"{base}/api/example", headers=auth) as response:
            assert await response.json() == {"greeting": "你好, Li!"}
        async with session.get(f"{base}/api/plugins", headers=auth) as response:
            listing = await response.json()
        async with session.get(f"{base}/metrics", headers=auth) as response:
            metrics = await response.text()
    assert "# TYPE voltwatch_example_greetings_total counter" in metrics
    assert "\nvoltwatch_example_greetings_total 1\n" in metrics
    assert "example" in {p["name"] for p in listing["plugins"]}
    assert "broken" in {f["name"] for f in listing["failures"]}
    assert "/api/example" in hub.http.openapi()["paths"]


async def test_shutdown_reaches_the_example(tmp_path: Path) -> None:
    instance = Hub(tmp_path, config=_config(tmp_path, False), plugin_manager=_plugins())
    await instance.async_start()
    assert instance.services.has_service("example", "hello")
    await instance.async_stop()
    assert instance.state is HubState.STOPPED
    assert not instance.services.has_service("example", "hello")
