"""Every endpoint x every role x inside / outside the role's scope.

The probes are keyed by the route table: an endpoint added without a probe here (or without an
access decision in its Route) fails `test_every_route_has_a_decision_and_a_probe`, so nobody
can add an endpoint and forget to decide who may see what through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hub.auth.permissions import RANK
from hub.http.routes import AUTHENTICATED, PUBLIC, SCOPED
from hub.http.server import core_routes

from .conftest import INSIDE, OUTSIDE, ROLES, USERS, Client, Env, states

Probe = Callable[[Env, str, Client], Awaitable[None]]
PROBES: dict[tuple[str, str], Probe] = {}


def probe(method: str, path: str) -> Callable[[Probe], Probe]:
    def register(fn: Probe) -> Probe:
        PROBES[(method, path)] = fn
        return fn

    return register


def at_least(role: str, minimum: str) -> bool:
    return RANK[role] >= RANK[minimum]


def sees_outside(role: str) -> bool:
    return role == "super_admin"


@probe("GET", "/api/health")
async def _health(env: Env, role: str, c: Client) -> None:
    assert (await c.call("GET", "/api/health", headers={"Authorization": ""}))[0] == 200


@probe("GET", "/api/openapi.json")
async def _openapi(env: Env, role: str, c: Client) -> None:
    status, doc = await c.call("GET", "/api/openapi.json")
    assert status == 200 and "/api/users" in doc["paths"]


@probe("GET", "/api/states")
async def _states(env: Env, role: str, c: Client) -> None:
    status, body = await c.call("GET", "/api/states")
    assert status == 200
    seen = {s["attributes"]["device_id"] for s in body}
    assert "arcm-1" in seen
    assert ("arcm-m" in seen) == sees_outside(role), seen
    if role == "user":
        assert seen == {"arcm-1"}
    if role == "project_admin":
        assert seen == {"arcm-1", "arcm-2"}


@probe("GET", "/api/states/{entity_id}")
async def _state(env: Env, role: str, c: Client) -> None:
    assert (await c.call("GET", "/api/states/sensor.arcm_1_residual_current"))[0] == 200
    status, _ = await c.call("GET", "/api/states/sensor.arcm_m_residual_current")
    assert status == (200 if sees_outside(role) else 403)


@probe("GET", "/api/services")
async def _services(env: Env, role: str, c: Client) -> None:
    assert (await c.call("GET", "/api/services"))[0] == 200


@probe("POST", "/api/services/{domain}/{service}")
async def _service(env: Env, role: str, c: Client) -> None:
    control_ok = at_least(role, "project_admin")
    for device, inside in ((INSIDE, True), (OUTSIDE, False)):
        before = len(env.plugin.calls)
        status, body = await c.call("POST", "/api/services/arcm/trip", json={"device_id": device})
        allowed = control_ok and (inside or sees_outside(role))
        assert status == (200 if allowed else 403), (device, body)
        assert len(env.plugin.calls) == before + (1 if allowed else 0), "nothing changed"
        status, _ = await c.call("POST", "/api/services/arcm/read_parameters",
                                 json={"device_id": device})
        assert status == (200 if inside or sees_outside(role) else 403)


@probe("GET", "/api/plugins")
async def _plugins(env: Env, role: str, c: Client) -> None:
    assert (await c.call("GET", "/api/plugins"))[0] == 200


@probe("GET", "/api/devices")
async def _devices(env: Env, role: str, c: Client) -> None:
    status, body = await c.call("GET", "/api/devices")
    assert status == 200
    ids = {d["id"] for d in body}
    assert INSIDE in ids and (OUTSIDE in ids) == sees_outside(role)
    assert {"project", "area", "location", "online"} <= set(body[0])
    status, _ = await c.call("GET", "/api/devices?project=market-1")
    assert status == (200 if sees_outside(role) else 403)


@probe("GET", "/api/devices/{device_id}")
async def _device(env: Env, role: str, c: Client) -> None:
    assert (await c.call("GET", f"/api/devices/{INSIDE}"))[0] == 200
    assert (await c.call("GET", f"/api/devices/{OUTSIDE}"))[0] == (
        200 if sees_outside(role) else 403)


@probe("GET", "/api/projects")
async def _projects(env: Env, role: str, c: Client) -> None:
    status, body = await c.call("GET", "/api/projects")
    assert status == 200
    ids = {p["id"] for p in body}
    expected = {
        "super_admin": {"org-1", "school-1", "school-1-a", "hospital-1", "market-1"},
        "platform_admin": {"school-1", "school-1-a", "hospital-1"},
        "project_admin": {"school-1", "school-1-a"},
        "user": {"school-1-a"},
    }[role]
    assert ids == expected


async def _alarm_ids(env: Env, type_: str = "residual_current_high") -> tuple[int, int]:
    return await env.alarm(INSIDE, type_), await env.alarm(OUTSIDE, type_)


@probe("GET", "/api/alarms")
async def _alarms(env: Env, role: str, c: Client) -> None:
    inside, outside = await _alarm_ids(env)
    status, body = await c.call("GET", "/api/alarms")
    assert status == 200
    ids = {r["id"] for r in body}
    assert inside in ids and (outside in ids) == sees_outside(role)
    status, _ = await c.call("GET", "/api/alarms?project=market-1")
    assert status == (200 if sees_outside(role) else 403)
    status, _ = await c.call("GET", f"/api/alarms?device={OUTSIDE}")
    assert status == (200 if sees_outside(role) else 403)


@probe("GET", "/api/alarms.csv")
async def _alarms_csv(env: Env, role: str, c: Client) -> None:
    await _alarm_ids(env)
    status, text = await c.call("GET", "/api/alarms.csv")
    assert status == 200
    assert "arcm-1" in text and ("arcm-m" in text) == sees_outside(role)
    assert (await c.call("GET", "/api/alarms.csv?project=market-1"))[0] == (
        200 if sees_outside(role) else 403)


@probe("GET", "/api/alarms/{alarm_id}")
async def _alarm(env: Env, role: str, c: Client) -> None:
    inside, outside = await _alarm_ids(env)
    assert (await c.call("GET", f"/api/alarms/{inside}"))[0] == 200
    assert (await c.call("GET", f"/api/alarms/{outside}"))[0] == (
        200 if sees_outside(role) else 403)


async def _people_action(env: Env, role: str, c: Client, path: str, field: str) -> None:
    inside, outside = await _alarm_ids(env)
    status, body = await c.call("POST", path.format(id=outside), json={})
    assert status == (200 if sees_outside(role) else 403), body
    rows = await env.hub.alarms.store.get_many([outside])
    assert (rows[0][field] is not None) == sees_outside(role), "outside: nothing changed"
    status, body = await c.call("POST", path.format(id=inside), json={})
    assert status == 200, body
    rows = await env.hub.alarms.store.get_many([inside])
    assert rows[0][field] is not None


@probe("POST", "/api/alarms/{alarm_id}/ack")
async def _ack(env: Env, role: str, c: Client) -> None:
    await _people_action(env, role, c, "/api/alarms/{id}/ack", "acked_at")


@probe("POST", "/api/alarms/{alarm_id}/handle")
async def _handle(env: Env, role: str, c: Client) -> None:
    await _people_action(env, role, c, "/api/alarms/{id}/handle", "handled_at")


async def _batch(env: Env, role: str, c: Client, path: str, field: str) -> None:
    inside, outside = await _alarm_ids(env, "over_voltage" if "ack" in path else "overload")
    status, body = await c.call("POST", path, json={"ids": [inside, outside]})
    assert status == (200 if sees_outside(role) else 403), body
    rows = {r["id"]: r for r in await env.hub.alarms.store.get_many([inside, outside])}
    if not sees_outside(role):  # refused whole: not even the inside record changed
        assert rows[inside][field] is None and rows[outside][field] is None
    status, body = await c.call("POST", path, json={"ids": [inside]})
    assert status == 200, body


@probe("POST", "/api/alarms/ack")
async def _batch_ack(env: Env, role: str, c: Client) -> None:
    await _batch(env, role, c, "/api/alarms/ack", "acked_at")


@probe("POST", "/api/alarms/handle")
async def _batch_handle(env: Env, role: str, c: Client) -> None:
    await _batch(env, role, c, "/api/alarms/handle", "handled_at")


@probe("POST", "/api/alarms/{alarm_id}/clear")
async def _clear(env: Env, role: str, c: Client) -> None:
    inside, outside = await _alarm_ids(env, "phase_loss")
    may_reset = at_least(role, "project_admin")
    status, body = await c.call("POST", f"/api/alarms/{outside}/clear", json={"force": True})
    assert status == (200 if sees_outside(role) else 403), body
    status, body = await c.call("POST", f"/api/alarms/{inside}/clear", json={"force": True})
    assert status == (200 if may_reset else 403), body
    rows = await env.hub.alarms.store.get_many([inside])
    assert (rows[0]["status"] == "cleared") == may_reset


@probe("POST", "/api/auth/login")
async def _login(env: Env, role: str, c: Client) -> None:
    other = env.client()
    resp = await other.login(USERS[role][0])
    assert resp.status == 200


@probe("POST", "/api/auth/logout")
async def _logout(env: Env, role: str, c: Client) -> None:
    other = await env.signed_in(role)
    assert (await other.call("POST", "/api/auth/logout"))[0] == 200
    assert (await other.call("GET", "/api/auth/me"))[0] == 401


@probe("GET", "/api/auth/me")
async def _me(env: Env, role: str, c: Client) -> None:
    status, body = await c.call("GET", "/api/auth/me")
    assert status == 200 and body["role"] == role and body["name"] == USERS[role][0]


@probe("POST", "/api/auth/password")
async def _password(env: Env, role: str, c: Client) -> None:
    status, _ = await c.call("POST", "/api/auth/password", json={"old": "nope", "new": "x" * 12})
    assert status == 403  # the old password is wrong: nothing changed


@probe("GET", "/api/users")
async def _users(env: Env, role: str, c: Client) -> None:
    status, body = await c.call("GET", "/api/users")
    if not at_least(role, "platform_admin"):
        assert status == 403
        return
    assert status == 200
    names = {u["name"] for u in body}
    if role == "platform_admin":
        assert names == {"centre", "principal", "duty"}  # not root: above it
    else:
        assert names == {"root", "centre", "principal", "duty"}


@probe("POST", "/api/users")
async def _create_user(env: Env, role: str, c: Client) -> None:
    new = {"name": f"new-{role}", "role": "user", "password": "p" * 10,
           "projects": ["school-1-a"]}
    status, body = await c.call("POST", "/api/users", json=new)
    assert status == (201 if at_least(role, "platform_admin") else 403), body
    outside = {**new, "name": f"far-{role}", "projects": ["market-1"]}
    status, _ = await c.call("POST", "/api/users", json=outside)
    assert status == (201 if role == "super_admin" else 403)
    above = {**new, "name": f"boss-{role}", "role": "super_admin", "projects": []}
    status, _ = await c.call("POST", "/api/users", json=above)
    assert status == (201 if role == "super_admin" else 403)
    assert (await env.hub.auth.users.get_by_name(f"boss-{role}") is not None) == (
        role == "super_admin")


@probe("GET", "/api/users/{user_id}")
async def _user(env: Env, role: str, c: Client) -> None:
    duty = env.users["user"]
    status, _ = await c.call("GET", f"/api/users/{duty.id}")
    assert status == (200 if at_least(role, "platform_admin") else 403)
    root = env.users["super_admin"]
    status, _ = await c.call("GET", f"/api/users/{root.id}")
    assert status == (200 if role == "super_admin" else 403)


@probe("PATCH", "/api/users/{user_id}")
async def _patch_user(env: Env, role: str, c: Client) -> None:
    duty = env.users["user"]
    status, _ = await c.call("PATCH", f"/api/users/{duty.id}", json={"phone": "13800000000"})
    assert status == (200 if at_least(role, "platform_admin") else 403)
    status, _ = await c.call("PATCH", f"/api/users/{duty.id}", json={"projects": ["market-1"]})
    assert status == (200 if role == "super_admin" else 403)
    stored = await env.hub.auth.users.get(duty.id)
    assert (stored.projects == ("market-1",)) == (role == "super_admin")


@probe("GET", "/api/tokens")
async def _tokens(env: Env, role: str, c: Client) -> None:
    assert (await c.call("GET", "/api/tokens"))[0] == 200


@probe("POST", "/api/tokens")
async def _create_token(env: Env, role: str, c: Client) -> None:
    status, body = await c.call("POST", "/api/tokens", json={"name": "ci",
                                                             "projects": ["school-1-a"]})
    assert status == 201, body
    status, _ = await c.call("POST", "/api/tokens", json={"name": "ci2",
                                                          "projects": ["market-1"]})
    assert status == (201 if sees_outside(role) else 403)


@probe("DELETE", "/api/tokens/{token_id}")
async def _revoke(env: Env, role: str, c: Client) -> None:
    status, mine = await c.call("POST", "/api/tokens", json={"name": "mine"})
    assert status == 201
    assert (await c.call("DELETE", f"/api/tokens/{mine['id']}"))[0] == 200
    from hub.http.tokens import create_token_with_id

    other = env.users["user" if role != "user" else "project_admin"]
    _token, other_id = await create_token_with_id(env.hub.storage, "theirs", user_id=other.id)
    status, _ = await c.call("DELETE", f"/api/tokens/{other_id}")
    assert status == (200 if role == "super_admin" else 403)


@probe("GET", "/api/audit")
async def _audit(env: Env, role: str, c: Client) -> None:
    await env.signed_in("project_admin")
    await env.signed_in("super_admin")
    status, body = await c.call("GET", "/api/audit?action=auth.login")
    if not at_least(role, "platform_admin"):
        assert status == 403
        return
    assert status == 200
    targets = {r["target"] for r in body}
    assert "principal" in targets  # logins of users it manages
    if role == "platform_admin":
        assert "root" not in targets


@probe("GET", "/api/audit.csv")
async def _audit_csv(env: Env, role: str, c: Client) -> None:
    status, text = await c.call("GET", "/api/audit.csv")
    assert status == (200 if at_least(role, "platform_admin") else 403)
    if status == 200:
        assert text.startswith("\ufeff时间,操作人")


@probe("GET", "/api/websocket")
async def _websocket(env: Env, role: str, c: Client) -> None:
    async with c.session.ws_connect("/api/websocket") as ws:  # the session cookie
        assert (await ws.receive_json(timeout=10))["type"] == "auth_ok"
        await ws.send_json({"id": 1, "type": "get_states"})
        reply = await ws.receive_json(timeout=10)
        seen = {s["attributes"]["device_id"] for s in reply["result"]}
        assert INSIDE in seen and (OUTSIDE in seen) == sees_outside(role)
        await ws.send_json({"id": 2, "type": "subscribe_states"})
        assert (await ws.receive_json(timeout=10))["success"]
        await ws.send_json({"id": 3, "type": "subscribe_events", "event_type": "alarm_raised"})
        assert (await ws.receive_json(timeout=10))["success"]
        env.hub.states.async_set("sensor.arcm_m_residual_current", 2, {"device_id": OUTSIDE})
        await env.alarm(OUTSIDE, "temperature_high_1")
        env.hub.states.async_set("sensor.arcm_1_residual_current", 2, {"device_id": INSIDE})
        await env.alarm(INSIDE, "temperature_high_1")
        got: list[tuple[int, str]] = []
        while len(got) < (4 if sees_outside(role) else 2):
            msg = await ws.receive_json(timeout=10)
            data = msg["event"].get("data", msg["event"])
            got.append((msg["id"], data.get("entity_id") or data.get("device_id")))
        devices = {d for _i, d in got}
        # Ordered stream: the inside alarm came last, so anything outside would be here.
        assert any("arcm_m" in str(d) or d == OUTSIDE for d in devices) == sees_outside(role)
        await ws.send_json({"id": 4, "type": "call_service", "domain": "arcm",
                            "service": "trip", "service_data": {"device_id": OUTSIDE}})
        reply = await ws.receive_json(timeout=10)
        assert reply["success"] == (role == "super_admin"), reply


@probe("GET", "/metrics")
async def _metrics(env: Env, role: str, c: Client) -> None:
    assert (await c.call("GET", "/metrics"))[0] == (200 if role == "super_admin" else 403)


# Endpoints developed beside this issue (work orders, patrols, statistics: issue #7) that have
# not declared their access decision yet. Until they do, the server serves them to
# super_admin and system tokens only (checked below). Their owner adds `scope=` to each
# Route and a probe above, then deletes its prefix here: the test fails on a stale entry.
AWAITING_DECISION = ("/api/workorders", "/api/patrols", "/api/statistics")


def _awaiting(path: str) -> bool:
    return path.startswith(AWAITING_DECISION)


def test_every_route_has_a_decision_and_a_probe() -> None:
    decisions = {PUBLIC, AUTHENTICATED, SCOPED, *RANK}
    routes = [r for r in core_routes() if not _awaiting(r.path)]
    undecided = [f"{r.method} {r.path}" for r in routes if r.scope not in decisions]
    assert undecided == [], "routes without an access decision (Route.scope)"
    pending = [r for r in core_routes() if _awaiting(r.path)]
    decided = [f"{r.method} {r.path}" for r in pending if r.scope is not None]
    assert decided == [], "decided now: add probes above and remove them from AWAITING_DECISION"
    served = {(r.method, r.path) for r in routes}
    assert served - set(PROBES) == set(), "routes without a scope probe in this file"
    assert set(PROBES) - served == set(), "probes for routes that no longer exist"


@pytest.mark.parametrize("role", ROLES)
async def test_every_endpoint_inside_and_outside_scope(env: Env, role: str) -> None:
    states(env.hub)
    client = await env.signed_in(role)
    for (method, path), check in PROBES.items():
        try:
            await check(env, role, client)
        except AssertionError as err:
            raise AssertionError(f"{method} {path} as {role}: {err}") from err


async def test_undecided_routes_are_super_admin_only(env: Env) -> None:
    pending = [r for r in core_routes() if _awaiting(r.path) and r.method == "GET"
               and "{" not in r.path]
    for role in ROLES:
        client = await env.signed_in(role)
        for route in pending:
            status, body = await client.call("GET", route.path)
            if role == "super_admin":
                assert status != 403, (route.path, body)
            else:
                assert status == 403, (route.path, role, body)


@pytest.mark.parametrize("role", ["project_admin", "user"])
async def test_bearer_tokens_get_the_same_answers(env: Env, role: str) -> None:
    """A user's token is that user: the read probes give the same answers as its session."""
    states(env.hub)
    client = await env.bearer(role)
    for key in [("GET", "/api/states"), ("GET", "/api/devices"), ("GET", "/api/alarms"),
                ("POST", "/api/services/{domain}/{service}"), ("GET", "/api/users")]:
        await PROBES[key](env, role, client)


async def test_plugin_routes_without_a_decision_are_super_admin_only(tmp_path: Any) -> None:
    from aiohttp import web

    from hub.core.hookspecs import hookimpl

    from .conftest import make_env

    class RoutePlugin:
        @hookimpl
        def voltwatch_http_routes(self, hub: Any) -> list[Any]:
            async def dtus(request: web.Request) -> web.Response:
                """Every DTU of every site."""
                return web.json_response({"dtus": ["all of them"]})

            return [web.get("/api/plugin-thing", dtus)]

    from hub.core import plugins as plugins_mod

    original = plugins_mod.PluginManager.register
    env = await make_env(tmp_path)
    try:
        await env.hub.http.async_stop()
        env.hub.plugins.register(RoutePlugin(), "route_plugin", version="0")
        await env.hub.http.async_start()
        for role in ROLES:
            client = await env.signed_in(role)
            status, _ = await client.call("GET", "/api/plugin-thing")
            assert status == (200 if role == "super_admin" else 403), role
        system = await env.system()
        assert (await system.call("GET", "/api/plugin-thing"))[0] == 200
    finally:
        plugins_mod.PluginManager.register = original
        for client in env.clients:
            await client.close()
        await env.hub.async_stop()
