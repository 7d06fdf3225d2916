"""Sign-in, users, tokens and the audit log over HTTP (docs/security.md).

* `POST /api/auth/login` answers with the session cookie (HttpOnly, SameSite=Strict, Secure
  over https) and the CSRF token the page must send back in `X-CSRF-Token`. It only accepts
  `application/json`, which a form on another site cannot send without a CORS preflight:
  that closes login CSRF (signing a victim into the attacker's account).
* Users are managed by platform admins and above, each within its scope and never above its
  own role; the audit log is theirs to read and export, scoped the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import voluptuous as vol
from aiohttp import web

from hub.auth.audit import RESULTS, AuditQuery, audit_csv
from hub.auth.manager import AuthError
from hub.auth.permissions import PLATFORM_ADMIN, ROLES, SUPER_ADMIN, at_least
from hub.auth.sessions import COOKIE_NAME
from hub.auth.users import PHONE_RE, User, UserError, check_password, hash_password

from . import tokens
from .auth import deny, principal, require_role
from .query import query_offset
from .routes import (
    AUTHENTICATED,
    BODY,
    HUB,
    PUBLIC,
    QUERY,
    SERVER,
    ApiError,
    RouteTable,
    json_response,
)

routes = RouteTable()

MAX_AUDIT = 10_000

_USER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "role": {"enum": list(ROLES)},
        "projects": {"type": "array", "items": {"type": "string"}},
        "phone": {"type": ["string", "null"]}, "disabled": {"type": "boolean"},
        "language": {"type": ["string", "null"]},
    },
}


def _auth(request: web.Request) -> Any:
    manager = getattr(request.app[HUB], "auth", None)
    if manager is None:
        raise ApiError(503, "The auth layer is not running")
    return manager


def _raise(err: AuthError) -> ApiError:
    headers = None
    if err.retry_after is not None:
        headers = {"Retry-After": str(max(1, int(err.retry_after + 0.999)))}
    return ApiError(err.status, err.message, headers=headers)


# -- sign in ---------------------------------------------------------------------------------
LOGIN_SCHEMA = vol.Schema({
    vol.Required("name"): vol.All(str, vol.Length(min=1, max=64)),
    vol.Required("password"): vol.All(str, vol.Length(min=1, max=1024)),
})


@routes.post(
    "/api/auth/login",
    "Sign in with name and password (登录): sets the session cookie",
    description=(
        "Answers with the user and `csrf_token`; send that token as `X-CSRF-Token` on every "
        "POST/PUT/PATCH/DELETE made with the cookie. 401 for a wrong name or password, 429 "
        "with Retry-After while the user or the client address is locked after repeated "
        "failures. Only `application/json` bodies are accepted."
    ),
    auth=False,
    scope=PUBLIC,
    body_schema=LOGIN_SCHEMA,
    rate_limit="login",
    tags=("auth",),
)
async def login(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json":
        raise ApiError(415, "Send the login as application/json")
    manager = _auth(request)
    body = request[BODY]
    try:
        cookie, session, user = await manager.login(
            body["name"], body["password"], request.remote, request.headers.get("User-Agent")
        )
    except AuthError as err:
        raise _raise(err) from err
    response = json_response({
        "user": user.public(), "csrf_token": session.csrf_token,
        "expires_at": session.expires_at,
    })
    response.set_cookie(
        COOKIE_NAME, cookie, max_age=int(manager.settings["session_lifetime"]), path="/",
        httponly=True, samesite="Strict", secure=request.app[SERVER].cookie_secure(request),
    )
    return response


@routes.post(
    "/api/auth/logout",
    "Sign out (退出): ends this session",
    scope=AUTHENTICATED,
    body_schema=vol.Schema(dict),
    body_optional=True,
    tags=("auth",),
)
async def logout(request: web.Request) -> web.StreamResponse:
    await _auth(request).logout(principal(request))
    response = json_response({"signed_out": True})
    response.del_cookie(COOKIE_NAME, path="/")
    return response


@routes.get(
    "/api/auth/me",
    "Who am I: name, role, projects, how I signed in, and the CSRF token of my session",
    scope=AUTHENTICATED,
    tags=("auth",),
)
async def me(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    return json_response({**who.as_dict(), "csrf_token": who.csrf_token})


MY_PREFERENCES_SCHEMA = vol.Schema({
    vol.Required("language"): vol.Any(None, vol.In(("zh-CN", "en"))),
})


@routes.patch(
    "/api/auth/me",
    "Change my own preferences: `language` (zh-CN, en, or null for the hub's language)",
    description=(
        "Kept on my user record, so the pages follow me to another browser. A system token "
        "has no user record: 400."
    ),
    scope=AUTHENTICATED,
    body_schema=MY_PREFERENCES_SCHEMA,
    tags=("auth",),
)
async def update_me(request: web.Request) -> web.StreamResponse:
    manager = _auth(request)
    who = principal(request)
    if who.user_id is None:
        raise ApiError(400, f"{who.name} is a system token: it has no user record to keep "
                            "preferences on")
    language = request[BODY]["language"]
    updated = await manager.users.update(who.user_id, language=language)
    manager.forget_user(who.user_id)
    if updated is None:
        raise ApiError(404, f"User {who.name} not found")
    await manager.audit.record(
        "auth.preferences", "ok", actor=who.name, actor_role=who.role, ip=request.remote,
        target=who.name, detail={"language": language},
    )
    return json_response({**who.as_dict(), "language": updated.language,
                          "csrf_token": who.csrf_token})


PASSWORD_SCHEMA = vol.Schema({
    vol.Required("old"): vol.All(str, vol.Length(max=1024)),
    vol.Required("new"): vol.All(str, vol.Length(max=1024)),
})


@routes.post(
    "/api/auth/password",
    "Change my password (修改密码): needs the old one; my other sessions end",
    scope=AUTHENTICATED,
    body_schema=PASSWORD_SCHEMA,
    rate_limit="login",
    tags=("auth",),
)
async def change_password(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    try:
        await _auth(request).change_password(principal(request), body["old"], body["new"])
    except AuthError as err:
        raise _raise(err) from err
    return json_response({"changed": True})


# -- users -----------------------------------------------------------------------------------
def _projects(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise vol.Invalid("expected a list of project ids")
    return value


def _phone(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not PHONE_RE.match(value):
        raise vol.Invalid("expected a phone number")
    return value


NEW_USER_SCHEMA = vol.Schema({
    vol.Required("name"): str,
    vol.Required("role"): vol.In(ROLES),
    vol.Required("password"): str,
    vol.Optional("projects", default=list): _projects,
    vol.Optional("phone"): _phone,
    vol.Optional("language"): vol.In(("zh-CN", "en")),
})
PATCH_USER_SCHEMA = vol.Schema({
    vol.Optional("role"): vol.In(ROLES),
    vol.Optional("projects"): _projects,
    vol.Optional("phone"): _phone,
    vol.Optional("disabled"): bool,
    vol.Optional("password"): str,
    vol.Optional("language"): vol.Any(None, vol.In(("zh-CN", "en"))),
})


async def _check_grant(request: web.Request, role: str, projects: list[str]) -> None:
    """What an admin gives must not exceed what it has: role, and projects in its scope."""
    who = principal(request)
    if not at_least(who.role, role):
        raise await deny(request, f"A {who.role} cannot make a {role}")
    if role == SUPER_ADMIN and not (who.role == SUPER_ADMIN and who.unrestricted):
        raise await deny(request, "Only an unrestricted super_admin can make a super_admin")
    if role != SUPER_ADMIN:
        if not projects:
            raise ApiError(400, f"A {role} needs at least one project")
        for project in projects:
            if not who.scope.can_see(project):
                raise await deny(request, f"Project {project} is outside the scope of "
                                          f"{who.name}", target=project, project=project)


async def _managed_user(request: web.Request) -> User:
    manager = _auth(request)
    key = request.match_info["user_id"]
    user = await manager.users.get(key) or await manager.users.get_by_name(key)
    if user is None:
        raise ApiError(404, f"User {key} not found")
    if not manager.may_manage(principal(request), user):
        raise await deny(request, f"User {user.name} is outside what {principal(request).name} "
                                  "may manage", target=user.name)
    return user


@routes.get(
    "/api/users",
    "Users I manage (platform_admin and above): at or below my role, inside my scope",
    scope=PLATFORM_ADMIN,
    response_schema={"type": "array", "items": _USER_SCHEMA},
    tags=("users",),
)
async def list_users(request: web.Request) -> web.StreamResponse:
    manager = _auth(request)
    who = principal(request)
    users = [u for u in await manager.users.list() if manager.may_manage(who, u)
             or u.id == who.user_id]
    return json_response([u.public() for u in users])


@routes.post(
    "/api/users",
    "Create a user (platform_admin and above; never above my role, never outside my scope)",
    scope=PLATFORM_ADMIN,
    body_schema=NEW_USER_SCHEMA,
    responses={201: "Created"},
    response_schema=_USER_SCHEMA,
    tags=("users",),
)
async def create_user(request: web.Request) -> web.StreamResponse:
    manager = _auth(request)
    who = await require_role(request, PLATFORM_ADMIN)
    body = request[BODY]
    await _check_grant(request, body["role"], body["projects"])
    try:
        check_password(body["password"], manager.settings["password_min_length"])
        user = await manager.users.create(
            body["name"], body["role"], await hash_password(body["password"]),
            projects=body["projects"], phone=body.get("phone"), language=body.get("language"),
            created_by=who.name,
        )
    except UserError as err:
        raise ApiError(400, str(err)) from err
    await manager.audit.record(
        "user.create", "ok", actor=who.name, actor_role=who.role, ip=request.remote,
        target=user.name, project=user.projects[0] if user.projects else None,
        detail={"role": user.role, "projects": list(user.projects)},
    )
    return json_response(user.public(), status=201)


@routes.get(
    "/api/users/{user_id}",
    "One user I manage (by id or name)",
    scope=PLATFORM_ADMIN,
    response_schema=_USER_SCHEMA,
    tags=("users",),
)
async def get_user(request: web.Request) -> web.StreamResponse:
    return json_response((await _managed_user(request)).public())


@routes.patch(
    "/api/users/{user_id}",
    "Change a user I manage: role, projects, phone, language, disabled, password",
    description="Disabling a user or setting its password ends its sessions at once.",
    scope=PLATFORM_ADMIN,
    body_schema=PATCH_USER_SCHEMA,
    response_schema=_USER_SCHEMA,
    tags=("users",),
)
async def patch_user(request: web.Request) -> web.StreamResponse:
    manager = _auth(request)
    who = principal(request)
    user = await _managed_user(request)
    body = dict(request[BODY])
    if user.id == who.user_id and ("role" in body or "projects" in body or body.get("disabled")):
        raise await deny(request, "Nobody changes their own role, projects or disables "
                                  "themselves", target=user.name)
    role = body.get("role", user.role)
    projects = body.get("projects", list(user.projects))
    if "role" in body or "projects" in body:
        await _check_grant(request, role, projects)
    changes: dict[str, Any] = {k: v for k, v in body.items() if k != "password"}
    if role == SUPER_ADMIN:
        changes["projects"] = []
    if "password" in body:
        try:
            check_password(body["password"], manager.settings["password_min_length"])
        except UserError as err:
            raise ApiError(400, str(err)) from err
        changes["password_hash"] = await hash_password(body["password"])
        changes["password_changed_at"] = manager.clock()
        changes["failed_logins"] = 0
        changes["locked_until"] = None
    updated = await manager.users.update(user.id, **changes) if changes else user
    manager.forget_user(user.id)
    if body.get("disabled") or "password" in body:
        await manager.end_user_sessions(user.id)
    shown = {k: ("***" if k == "password" else v) for k, v in body.items()}
    action = "user.disable" if body.get("disabled") else (
        "user.passwd" if list(body) == ["password"] else "user.update")
    await manager.audit.record(
        action, "ok", actor=who.name, actor_role=who.role, ip=request.remote, target=user.name,
        project=(updated.projects[0] if updated and updated.projects else None),
        detail={"changes": shown},
    )
    assert updated is not None
    return json_response(updated.public())


# -- tokens ----------------------------------------------------------------------------------
NEW_TOKEN_SCHEMA = vol.Schema({
    vol.Required("name"): vol.All(str, vol.Length(min=1, max=100)),
    vol.Optional("expires_in"): vol.All(vol.Coerce(float), vol.Range(min=60)),
    vol.Optional("projects"): _projects,
})


@routes.get(
    "/api/tokens",
    "My API tokens (super_admin: every token); never the token itself",
    scope=AUTHENTICATED,
    tags=("auth",),
)
async def list_tokens(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    db = request.app[HUB].storage
    if who.role == SUPER_ADMIN and who.unrestricted:
        return json_response(await tokens.list_tokens(db))
    if who.user_id is None:
        return json_response([])
    return json_response(await tokens.list_tokens(db, [who.user_id]))


@routes.post(
    "/api/tokens",
    "Create an API token acting as me, optionally narrowed to some of my projects",
    description="The token is in the answer once and never again. `expires_in` in seconds.",
    scope=AUTHENTICATED,
    body_schema=NEW_TOKEN_SCHEMA,
    rate_limit="tokens",
    responses={201: "Created"},
    tags=("auth",),
)
async def create_token(request: web.Request) -> web.StreamResponse:
    manager = _auth(request)
    who = principal(request)
    if who.user_id is None:
        raise await deny(request, "System tokens are made with the CLI on the hub's machine")
    body = request[BODY]
    projects = body.get("projects")
    if projects is not None:
        if not projects:
            raise ApiError(400, "projects: give at least one, or leave it out")
        for project in projects:
            if not who.scope.can_see(project):
                raise await deny(request, f"Project {project} is outside the scope of "
                                          f"{who.name}", target=project, project=project)
    elif not who.scope.unrestricted:
        projects = sorted(who.scope.roots or ())
    token, token_id = await tokens.create_token_with_id(
        request.app[HUB].storage, body["name"], body.get("expires_in"), user_id=who.user_id,
        scope=projects, now=manager.clock(),
    )
    await manager.audit.record(
        "token.create", "ok", actor=who.name, actor_role=who.role, ip=request.remote,
        target=body["name"], detail={"token_id": token_id, "scope": projects,
                                     "expires_in": body.get("expires_in")},
    )
    return json_response({"id": token_id, "token": token, "name": body["name"],
                          "scope": projects}, status=201)


@routes.delete(
    "/api/tokens/{token_id}",
    "Revoke a token of mine (super_admin: any token); effective at once",
    scope=AUTHENTICATED,
    tags=("auth",),
)
async def revoke_token(request: web.Request) -> web.StreamResponse:
    manager = _auth(request)
    who = principal(request)
    db = request.app[HUB].storage
    token_id = request.match_info["token_id"]
    owned = {t["id"]: t for t in await tokens.list_tokens(db)}
    item = owned.get(token_id)
    if item is None:
        raise ApiError(404, f"Token {token_id} not found")
    if not (who.role == SUPER_ADMIN and who.unrestricted) and item["user_id"] != who.user_id:
        raise await deny(request, f"Token {token_id} is not yours", target=token_id)
    revoked = await tokens.revoke_token(db, token_id)
    await manager.audit.record(
        "token.revoke", "ok" if revoked else "failed", actor=who.name, actor_role=who.role,
        ip=request.remote, target=item["name"], detail={"token_id": token_id},
    )
    return json_response({"id": token_id, "revoked": revoked})


# -- audit -----------------------------------------------------------------------------------
def _time(value: Any) -> float:
    from .query import query_time as _timestamp

    return _timestamp(value)


def _csv_list(value: Any) -> list[str]:
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise vol.Invalid("expected one value or a comma-separated list")
    return items


AUDIT_FILTERS = {
    vol.Optional("since", description="ISO 8601 or unix seconds"): _time,
    vol.Optional("until", description="ISO 8601 or unix seconds"): _time,
    vol.Optional("actor", description="user name(s), comma-separated"): _csv_list,
    vol.Optional("action", description="action or prefix, e.g. auth or service.arcm"):
        _csv_list,
    vol.Optional("result", description=", ".join(RESULTS)): vol.All(
        _csv_list, [vol.In(RESULTS)]),
    vol.Optional("target"): str,
    vol.Optional("limit", default=1000): vol.All(vol.Coerce(int), vol.Range(min=1, max=MAX_AUDIT)),
    vol.Optional("offset", default=0): query_offset,
}


async def _audit_rows(request: web.Request) -> list[dict[str, Any]]:
    manager = _auth(request)
    who = principal(request)
    q = request[QUERY]
    query = AuditQuery(
        since=q.get("since"), until=q.get("until"), actors=q.get("actor", ()),
        action_prefixes=q.get("action", ()), results=q.get("result", ()),
        target=q.get("target"), limit=q["limit"], offset=q["offset"],
    )
    if not (who.role == SUPER_ADMIN and who.unrestricted):
        users = await manager.users.list()
        query.visible_projects = sorted(who.scope.allowed() or ())
        query.visible_users = [u.name for u in users if manager.may_manage(who, u)] + [who.name]
    return await manager.audit.query(query)


@routes.get(
    "/api/audit",
    "The audit log, newest first (platform_admin and above; scoped)",
    description=(
        "Who (actor, role), when (ts), from where (ip), what (action, target, project, "
        "detail) and result (ok, failed, denied, locked). A platform admin sees entries about "
        "its projects and the users it manages."
    ),
    scope=PLATFORM_ADMIN,
    query_schema=vol.Schema(AUDIT_FILTERS),
    tags=("audit",),
)
async def list_audit(request: web.Request) -> web.StreamResponse:
    return json_response(await _audit_rows(request))


@routes.get(
    "/api/audit.csv",
    "The audit log as CSV (UTF-8 with BOM), same filters",
    scope=PLATFORM_ADMIN,
    query_schema=vol.Schema({**AUDIT_FILTERS, vol.Optional("lang"): vol.In(("zh-CN", "en"))}),
    response_content_type="text/csv",
    tags=("audit",),
)
async def export_audit(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    rows = await _audit_rows(request)
    try:
        zone = ZoneInfo(getattr(hub, "time_zone", "Asia/Shanghai"))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    lang = request[QUERY].get("lang") or getattr(hub, "language", "zh-CN")

    def local(ts: float) -> str:
        return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S")

    body = audit_csv(rows, lang.startswith("en"), local)
    stamp = datetime.now(zone).strftime("%Y%m%d-%H%M%S")
    return web.Response(body=body, headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="voltwatch-audit-{stamp}.csv"',
    })

