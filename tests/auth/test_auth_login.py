"""Login, lockout and back-off, CSRF, session expiry, password change — against a real hub.

Time is the hub's clock (`hub.auth.clock`), moved by the test: no sleeps, no timing asserts.
"""

from __future__ import annotations

from typing import Any

from .conftest import PASSWORD, Env


def _clock(env: Env, start: float = 1_800_000_000.0) -> list[float]:
    now = [start]
    env.hub.auth.clock = lambda: now[0]
    return now


async def test_login_sets_a_safe_cookie_and_me_answers(env: Env) -> None:
    client = env.client()
    resp = await client.login("duty")
    assert resp.status == 200
    cookie = resp.headers["Set-Cookie"]
    assert "voltwatch_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on loopback: `auto`
    assert "password_hash" not in str(resp.body)  # type: ignore[attr-defined]
    status, me = await client.call("GET", "/api/auth/me")
    assert status == 200 and me["name"] == "duty" and me["role"] == "user"
    assert me["projects"] == ["school-1-a"] and me["via"] == "session"
    assert me["csrf_token"] == client.csrf


async def test_secure_cookies_can_be_forced(tmp_path: Any) -> None:
    from .conftest import make_env

    env = await make_env(tmp_path, http={"port": 0, "secure_cookies": True})
    try:
        resp = await env.client().login("duty")
        assert "Secure" in resp.headers["Set-Cookie"]
    finally:
        for client in env.clients:
            await client.close()
        await env.hub.async_stop()


async def test_wrong_password_is_401_and_audited(env: Env) -> None:
    client = env.client()
    for name, password in [("duty", "wrong"), ("nobody", PASSWORD)]:
        resp = await client.login(name, password)
        assert resp.status == 401
        assert "Wrong user name or password" in resp.body["error"]  # type: ignore[attr-defined]
    assert (await client.call("GET", "/api/auth/me"))[0] == 401
    rows = await env.audit(action_prefixes=["auth.login"])
    reasons = [(r["target"], r["result"], r["detail"]["reason"]) for r in rows]
    assert ("duty", "failed", "wrong password") in reasons
    assert ("nobody", "failed", "unknown user") in reasons
    assert all(r["ip"] == "127.0.0.1" for r in rows)


async def test_login_needs_json(env: Env) -> None:
    client = env.client()
    async with client.session.post("/api/auth/login", data="name=duty&password=x",
                                   headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status in (400, 415)


async def test_lockout_backs_off_and_ends(env: Env) -> None:
    now = _clock(env)
    client = env.client()
    for _ in range(5):
        assert (await client.login("duty", "wrong")).status == 401
    # Locked now: even the right password is refused, with a Retry-After.
    resp = await client.login("duty")
    assert resp.status == 429 and resp.headers["Retry-After"] == "60"
    user = await env.hub.auth.users.get_by_name("duty")
    assert user.failed_logins == 5 and user.locked_until == now[0] + 60

    now[0] += 61  # the first lock is over; one more failure locks for twice as long
    assert (await client.login("duty", "wrong")).status == 401
    resp = await client.login("duty")
    assert resp.status == 429 and resp.headers["Retry-After"] == "120"

    now[0] += 121
    resp = await client.login("duty")
    assert resp.status == 200
    user = await env.hub.auth.users.get_by_name("duty")
    assert user.failed_logins == 0 and user.locked_until is None
    results = [r["result"] for r in await env.audit(action_prefixes=["auth.login"])]
    assert results.count("locked") == 2 and results[0] == "ok"
    # Other users were never locked by duty's failures.
    assert (await env.client().login("principal")).status == 200


async def test_one_address_trying_many_names_is_locked(env: Env) -> None:
    now = _clock(env)
    client = env.client()
    for index in range(20):
        assert (await client.login(f"guess-{index}", "x")).status == 401
    resp = await client.login("duty")  # a real user, from the same address: refused
    assert resp.status == 429
    now[0] += 61
    assert (await client.login("duty")).status == 200


async def test_csrf_missing_or_forged_is_403_and_nothing_changes(env: Env) -> None:
    client = await env.signed_in("project_admin")
    calls = len(env.plugin.calls)
    for headers in ({"X-CSRF-Token": ""}, {"X-CSRF-Token": "forged-" + (client.csrf or "")}):
        async with client.request("POST", "/api/services/arcm/trip", csrf=False,
                                  json={"device_id": "arcm-1"}, headers=headers) as resp:
            assert resp.status == 403
            assert "CSRF" in (await resp.json())["error"]
    async with client.request("POST", "/api/services/arcm/trip", csrf=False,
                              json={"device_id": "arcm-1"}) as resp:
        assert resp.status == 403
    assert len(env.plugin.calls) == calls  # nothing was tripped
    # A GET needs no token; the right token works.
    assert (await client.call("GET", "/api/states"))[0] == 200
    status, _ = await client.call("POST", "/api/services/arcm/trip", json={"device_id": "arcm-1"})
    assert status == 200 and len(env.plugin.calls) == calls + 1
    denied = await env.audit(action_prefixes=["auth.csrf"])
    assert len(denied) == 3 and {d["result"] for d in denied} == {"denied"}
    # A bearer token needs no CSRF token: browsers never send one by themselves.
    bearer = await env.bearer("project_admin")
    status, _ = await bearer.call("POST", "/api/services/arcm/trip", json={"device_id": "arcm-1"})
    assert status == 200


async def test_session_expires_idle_and_absolute(env: Env) -> None:
    now = _clock(env)
    client = await env.signed_in("user")
    now[0] += 3600  # within the idle timeout (2 h): alive, and the activity is noted
    assert (await client.call("GET", "/api/auth/me"))[0] == 200
    now[0] += 7201  # idle longer than 2 h
    status, body = await client.call("GET", "/api/auth/me")
    assert status == 401 and "Session expired" in body["error"]

    client = await env.signed_in("user")
    for _ in range(7):  # busy all the time (never idle 2 h) ...
        now[0] += 6000
        assert (await client.call("GET", "/api/auth/me"))[0] == 200
    now[0] += 6000  # ... but 12 h after login it ends anyway
    assert (await client.call("GET", "/api/auth/me"))[0] == 401


async def test_logout_ends_the_session(env: Env) -> None:
    client = await env.signed_in("user")
    assert (await client.call("POST", "/api/auth/logout"))[0] == 200
    assert (await client.call("GET", "/api/auth/me"))[0] == 401


async def test_password_change(env: Env) -> None:
    first = await env.signed_in("user")
    second = await env.signed_in("user")
    status, body = await first.call("POST", "/api/auth/password",
                                    json={"old": PASSWORD, "new": "short"})
    assert status == 400 and "at least 8" in body["error"]
    status, _ = await first.call("POST", "/api/auth/password",
                                 json={"old": "not it", "new": "a new password"})
    assert status == 403
    status, _ = await first.call("POST", "/api/auth/password",
                                 json={"old": PASSWORD, "new": "a new password"})
    assert status == 200
    assert (await first.call("GET", "/api/auth/me"))[0] == 200  # this session stays
    assert (await second.call("GET", "/api/auth/me"))[0] == 401  # the others end
    assert (await env.client().login("duty")).status == 401
    assert (await env.client().login("duty", "a new password")).status == 200
    results = [(r["action"], r["result"]) for r in await env.audit(action_prefixes=["auth.password"])]
    assert results == [("auth.password", "ok"), ("auth.password", "failed")]


async def test_disabled_user_is_out_at_once(env: Env) -> None:
    duty = await env.signed_in("user")
    token = await env.bearer("user")
    admin = await env.signed_in("platform_admin")
    status, _ = await admin.call("PATCH", f"/api/users/{env.users['user'].id}",
                                 json={"disabled": True})
    assert status == 200
    assert (await duty.call("GET", "/api/states"))[0] == 401
    assert (await token.call("GET", "/api/states"))[0] == 401
    assert (await env.client().login("duty")).status == 401
    entries = await env.audit(action_prefixes=["user"])
    assert entries[0]["action"] == "user.disable" and entries[0]["actor"] == "centre"


async def test_websocket_by_cookie_and_foreign_origin(env: Env) -> None:
    client = await env.signed_in("user")
    async with client.session.ws_connect("/api/websocket") as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "auth_ok"
    # A page on another site cannot ride on the cookie.
    async with client.session.ws_connect("/api/websocket",
                                         headers={"Origin": "http://evil.example"}) as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "auth_required"
