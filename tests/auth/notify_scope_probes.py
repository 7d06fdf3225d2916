"""Scope probes for the notification endpoints (hub/http/notify_api.py), merged into
test_auth_scope.PROBES: every route needs a decision and a probe there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hub.auth.permissions import RANK

from .conftest import USERS, Client, Env

Probe = Callable[[Env, str, Client], Awaitable[None]]
PROBES: dict[tuple[str, str], Probe] = {}


def probe(method: str, path: str) -> Callable[[Probe], Probe]:
    def register(fn: Probe) -> Probe:
        PROBES[(method, path)] = fn
        return fn

    return register


async def _deliveries(env: Env) -> None:
    store = env.hub.notify.store
    if await store.list_deliveries(projects=None, status=None, alarm_id=None, recipient=None,
                                   limit=1, offset=0):
        return
    for project, who in (("school-1-a", "+8613800000001"), ("market-1", "+8613800000002")):
        await store.insert_delivery({
            "created_at": 1.0, "updated_at": 1.0, "sent_at": None, "alarm_id": None,
            "project": project, "recipient": who, "user_name": None, "channel": "sms",
            "kind": "alarm", "status": "failed", "attempts": 1, "reason": "probe",
            "title": None, "message": "x", "language": "zh-CN", "severity": "major",
            "next_attempt_at": None, "fallback_of": None, "reference": None})


@probe("GET", "/api/notifications/deliveries")
async def _list_deliveries(env: Env, role: str, c: Client) -> None:
    await _deliveries(env)
    status, body = await c.call("GET", "/api/notifications/deliveries")
    if RANK[role] < RANK["project_admin"]:
        assert status == 403
        return
    assert status == 200
    projects = {row["project"] for row in body}
    assert "school-1-a" in projects
    assert ("market-1" in projects) == (role == "super_admin")


@probe("GET", "/api/notifications/notifiers")
async def _notifiers(env: Env, role: str, c: Client) -> None:
    await _deliveries(env)
    status, body = await c.call("GET", "/api/notifications/notifiers")
    if RANK[role] < RANK["project_admin"]:
        assert status == 403
        return
    assert status == 200
    (sms,) = body
    assert sms["name"] == "sms" and sms["platform"] == "probe_sms" and sms["available"]
    assert {"healthy", "last_error", "queue_depth", "sent", "delivered"} <= set(sms)
    # the counts cover the caller's projects only: market-1's failure is root's alone
    store = env.hub.notify.store
    rows = await store.list_deliveries(projects=None, status=["failed"], alarm_id=None,
                                       recipient=None, limit=1000, offset=0)
    user = env.users[role]
    visible = env.hub.auth.scope_for(user)
    expected = [r for r in rows if r["channel"] == "sms"
                and (role == "super_admin" or (r["project"] and visible.can_see(r["project"])))]
    assert sms["failed"] == len(expected) >= 1
    assert any(r["project"] == "market-1" for r in expected) == (role == "super_admin")


async def _phone(env: Env, role: str) -> Any:
    user = env.users[role]
    if not user.phone:
        user = await env.hub.auth.users.update(user.id, phone=f"+861380000{RANK[role]:04d}")
        env.users[role] = user
    return user


@probe("POST", "/api/subscriptions")
async def _create(env: Env, role: str, c: Client) -> None:
    await _phone(env, role)
    status, body = await c.call("POST", "/api/subscriptions",
                                json={"projects": ["school-1-a"], "min_severity": "major"})
    assert status == 201, body
    status, _ = await c.call("POST", "/api/subscriptions", json={"projects": ["market-1"]})
    assert status == (201 if role == "super_admin" else 403)
    # someone else's subscription: admins for the users they manage, a user never
    duty = await _phone(env, "user")
    status, _ = await c.call("POST", "/api/subscriptions", json={"user_id": duty.id})
    assert status == (201 if RANK[role] >= RANK["project_admin"] or role == "user" else 403)


@probe("GET", "/api/subscriptions")
async def _list(env: Env, role: str, c: Client) -> None:
    status, body = await c.call("GET", "/api/subscriptions")
    assert status == 200
    owners = {row["user"] for row in body}
    me = USERS[role][0]
    assert me in owners or not body
    if role == "user":
        assert owners <= {me}


@probe("DELETE", "/api/subscriptions/{sub_id}")
async def _delete(env: Env, role: str, c: Client) -> None:
    await _phone(env, role)
    status, body = await c.call("POST", "/api/subscriptions", json={})
    assert status == 201, body
    status, _ = await c.call("DELETE", f"/api/subscriptions/{body['id']}")
    assert status == 200
    root = env.users["super_admin"]
    if not root.phone:
        root = await env.hub.auth.users.update(root.id, phone="+8613899999999")
        env.users["super_admin"] = root
    row = {"user_id": root.id, "projects": [], "kinds": [], "min_severity": "info",
           "channels": [], "quiet_start": None, "quiet_end": None, "language": None,
           "enabled": True, "created_at": 0.0, "created_by": "probe"}
    sub_id = await env.hub.notify.store.insert_subscription(row)
    status, _ = await c.call("DELETE", f"/api/subscriptions/{sub_id}")
    assert status == (200 if role == "super_admin" else 403)
