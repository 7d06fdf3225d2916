"""Fixtures for the auth tests: a real hub with a project tree, devices in it, a control-service
plugin, one user per role, and clients that sign in through the real login endpoint.

The tree (docs/security.md):

    org-1 ── school-1 ── school-1-a      arcm-1 (school-1-a), arcm-2 (school-1)
          └─ hospital-1                  arcm-3 (hospital-1)
    market-1                             arcm-m (market-1)

Users: `root` super_admin; `centre` platform_admin of school-1 and hospital-1; `principal`
project_admin of school-1; `duty` user of school-1-a. `arcm-1` is inside everyone's scope,
`arcm-m` outside everyone's but root's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import voluptuous as vol

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.hookspecs import hookimpl
from hub.core.notify import Notifier, OutgoingMessage, SendResult
from hub.core.plugins import PluginManager
from hub.core.services import ServiceCall
from hub.http import tokens

PASSWORD = "correct horse battery"
PROJECTS = [
    {"id": "org-1", "name": "监控中心", "children": [
        {"id": "school-1", "name": "第一中学", "children": [{"id": "school-1-a", "name": "教学楼A"}]},
        {"id": "hospital-1", "name": "医院"},
    ]},
    {"id": "market-1", "name": "市场"},
]
DEVICES = [
    {"id": "arcm-1", "name": "配电箱1", "platform": "meter", "project": "school-1-a"},
    {"id": "arcm-2", "platform": "meter", "project": "school-1"},
    {"id": "arcm-3", "platform": "meter", "project": "hospital-1"},
    {"id": "arcm-m", "platform": "meter", "project": "market-1"},
]
USERS = {
    "super_admin": ("root", []),
    "platform_admin": ("centre", ["school-1", "hospital-1"]),
    "project_admin": ("principal", ["school-1"]),
    "user": ("duty", ["school-1-a"]),
}
ROLES = list(USERS)
INSIDE, OUTSIDE = "arcm-1", "arcm-m"


class ProbeNotifier(Notifier):
    """A notification channel that takes every message (the notifiers endpoint lists it)."""

    platform = "probe_sms"

    async def async_send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(reference="1")


class ControlPlugin:
    """A device platform with the control services of CONTRACTS §5, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    @hookimpl
    def voltwatch_device_schemas(self) -> dict[str, Any]:
        return {"meter": vol.Schema({}, extra=vol.ALLOW_EXTRA)}

    @hookimpl
    def voltwatch_notifiers(self) -> dict[str, Any]:
        return {"probe_sms": ({}, ProbeNotifier)}

    @hookimpl
    def voltwatch_setup(self, hub: Any, config: dict[str, Any]) -> None:
        schema = vol.Schema({vol.Required("device_id"): str}, extra=vol.ALLOW_EXTRA)
        for name in ("trip", "close", "reset", "mute", "self_test", "set_parameter",
                     "read_parameters"):
            async def handle(call: ServiceCall, name: str = name) -> dict[str, Any]:
                self.calls.append((name, call.data["device_id"], call.context.user_id))
                return {"device_id": call.data["device_id"], "done": name}

            hub.services.register("arcm", name, handle, schema=schema, supports_response=True)


def hub_config(**extra: Any) -> dict[str, Any]:
    return {
        "hub": {"name": "Auth test", "language": "zh-CN"},
        # Every client here is 127.0.0.1 and signs in hundreds of times: the per-address
        # request rate limit has its own tests (tests/test_http_hardening.py).
        "http": {"port": 0, "rate_limits": {"login": "100000/min", "tokens": "100000/min"}},
        "database": {"url": "sqlite+aiosqlite:///auth.db"},
        "projects": PROJECTS,
        "devices": DEVICES,
        "notify": [{"platform": "probe_sms", "name": "sms"}],
        **extra,
    }


class Client:
    """A browser-like client: cookie jar, and the CSRF token sent on every change."""

    def __init__(self, url: str) -> None:
        # unsafe=True keeps cookies for an IP-address host (127.0.0.1), as browsers do.
        self.session = aiohttp.ClientSession(
            base_url=url, cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        self.csrf: str | None = None
        self.headers: dict[str, str] = {}

    async def login(self, name: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        async with self.session.post("/api/auth/login",
                                     json={"name": name, "password": password}) as resp:
            body = await resp.json()
            if resp.status == 200:
                self.csrf = body["csrf_token"]
            resp.body = body  # type: ignore[attr-defined]
            return resp

    def request(self, method: str, path: str, csrf: bool = True,
                **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if csrf and self.csrf and method.upper() not in ("GET", "HEAD"):
            headers.setdefault("X-CSRF-Token", self.csrf)
        return self.session.request(method, path, headers=headers, **kwargs)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.request(method, path, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def close(self) -> None:
        await self.session.close()


@dataclass
class Env:
    hub: Any
    plugin: ControlPlugin
    users: dict[str, Any] = field(default_factory=dict)  # role -> User
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.hub.http.url

    def client(self) -> Client:
        client = Client(self.url)
        self.clients.append(client)
        return client

    async def signed_in(self, role: str) -> Client:
        client = self.client()
        resp = await client.login(USERS[role][0])
        assert resp.status == 200, resp.body  # type: ignore[attr-defined]
        return client

    async def bearer(self, role: str, scope: list[str] | None = None,
                     expires_in: float | None = None) -> Client:
        user = self.users[role]
        token = await tokens.create_token(self.hub.storage, user.name, expires_in,
                                          user_id=user.id, scope=scope)
        client = self.client()
        client.headers["Authorization"] = f"Bearer {token}"
        return client

    async def system(self) -> Client:
        token = await tokens.create_token(self.hub.storage, "system-client")
        client = self.client()
        client.headers["Authorization"] = f"Bearer {token}"
        return client

    async def alarm(self, device_id: str, type_: str = "residual_current_high") -> int:
        """Raise an alarm on a device; its record id once written."""
        condition = Condition.create(device_id, type_, True, value=550, unit="mA")
        self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
        await self.hub.alarms.async_flush()
        record = self.hub.alarms.get_active(device_id, type_)
        assert record is not None and record.id is not None
        return int(record.id)

    async def audit(self, **query: Any) -> list[dict[str, Any]]:
        from hub.auth.audit import AuditQuery

        return await self.hub.auth.audit.query(AuditQuery(**query))


async def make_env(tmp_path: Path, **extra: Any) -> Env:
    from hub.auth.users import hash_password
    from hub.hub import Hub

    plugin = ControlPlugin()
    plugins = PluginManager()
    plugins.register(plugin, "control", version="0.0.1")
    hub = Hub(config_dir=tmp_path, config=hub_config(**extra), plugin_manager=plugins)
    await hub.async_start()
    env = Env(hub, plugin)
    password_hash = await hash_password(PASSWORD)
    for role, (name, projects) in USERS.items():
        env.users[role] = await hub.auth.users.create(name, role, password_hash,
                                                      projects=projects)
    return env


@pytest.fixture
async def env(tmp_path: Path, hub_db_url: str) -> AsyncIterator[Env]:
    instance = await make_env(tmp_path, database={"url": hub_db_url})
    try:
        yield instance
    finally:
        for client in instance.clients:
            await client.close()
        await instance.hub.async_stop()


def states(hub: Any) -> None:
    """One reading per device (entity -> device through the state's device_id attribute)."""
    for device in DEVICES:
        obj = device["id"].replace("-", "_")
        hub.states.async_set(f"sensor.{obj}_residual_current", 1,
                             {"device_id": device["id"], "unit_of_measurement": "mA"})

