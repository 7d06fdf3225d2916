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


@probe("GET", "/api/history/{entity_id}")
async def _history(env: Env, role: str, c: Client) -> None:
    await env.hub.recorder.async_flush()
    status, body = await c.call("GET", "/api/history/sensor.arcm_1_residual_current")
    assert status == 200 and body["points"], body
    for query in ("", "?format=csv", "?resolution=1d"):
        status, _ = await c.call("GET", f"/api/history/sensor.arcm_m_residual_current{query}")
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


@probe("POST", "/api/devices")
async def _create_device(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    for data, allowed in (({"project": "school-1-a"}, may),
                          ({"project": "market-1"}, may and sees_outside(role)),
                          ({}, may and sees_outside(role))):  # no project: unrestricted only
        device_id = f"new-{role}-{data.get('project', 'none')}"
        status, body = await c.call("POST", "/api/devices",
                                    json={"id": device_id, "platform": "meter", **data})
        assert status == (201 if allowed else 403), (data, body)
        assert (env.hub.devices.get(device_id) is not None) == allowed, "refused: nothing made"


async def _api_device(env: Env, device_id: str, project: str) -> None:
    await env.hub.devices.async_upsert(id=device_id, platform="meter", project=project,
                                       source="api")


@probe("PATCH", "/api/devices/{device_id}")
async def _edit_device(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    await _api_device(env, "edit-in", "school-1-a")
    await _api_device(env, "edit-out", "market-1")
    status, _ = await c.call("PATCH", "/api/devices/edit-in", json={"name": "新名"})
    assert status == (200 if may else 403)
    status, _ = await c.call("PATCH", "/api/devices/edit-out", json={"name": "新名"})
    assert status == (200 if may and sees_outside(role) else 403)
    status, _ = await c.call("PATCH", f"/api/devices/{INSIDE}", json={"name": "x"})
    assert status == (409 if may else 403)  # configuration.yaml owns it
    status, _ = await c.call("PATCH", "/api/devices/edit-in", json={"project": "market-1"})
    assert status == (200 if may and sees_outside(role) else 403)  # moving it out of scope
    assert env.hub.devices.get("edit-in").project == (
        "market-1" if may and sees_outside(role) else "school-1-a")


@probe("DELETE", "/api/devices/{device_id}")
async def _delete_device(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    await _api_device(env, "del-in", "school-1-a")
    await _api_device(env, "del-out", "market-1")
    for device_id, allowed in (("del-in", may), ("del-out", may and sees_outside(role))):
        status, _ = await c.call("DELETE", f"/api/devices/{device_id}")
        assert status == (200 if allowed else 403), device_id
        assert (env.hub.devices.get(device_id) is None) == allowed
    status, _ = await c.call("DELETE", f"/api/devices/{INSIDE}")
    assert status == (409 if may else 403)


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


@probe("PATCH", "/api/auth/me")
async def _my_language(env: Env, role: str, c: Client) -> None:
    # Everyone may set their own language, and only their own: it lands on their record.
    status, body = await c.call("PATCH", "/api/auth/me", json={"language": "en"})
    assert status == 200 and body["language"] == "en", body
    user = await env.hub.auth.users.get_by_name(USERS[role][0])
    assert user is not None and user.language == "en"
    status, body = await c.call("PATCH", "/api/auth/me", json={"language": "fr"})
    assert status == 400, body
    status, body = await c.call("PATCH", "/api/auth/me", json={"language": None})
    assert status == 200 and body["language"] is None


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


# -- work orders, patrols, statistics (docs/security.md) ---------------------------------------
# Orders and rounds are made directly (as the hub acting for itself), one inside everyone's
# scope (arcm-1, school-1-a) and one outside everyone's but root's (arcm-m, market-1); either
# given to someone else (`李师傅`) or to the prober itself, because the assignee may do what
# its role alone may not.
OTHER = "李师傅"


def me(role: str) -> str:
    return USERS[role][0]


async def _orders(env: Env, assignee: str | None = OTHER) -> tuple[int, int]:
    made = []
    for device in (INSIDE, OUTSIDE):
        order, _ = await env.hub.workorders.async_create(
            title=f"probe {device}", device_id=device, assignee=assignee)
        made.append(order["id"])
    return made[0], made[1]


async def _order(env: Env, order_id: int) -> dict[str, Any]:
    return await env.hub.workorders.async_get(order_id)


@probe("GET", "/api/workorders")
async def _workorders(env: Env, role: str, c: Client) -> None:
    inside, outside = await _orders(env)
    status, body = await c.call("GET", "/api/workorders")
    assert status == 200, body
    ids = {o["id"] for o in body}
    assert inside in ids and (outside in ids) == sees_outside(role)
    assert all(o["project"] in ("school-1-a", "school-1", "hospital-1", "market-1")
               for o in body)
    status, body = await c.call("GET", "/api/workorders?project=school-1-a")
    assert status == 200 and inside in {o["id"] for o in body}
    assert outside not in {o["id"] for o in body}
    for query in ("project=market-1", f"device={OUTSIDE}"):
        status, body = await c.call("GET", f"/api/workorders?{query}")
        assert status == (200 if sees_outside(role) else 403), (query, body)
    status, _ = await c.call("GET", "/api/workorders?project=school-1")
    assert status == (200 if role != "user" else 403)  # duty's scope is school-1-a only


@probe("POST", "/api/workorders")
async def _create_workorder(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    status, body = await c.call("POST", "/api/workorders",
                                json={"device_id": INSIDE, "title": f"by {role}"})
    assert status == (201 if may else 403), body
    if may:
        assert body["created_by"] == me(role) and body["project"] == "school-1-a"
    outside_alarm = await env.alarm(OUTSIDE, "over_temperature")
    for data in ({"device_id": OUTSIDE, "title": "x"}, {"alarm_id": outside_alarm},
                 {"title": "no project"},
                 {"device_id": INSIDE, "project": "market-1", "title": "x"}):
        before = len(await env.hub.workorders.store.query(_all_orders()))
        status, body = await c.call("POST", "/api/workorders", json=data)
        assert status == (201 if sees_outside(role) else 403), (data, body)
        after = len(await env.hub.workorders.store.query(_all_orders()))
        assert after == before + (1 if sees_outside(role) else 0), "refused: nothing made"
    status, _ = await c.call("POST", "/api/workorders", json={"alarm_id": 999999})
    assert status == (404 if may else 403)


def _all_orders() -> Any:
    from hub.storage.workorder_store import WorkOrderQuery

    return WorkOrderQuery(limit=10_000)


@probe("GET", "/api/workorders/{workorder_id:\\d+}")
async def _workorder(env: Env, role: str, c: Client) -> None:
    inside, outside = await _orders(env)
    status, body = await c.call("GET", f"/api/workorders/{inside}")
    assert status == 200 and body["history"], body
    assert (await c.call("GET", f"/api/workorders/{outside}"))[0] == (
        200 if sees_outside(role) else 403)
    assert (await c.call("GET", "/api/workorders/999999"))[0] == 404


@probe("PATCH", "/api/workorders/{workorder_id:\\d+}")
async def _patch_workorder(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    inside, outside = await _orders(env)
    status, body = await c.call("PATCH", f"/api/workorders/{inside}", json={"assignee": "王工"})
    assert status == (200 if may else 403), body
    assert ((await _order(env, inside))["assignee"] == "王工") == may
    status, body = await c.call("PATCH", f"/api/workorders/{outside}", json={"assignee": "王工"})
    assert status == (200 if sees_outside(role) else 403), body
    assert ((await _order(env, outside))["assignee"] == "王工") == sees_outside(role)
    # given to the prober: every role may accept and repair its own order inside its scope
    mine, mine_outside = await _orders(env, assignee=me(role))
    for step in ("accepted", "repaired"):
        status, body = await c.call("PATCH", f"/api/workorders/{mine}", json={"status": step})
        assert status == 200 and body["status"] == step, body
    status, body = await c.call("PATCH", f"/api/workorders/{mine}", json={"status": "verified"})
    assert status == (200 if may else 403), body  # signing off is the supervisor's
    status, _ = await c.call("PATCH", f"/api/workorders/{mine_outside}",
                             json={"status": "accepted"})
    assert status == (200 if sees_outside(role) else 403)  # scope beats assignment
    assert ((await _order(env, mine_outside))["status"] == "accepted") == sees_outside(role)


@probe("POST", "/api/workorders/{workorder_id:\\d+}/comments")
async def _comment_workorder(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    inside, outside = await _orders(env)
    mine, _ = await _orders(env, assignee=me(role))
    path = "/api/workorders/{}/comments"
    assert (await c.call("POST", path.format(inside), json={"text": "看过"}))[0] == (
        201 if may else 403)
    assert (await c.call("POST", path.format(mine), json={"text": "到现场"}))[0] == 201
    assert (await c.call("POST", path.format(outside), json={"text": "x"}))[0] == (
        201 if sees_outside(role) else 403)
    history = await env.hub.workorders.store.history(outside)
    assert any(e["action"] == "comment" for e in history) == sees_outside(role)


def _photo_form() -> Any:
    import aiohttp

    from tests.hazards.conftest import tiny_png

    form = aiohttp.FormData()
    form.add_field("photo", tiny_png(), filename="现场.png", content_type="image/png")
    return form


@probe("POST", "/api/workorders/{workorder_id:\\d+}/photos")
async def _upload_photo(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    inside, outside = await _orders(env)
    mine, _ = await _orders(env, assignee=me(role))
    path = "/api/workorders/{}/photos"
    assert (await c.call("POST", path.format(inside), data=_photo_form()))[0] == (
        201 if may else 403)
    status, body = await c.call("POST", path.format(mine), data=_photo_form())
    assert status == 201 and body["uploaded_by"] == me(role), body
    assert (await c.call("POST", path.format(outside), data=_photo_form()))[0] == (
        201 if sees_outside(role) else 403)
    assert (await env.hub.workorders.store.photo_count(outside) == 1) == sees_outside(role)


async def _orders_with_photos(env: Env) -> tuple[tuple[int, int], tuple[int, int]]:
    """(inside order, its photo), (outside order, its photo), uploaded by a system token."""
    system = await env.system()
    out = []
    for order_id in await _orders(env):
        status, body = await system.call("POST", f"/api/workorders/{order_id}/photos",
                                         data=_photo_form())
        assert status == 201, body
        out.append((order_id, body["id"]))
    return out[0], out[1]


@probe("GET", "/api/workorders/{workorder_id:\\d+}/photos")
async def _photos(env: Env, role: str, c: Client) -> None:
    (inside, _), (outside, _) = await _orders_with_photos(env)
    status, body = await c.call("GET", f"/api/workorders/{inside}/photos")
    assert status == 200 and len(body) == 1
    assert (await c.call("GET", f"/api/workorders/{outside}/photos"))[0] == (
        200 if sees_outside(role) else 403)


@probe("GET", "/api/workorders/{workorder_id:\\d+}/photos/{photo_id:\\d+}")
async def _photo(env: Env, role: str, c: Client) -> None:
    (inside, inside_photo), (outside, outside_photo) = await _orders_with_photos(env)
    async with c.request("GET", f"/api/workorders/{inside}/photos/{inside_photo}") as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
    async with c.request("GET", f"/api/workorders/{outside}/photos/{outside_photo}") as resp:
        assert resp.status == (200 if sees_outside(role) else 403)
        assert (resp.content_type == "image/png") == sees_outside(role)


async def _templates(env: Env, assignee: str | None = OTHER) -> tuple[int, int]:
    made = []
    for project in ("school-1-a", "market-1"):
        template = await env.hub.patrols.async_create_template({
            "name": f"巡检 {project}", "project": project, "items": ["柜门关闭", "灭火器"],
            "period": "daily", "assignee": assignee})
        made.append(template["id"])
    return made[0], made[1]


async def _rounds(env: Env, assignee: str | None = OTHER) -> tuple[int, int]:
    """A pending round in school-1-a and one in market-1 (a template starting now makes its
    first round at once)."""
    from hub.storage.patrol_store import PatrolQuery

    rounds = []
    for template_id in await _templates(env, assignee):
        found = await env.hub.patrols.store.instances(PatrolQuery(template_id=template_id))
        assert len(found) == 1
        rounds.append(found[0]["id"])
    return rounds[0], rounds[1]


@probe("GET", "/api/patrols/templates")
async def _patrol_templates(env: Env, role: str, c: Client) -> None:
    inside, outside = await _templates(env)
    status, body = await c.call("GET", "/api/patrols/templates")
    assert status == 200, body
    ids = {t["id"] for t in body}
    assert inside in ids and (outside in ids) == sees_outside(role)
    assert (await c.call("GET", "/api/patrols/templates?project=market-1"))[0] == (
        200 if sees_outside(role) else 403)


@probe("POST", "/api/patrols/templates")
async def _create_patrol_template(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    base = {"name": "配电室巡检", "items": ["柜门关闭"], "period": "weekly"}
    status, body = await c.call("POST", "/api/patrols/templates",
                                json={**base, "project": "school-1-a"})
    assert status == (201 if may else 403), body
    for data in ({**base, "project": "market-1"}, base,
                 {**base, "project": "school-1-a",
                  "items": [{"name": "表计", "device_id": OUTSIDE}]}):
        before = len(await env.hub.patrols.store.templates())
        status, body = await c.call("POST", "/api/patrols/templates", json=data)
        assert status == (201 if sees_outside(role) else 403), (data, body)
        after = len(await env.hub.patrols.store.templates())
        assert after == before + (1 if sees_outside(role) else 0)


@probe("PATCH", "/api/patrols/templates/{template_id:\\d+}")
async def _patch_patrol_template(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    inside, outside = await _templates(env)
    status, _ = await c.call("PATCH", f"/api/patrols/templates/{inside}", json={"name": "新"})
    assert status == (200 if may else 403)
    status, _ = await c.call("PATCH", f"/api/patrols/templates/{outside}", json={"name": "新"})
    assert status == (200 if sees_outside(role) else 403)
    row = await env.hub.patrols.store.template(outside)
    assert (row["name"] == "新") == sees_outside(role)


@probe("GET", "/api/patrols")
async def _patrol_rounds(env: Env, role: str, c: Client) -> None:
    inside, outside = await _rounds(env)
    status, body = await c.call("GET", "/api/patrols")
    assert status == 200, body
    ids = {r["id"] for r in body}
    assert inside in ids and (outside in ids) == sees_outside(role)
    assert (await c.call("GET", "/api/patrols?project=market-1"))[0] == (
        200 if sees_outside(role) else 403)


@probe("GET", "/api/patrols/{patrol_id:\\d+}")
async def _patrol_round(env: Env, role: str, c: Client) -> None:
    inside, outside = await _rounds(env)
    assert (await c.call("GET", f"/api/patrols/{inside}"))[0] == 200
    assert (await c.call("GET", f"/api/patrols/{outside}"))[0] == (
        200 if sees_outside(role) else 403)
    assert (await c.call("GET", "/api/patrols/999999"))[0] == 404


@probe("PATCH", "/api/patrols/{patrol_id:\\d+}")
async def _assign_patrol(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    inside, outside = await _rounds(env)
    status, _ = await c.call("PATCH", f"/api/patrols/{inside}", json={"assignee": "王工"})
    assert status == (200 if may else 403)
    status, _ = await c.call("PATCH", f"/api/patrols/{outside}", json={"assignee": "王工"})
    assert status == (200 if sees_outside(role) else 403)
    row = await env.hub.patrols.store.instance(outside)
    assert (row["assignee"] == "王工") == sees_outside(role)


@probe("POST", "/api/patrols/{patrol_id:\\d+}/complete")
async def _complete_patrol(env: Env, role: str, c: Client) -> None:
    may = at_least(role, "project_admin")
    results = {"results": [{"item": 0, "ok": True}, {"item": 1, "ok": True}]}
    inside, outside = await _rounds(env)
    status, body = await c.call("POST", f"/api/patrols/{inside}/complete", json=results)
    assert status == (200 if may else 403), body
    status, body = await c.call("POST", f"/api/patrols/{outside}/complete", json=results)
    assert status == (200 if sees_outside(role) else 403), body
    mine, mine_outside = await _rounds(env, assignee=me(role))
    status, body = await c.call("POST", f"/api/patrols/{mine}/complete", json=results)
    assert status == 200 and body["completed_by"] == me(role), body
    status, _ = await c.call("POST", f"/api/patrols/{mine_outside}/complete", json=results)
    assert status == (200 if sees_outside(role) else 403)
    row = await env.hub.patrols.store.instance(mine_outside)
    assert (row["status"] == "completed") == sees_outside(role)


@probe("GET", "/api/statistics")
async def _statistics(env: Env, role: str, c: Client) -> None:
    await _alarm_ids(env, "over_current")
    status, body = await c.call("GET", "/api/statistics")
    assert status == 200, body
    projects = {row["project"] for row in body["by_project"]}
    devices = {row["device_id"] for row in body["by_device"]}
    assert "school-1-a" in projects and INSIDE in devices
    assert ("market-1" in projects) == sees_outside(role)
    assert (OUTSIDE in devices) == sees_outside(role)
    if role == "user":
        assert projects == {"school-1-a"}
    assert body["totals"]["total"] == sum(row["total"] for row in body["by_project"])
    assert (await c.call("GET", "/api/statistics?project=market-1"))[0] == (
        200 if sees_outside(role) else 403)
    assert (await c.call("GET", "/api/statistics?project=school-1"))[0] == (
        200 if role != "user" else 403)


@probe("GET", "/api/reports/monthly")
async def _monthly_report(env: Env, role: str, c: Client) -> None:
    await _alarm_ids(env, "over_current")
    status, html = await c.call("GET", "/api/reports/monthly")
    assert status == 200, html
    assert f'data-device="{INSIDE}"' in html
    assert (f'data-device="{OUTSIDE}"' in html) == sees_outside(role)
    assert (await c.call("GET", "/api/reports/monthly?project=market-1"))[0] == (
        200 if sees_outside(role) else 403)
    assert (await c.call("GET", "/api/reports/monthly?project=school-1"))[0] == (
        200 if role != "user" else 403)


from . import notify_scope_probes

PROBES.update(notify_scope_probes.PROBES)

# Path prefixes of endpoints developed beside this issue that have not declared their access
# decision yet (none now: work orders, patrols and statistics have theirs). Until they do, the
# server serves them to super_admin and system tokens only (checked below). Their owner adds
# `scope=` to each Route and a probe above, then deletes its prefix here: the test fails on a
# stale entry.
AWAITING_DECISION: tuple[str, ...] = ()


def _awaiting(path: str) -> bool:
    return path.startswith(AWAITING_DECISION)


# -- automations (project_admin and above; an automation's project is its scope) -------------
async def _automations(env: Env) -> tuple[str, str]:
    """One automation inside the scope of every role (school-1-a), one outside (market-1)."""
    from hub.core.automations.schema import validate_one
    from hub.core.automations.yamlfile import AutomationFile

    engine = env.hub.automations
    for automation_id, project in (("auto-in", "school-1-a"), ("auto-out", "market-1")):
        raw = {"id": automation_id, "project": project,
               "triggers": [{"trigger": "event", "event_type": "never"}],
               "actions": [{"delay": "1s"}]}
        checked, _ = validate_one(raw)
        AutomationFile(env.hub.config_dir / "automations.yaml").put(raw)
        await engine.async_set(checked)
    return "auto-in", "auto-out"


def _auto_body(project: str) -> dict[str, Any]:
    return {"project": project, "triggers": [{"trigger": "event", "event_type": "x"}],
            "actions": [{"delay": "2s"}]}


async def _auto_expect(c: Client, role: str, method: str, path: str,
                       body: Any = None, ok: int = 200) -> None:
    inside_ok = at_least(role, "project_admin")
    for which, allowed in (("auto-in", inside_ok), ("auto-out", inside_ok and sees_outside(role))):
        status, answer = await c.call(method, path.format(id=which), json=body)
        assert status == (ok if allowed else 403), (which, answer)


@probe("GET", "/api/automations")
async def _automations_list(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    status, body = await c.call("GET", "/api/automations")
    assert status == (200 if at_least(role, "project_admin") else 403)
    if status == 200:
        ids = {a["id"] for a in body}
        assert "auto-in" in ids and ("auto-out" in ids) == sees_outside(role)


@probe("POST", "/api/automations")
async def _automations_create(env: Env, role: str, c: Client) -> None:
    for project, inside in (("school-1-a", True), ("market-1", False)):
        body = {"id": f"new-{role}-{project}", **_auto_body(project)}
        status, answer = await c.call("POST", "/api/automations", json=body)
        allowed = at_least(role, "project_admin") and (inside or sees_outside(role))
        assert status == (201 if allowed else 403), answer


@probe("GET", "/api/automations/{automation_id}")
async def _automation_get(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    await _auto_expect(c, role, "GET", "/api/automations/{id}")


@probe("PUT", "/api/automations/{automation_id}")
async def _automation_put(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    inside_ok = at_least(role, "project_admin")
    status, _ = await c.call("PUT", "/api/automations/auto-in", json=_auto_body("school-1-a"))
    assert status == (200 if inside_ok else 403)
    status, _ = await c.call("PUT", "/api/automations/auto-out", json=_auto_body("market-1"))
    assert status == (200 if inside_ok and sees_outside(role) else 403)


@probe("PUT", "/api/automations/{automation_id}/yaml")
async def _automation_put_yaml(env: Env, role: str, c: Client) -> None:
    """Typed YAML: the existing automation's scope, and the scope the text gives it."""
    await _automations(env)
    inside_ok = at_least(role, "project_admin")

    def text(automation_id: str, project: str) -> dict[str, str]:
        return {"yaml": f"- id: {automation_id}  # typed\n  project: {project}\n"
                        "  triggers: [{trigger: event, event_type: x}]\n"
                        "  actions: [{delay: 2s}]\n"}

    for which, project, allowed in (
            ("auto-in", "school-1-a", inside_ok),
            ("auto-out", "market-1", inside_ok and sees_outside(role)),
            ("auto-in", "market-1", inside_ok and sees_outside(role)),  # moved out of scope
            (f"typed-{role}", "market-1", inside_ok and sees_outside(role))):  # a new one
        status, answer = await c.call("PUT", f"/api/automations/{which}/yaml",
                                      json=text(which, project))
        assert status in ((200, 201) if allowed else (403,)), (which, project, answer)


@probe("DELETE", "/api/automations/{automation_id}")
async def _automation_delete(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    await _auto_expect(c, role, "DELETE", "/api/automations/{id}")


@probe("GET", "/api/automations/{automation_id}/traces")
async def _automation_traces(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    await _auto_expect(c, role, "GET", "/api/automations/{id}/traces")


@probe("GET", "/api/automations/{automation_id}/versions")
async def _automation_versions(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    await _auto_expect(c, role, "GET", "/api/automations/{id}/versions")


@probe("POST", "/api/automations/{automation_id}/rollback")
async def _automation_rollback(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    inside_ok = at_least(role, "project_admin")
    for which, allowed in (("auto-in", inside_ok), ("auto-out", inside_ok and sees_outside(role))):
        status, _ = await c.call("POST", f"/api/automations/{which}/rollback",
                                 json={"version": 999})
        assert status == (404 if allowed else 403), which


@probe("POST", "/api/automations/{automation_id}/dry_run")
async def _automation_dry_run(env: Env, role: str, c: Client) -> None:
    await _automations(env)
    await _auto_expect(c, role, "POST", "/api/automations/{id}/dry_run",
                       body={"start": 1, "end": 2})


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


# -- pages -----------------------------------------------------------------------------------
# Every page of the web UI (hub.http.pages.PAGES) x every role. A page is a shell whose data
# comes through the API above, so its decision is "may this role open the screen"; a page
# added without a probe here fails `test_every_page_has_a_decision_and_a_probe`.
PagePredicate = Callable[[str], bool]
PAGE_PROBES: dict[str, tuple[str, PagePredicate]] = {
    "/": ("/", lambda role: True),
    "/monitor": ("/monitor", lambda role: True),
    "/monitor/{device_id}": (f"/monitor/{INSIDE}", lambda role: True),
    "/hazards": ("/hazards", lambda role: True),
    # The service policy decides: by default project_admin and above may control devices.
    "/control": ("/control", lambda role: at_least(role, "project_admin")),
    "/settings": ("/settings", lambda role: True),
    "/automations": ("/automations", lambda role: at_least(role, "project_admin")),
}


def test_every_page_has_a_decision_and_a_probe() -> None:
    from hub.http.pages import PAGES

    decisions = {AUTHENTICATED, *RANK}
    assert [p.path for p in PAGES if p.scope not in decisions] == []
    assert {p.path for p in PAGES} == set(PAGE_PROBES)


@pytest.mark.parametrize("role", ROLES)
async def test_pages_per_role(env: Env, role: str) -> None:
    from hub.http.pages import PAGES

    nobody = env.client()
    client = await env.signed_in(role)
    bearer = await env.bearer(role)
    for page in PAGES:
        path, allowed = PAGE_PROBES[page.path]
        async with nobody.request("GET", path, allow_redirects=False) as resp:
            assert resp.status == 302, (path, "no session")
            assert resp.headers["Location"].startswith("/login?next=")
        for who in (client, bearer):
            status, text = await who.call("GET", path)
            assert status == (200 if allowed(role) else 403), (path, role, status)
            # The navigation offers exactly the screens the role may open.
            assert ('href="/control"' in text) == at_least(role, "project_admin"), (path, role)


async def test_control_page_follows_the_service_policy(tmp_path: Any) -> None:
    """A site that lets duty officers mute gives them the control screen with mute only."""
    from .conftest import make_env

    env = await make_env(tmp_path, auth={"service_roles": {"mute": "user"}})
    try:
        client = await env.signed_in("user")
        status, text = await client.call("GET", "/control")
        assert status == 200
        assert '"controls": ["mute"]' in text
    finally:
        for client in env.clients:
            await client.close()
        await env.hub.async_stop()
