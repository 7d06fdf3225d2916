"""The service permission check, tokens (expiry, revocation, narrower scope), the audit log."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from hub.core.context import Context
from hub.core.services import Unauthorized
from hub.http import tokens

from .conftest import INSIDE, OUTSIDE, Env, make_env


async def test_user_may_not_trip_and_it_is_audited(env: Env) -> None:
    client = await env.signed_in("user")
    status, body = await client.call("POST", "/api/services/arcm/trip",
                                     json={"device_id": INSIDE})
    assert status == 403
    assert body["error"] == ("Role user may not call arcm.trip "
                             "(allowed: project_admin, platform_admin, super_admin)")
    assert env.plugin.calls == []
    entry = (await env.audit(action_prefixes=["service.arcm.trip"]))[0]
    assert entry["actor"] == "duty" and entry["result"] == "denied"
    assert entry["project"] == "school-1-a" and entry["target"] == INSIDE
    assert entry["ip"] == "127.0.0.1"


async def test_project_admin_outside_scope_is_refused(env: Env) -> None:
    client = await env.signed_in("project_admin")
    for data in ({"device_id": OUTSIDE}, {"device_id": "no-such-device"},
                 {"device_id": INSIDE, "project": "market-1"}):
        status, body = await client.call("POST", "/api/services/arcm/set_parameter",
                                         json={**data, "name": "x", "value": 1})
        assert status == 403, body
        assert "outside the scope of principal" in body["error"]
    assert env.plugin.calls == []
    status, _ = await client.call("POST", "/api/services/arcm/set_parameter",
                                  json={"device_id": INSIDE, "name": "x", "value": 1})
    assert status == 200
    entries = await env.audit(action_prefixes=["service.arcm.set_parameter"])
    assert [e["result"] for e in entries] == ["ok", "denied", "denied", "denied"]
    assert entries[0]["detail"]["data"] == {"device_id": INSIDE, "name": "x", "value": 1}


async def test_alarm_service_scope_by_record(env: Env) -> None:
    outside = await env.alarm(OUTSIDE)
    inside = await env.alarm(INSIDE)
    client = await env.signed_in("user")
    status, _ = await client.call("POST", "/api/services/alarm/acknowledge",
                                  json={"ids": [inside, outside]})
    assert status == 403
    rows = await env.hub.alarms.store.get_many([inside, outside])
    assert all(r["acked_at"] is None for r in rows)
    status, body = await client.call("POST", "/api/services/alarm/acknowledge",
                                      json={"ids": [inside]})
    assert status == 200 and body["response"]["done"][0]["acked_by"] == "duty"
    status, _ = await client.call("POST", "/api/services/alarm/reset", json={"id": inside})
    assert status == 403  # reset is control: project_admin and above


async def test_context_user_name_is_checked_without_binding(env: Env) -> None:
    """Code that calls a service with Context(user_id=<a user's name>) is checked as that user."""
    with pytest.raises(Unauthorized):
        await env.hub.services.async_call("arcm", "trip", {"device_id": INSIDE},
                                          context=Context(user_id="duty"))
    # The hub acting for itself (automations) is not a user: allowed, and a control is audited.
    await env.hub.services.async_call("arcm", "trip", {"device_id": OUTSIDE},
                                      context=Context(user_id=None))
    entry = (await env.audit(action_prefixes=["service.arcm.trip"]))[0]
    assert entry["actor"] == "system" and entry["result"] == "ok"
    assert entry["project"] == "market-1"


async def test_service_roles_are_configurable(tmp_path: Any) -> None:
    env = await make_env(tmp_path, auth={"service_roles": {"mute": "user",
                                                            "arcm.trip": "platform_admin"}})
    try:
        user = await env.signed_in("user")
        assert (await user.call("POST", "/api/services/arcm/mute",
                                json={"device_id": INSIDE}))[0] == 200
        admin = await env.signed_in("project_admin")
        assert (await admin.call("POST", "/api/services/arcm/trip",
                                 json={"device_id": INSIDE}))[0] == 403
        centre = await env.signed_in("platform_admin")
        assert (await centre.call("POST", "/api/services/arcm/trip",
                                  json={"device_id": INSIDE}))[0] == 200
    finally:
        for client in env.clients:
            await client.close()
        await env.hub.async_stop()


async def test_token_expiry_revocation_and_narrower_scope(env: Env) -> None:
    now = [1_800_000_000.0]
    env.hub.auth.clock = lambda: now[0]
    centre = env.users["platform_admin"]
    token = await tokens.create_token(env.hub.storage, "short", 3600, user_id=centre.id,
                                      scope=["hospital-1"], now=now[0])
    headers = {"Authorization": f"Bearer {token}"}
    client = env.client()
    status, body = await client.call("GET", "/api/devices", headers=headers)
    assert status == 200 and {d["id"] for d in body} == {"arcm-3"}  # narrower than centre
    status, _ = await client.call("GET", "/api/devices/arcm-1", headers=headers)
    assert status == 403
    status, me = await client.call("GET", "/api/auth/me", headers=headers)
    assert me["projects"] == ["hospital-1"] and me["via"] == "token"

    now[0] += 3601
    status, body = await client.call("GET", "/api/devices", headers=headers)
    assert status == 401 and "expired" in body["error"]

    other = await tokens.create_token(env.hub.storage, "long", None, user_id=centre.id)
    headers = {"Authorization": f"Bearer {other}"}
    assert (await client.call("GET", "/api/states", headers=headers))[0] == 200
    owner = await env.signed_in("platform_admin")
    status, listed = await owner.call("GET", "/api/tokens")
    token_id = next(t["id"] for t in listed if t["name"] == "long")
    assert (await owner.call("DELETE", f"/api/tokens/{token_id}"))[0] == 200
    assert (await client.call("GET", "/api/states", headers=headers))[0] == 401
    actions = [e["action"] for e in await env.audit(action_prefixes=["token"])]
    assert actions == ["token.revoke"]


async def test_token_scope_never_wider_than_its_user(env: Env) -> None:
    duty = env.users["user"]
    # A token naming projects beyond its user (made by code that did not check) sees nothing
    # more than the user.
    token = await tokens.create_token(env.hub.storage, "wide", user_id=duty.id,
                                      scope=["school-1-a", "market-1"])
    client = env.client()
    status, body = await client.call("GET", "/api/devices",
                                     headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and {d["id"] for d in body} == {INSIDE}
    # Through the API it is refused outright.
    signed = await env.signed_in("user")
    status, _ = await signed.call("POST", "/api/tokens",
                                  json={"name": "x", "projects": ["school-1"]})
    assert status == 403  # school-1 is above duty's school-1-a


async def test_audit_log_is_append_only(env: Env) -> None:
    await env.signed_in("user")
    table = sa.table("audit_log", sa.column("result"))
    for statement in (table.update().values(result="ok"), table.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with env.hub.storage.engine.begin() as conn:
                await conn.execute(statement)
    assert len(await env.audit()) >= 1


async def test_audit_covers_acks_and_user_changes_and_filters(env: Env) -> None:
    inside = await env.alarm(INSIDE)
    duty = await env.signed_in("user")
    assert (await duty.call("POST", f"/api/alarms/{inside}/ack", json={"note": "在看"}))[0] == 200
    centre = await env.signed_in("platform_admin")
    status, created = await centre.call("POST", "/api/users", json={
        "name": "李四", "role": "user", "password": "p" * 10, "projects": ["hospital-1"]})
    assert status == 201
    status, _ = await centre.call("PATCH", f"/api/users/{created['id']}",
                                  json={"password": "q" * 10})
    assert status == 200
    status, rows = await centre.call("GET", "/api/audit?action=alarm,user")
    assert status == 200
    got = [(r["action"], r["actor"], r["target"], r["result"]) for r in rows]
    assert got == [
        ("user.passwd", "centre", "李四", "ok"),
        ("user.create", "centre", "李四", "ok"),
        ("alarm.ack", "duty", str(inside), "ok"),
    ]
    assert rows[2]["project"] == "school-1-a" and rows[2]["detail"]["note"] == "在看"
    assert "***" in str(rows[0]["detail"]) and "q" * 10 not in str(rows[0]["detail"])
    status, rows = await centre.call("GET", "/api/audit?actor=duty&result=ok&action=auth.login")
    assert [r["actor"] for r in rows] == ["duty"]
    status, text = await centre.call("GET", "/api/audit.csv?lang=en&action=user")
    assert status == 200 and text.startswith("\ufeffTime,Who,Role")
    assert "user.create" in text and "李四" in text
