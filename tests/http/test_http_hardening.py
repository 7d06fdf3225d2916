"""Security headers, per-address rate limits on sign-in and tokens, request size limit (#14)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector

from hub.auth.audit import AuditQuery
from hub.http import tokens
from hub.http.security import CSP, content_security_policy

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CSP,
}


@pytest.fixture
async def strict_hub(tmp_path: Path, make_plugins: Any, hub_config: Any) -> AsyncIterator[Any]:
    from hub.hub import Hub

    config = hub_config(http={"port": 0, "max_request_size": 4096,
                              "rate_limits": {"login": "3/min", "tokens": "2/min"}})
    instance = Hub(config_dir=tmp_path, config=config, plugin_manager=make_plugins())
    await instance.async_start()
    try:
        yield instance
    finally:
        await instance.async_stop()


def _session(hub: Any, source: str = "127.0.0.1") -> ClientSession:
    return ClientSession(base_url=hub.http.url, connector=TCPConnector(local_addr=(source, 0)))


@pytest.mark.parametrize("path", ["/api/health", "/api/states", "/api/nowhere", "/login",
                                  "/static/vw.js"])
async def test_every_answer_carries_the_security_headers(
    client: ClientSession, path: str
) -> None:
    async with client.get(path) as resp:
        for name, value in HEADERS.items():
            assert resp.headers.get(name) == value, (path, name)
        assert "Strict-Transport-Security" not in resp.headers  # plain http: no HSTS


@pytest.mark.parametrize(("tiles", "source"), [
    ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "https://*.tile.example.org"),
    ("http://10.0.0.5:8080/tiles/{z}/{x}/{y}.png", "http://10.0.0.5:8080"),
])
def test_a_configured_tile_server_may_serve_images_and_nothing_else(tiles: str,
                                                                     source: str) -> None:
    policy = dict(part.strip().split(" ", 1)
                  for part in content_security_policy(tiles).split(";"))
    assert policy["img-src"] == f"'self' data: blob: {source}"
    assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert content_security_policy("") == CSP and source not in CSP


async def test_login_is_rate_limited_per_address_before_any_password_work(
    strict_hub: Any,
) -> None:
    body = {"name": "nobody", "password": "wrong-password"}
    async with _session(strict_hub) as client:
        for _ in range(3):
            async with client.post("/api/auth/login", json=body) as resp:
                assert resp.status == 401
        async with client.post("/api/auth/login", json=body) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            answer = await resp.json()
            assert "127.0.0.1" in answer["error"] and answer["status"] == 429
    # Another client address still gets its answer.
    async with _session(strict_hub, "127.0.0.2") as other, \
            other.post("/api/auth/login", json=body) as resp:
        assert resp.status == 401
    # The refused attempt did no password work: three failures audited, not four.
    entries = await strict_hub.auth.audit.query(AuditQuery(action_prefixes=["auth.login"]))
    assert len([e for e in entries if e["ip"] == "127.0.0.1"]) == 3
    token = await tokens.create_token(strict_hub.storage, "scraper")
    async with _session(strict_hub, "127.0.0.3") as scraper, \
            scraper.get("/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        text = await resp.text()
    assert 'voltwatch_http_rate_limited_total{bucket="login"} 1' in text


async def test_token_creation_is_rate_limited(strict_hub: Any) -> None:
    token = await tokens.create_token(strict_hub.storage, "system")
    auth = {"Authorization": f"Bearer {token}"}
    async with _session(strict_hub) as client:
        statuses = []
        for _ in range(3):
            async with client.post("/api/tokens", json={"name": "t"}, headers=auth) as resp:
                statuses.append(resp.status)
    assert statuses[:2] == [403, 403]  # system tokens make no tokens over HTTP ...
    assert statuses[2] == 429  # ... and a third try within the minute is not even looked at


async def test_oversized_body_is_413_and_nothing_runs(strict_hub: Any) -> None:
    token = await tokens.create_token(strict_hub.storage, "system")
    auth = {"Authorization": f"Bearer {token}"}
    async with _session(strict_hub) as client, client.post(
        "/api/services/test/echo", data=b"{" + b" " * 8192 + b"}",
        headers={**auth, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["status"] == 413


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    # What the fuzz run found: ids past 64 bits overflowed the database driver (500).
    ("GET", "/api/patrols?template_id=1851913101457920631564355258810368", None, 400),
    ("GET", "/api/workorders/99999999999999999999999", None, 404),
    ("GET", "/api/alarms/99999999999999999999999", None, 404),
    ("POST", "/api/alarms/ack", {"ids": [2**70]}, 400),
    ("GET", "/api/alarms?offset=99999999999999999999999", None, 400),
    # ... and times so far ahead that formatting the due date overflowed.
    ("POST", "/api/patrols/templates",
     {"name": "n", "items": ["a"], "period": "daily", "allowed": 1117739063469979.0}, 400),
    ("POST", "/api/patrols/templates",
     {"name": "n", "items": ["a"], "period": "daily", "start_at": 1e300}, 400),
])
async def test_out_of_range_ids_and_times_are_client_errors(
    client: ClientSession, auth: dict[str, str], method: str, path: str, body: Any, status: int,
) -> None:
    async with client.request(method, path, json=body, headers=auth) as resp:
        assert resp.status == status, await resp.text()
