"""Notifications over HTTP: delivery records and subscriptions (CONTRACTS §5).

Deliveries are read by admins (project_admin and above), cut to their scope: a record carries
its alarm's project, and one without a project (a manual `notify.send`) is shown only to an
unrestricted caller. Subscriptions: a user manages their own; an admin also those of users
at or below their role whose projects lie inside the admin's scope. A subscription's projects
must be inside both the subscriber's and the caller's scope.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from hub.auth.permissions import PROJECT_ADMIN, at_least
from hub.core.notify import STATUSES, delivery_dict
from hub.core.notify.base import HHMM

from .auth import deny, principal
from .query import path_id, query_offset, row_id
from .routes import BODY, HUB, QUERY, SCOPED, ApiError, RouteTable, json_response

routes = RouteTable()

_SEVERITIES = ("info", "minor", "major", "critical")
_KINDS = ("alarm", "fault", "event")

DELIVERY_QUERY = vol.Schema({
    vol.Optional("status", description="comma-separated: " + ", ".join(STATUSES)):
        vol.All(str, lambda v: [s for s in v.split(",") if s], [vol.In(STATUSES)]),
    vol.Optional("alarm_id"): row_id,
    vol.Optional("recipient"): str,
    vol.Optional("limit", default=200): vol.All(vol.Coerce(int), vol.Range(min=1, max=10_000)),
    vol.Optional("offset", default=0): query_offset,
})

SUBSCRIPTION_BODY = vol.Schema({
    vol.Optional("user_id", description="default: me"): str,
    vol.Optional("projects", default=[]): [str],
    vol.Optional("kinds", default=[]): [vol.In(_KINDS)],
    vol.Optional("min_severity", default="info"): vol.In(_SEVERITIES),
    vol.Optional("channels", default=[]): [str],
    vol.Optional("quiet_hours"): vol.Any(None, {vol.Required("start"): HHMM,
                                                vol.Required("end"): HHMM}),
    vol.Optional("language"): vol.Any(None, vol.In(("zh-CN", "en"))),
    vol.Optional("enabled", default=True): bool,
})


def _manager(request: web.Request) -> Any:
    manager = getattr(request.app[HUB], "notify", None)
    if manager is None or manager.store is None:
        raise ApiError(503, "Notifications are not running")
    return manager


def subscription_dict(row: dict[str, Any], user: Any = None) -> dict[str, Any]:
    quiet = ({"start": row["quiet_start"], "end": row["quiet_end"]}
             if row.get("quiet_start") and row.get("quiet_end") else None)
    return {
        "id": row["id"], "user_id": row["user_id"],
        "user": getattr(user, "name", None), "projects": list(row.get("projects") or []),
        "kinds": list(row.get("kinds") or []), "min_severity": row.get("min_severity"),
        "channels": list(row.get("channels") or []), "quiet_hours": quiet,
        "language": row.get("language"), "enabled": bool(row.get("enabled", True)),
        "created_at": row.get("created_at"), "created_by": row.get("created_by"),
    }


def _may_manage(who: Any, user: Any) -> bool:
    """Me, or (admins) a user at or below my role whose projects lie in my scope."""
    if who.user_id is not None and who.user_id == user.id:
        return True
    if who.is_system or (who.scope.unrestricted and who.at_least("super_admin")):
        return True
    if not who.at_least(PROJECT_ADMIN) or not at_least(who.role, user.role):
        return False
    return bool(user.projects) and who.scope.covers(user.projects)


@routes.get(
    "/api/notifications/deliveries",
    "Notification delivery records (in my scope), newest first",
    scope=PROJECT_ADMIN,
    description="queued, sending, sent, failed (with the reason), delivered, held (for a "
                "summary) or summarised; a failover to the next channel is a new record whose "
                "`fallback_of` names the failed one.",
    query_schema=DELIVERY_QUERY,
    tags=("notifications",),
)
async def list_deliveries(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    query = request[QUERY]
    visible = principal(request).scope.allowed()
    rows = await manager.store.list_deliveries(
        projects=visible, status=query.get("status"), alarm_id=query.get("alarm_id"),
        recipient=query.get("recipient"), limit=query["limit"], offset=query["offset"])
    return json_response([delivery_dict(row) for row in rows])


@routes.get(
    "/api/notifications/notifiers",
    "Each notification channel: health, last error, counts, queue depth",
    scope=PROJECT_ADMIN,
    description="In chain order. `healthy`: the channel's last health check (a modem "
                "answering `AT`; null for channels without one, such as HTTP gateways), with "
                "`checked_at`; `last_error`: the channel's own trouble, else its latest "
                "failed send (`last_error_at`); `sent` (handed to the channel, including those "
                "delivered since), `failed`, `delivered` (and `counts` by every status): "
                "delivery records of the caller's projects; `queue_depth`: "
                "messages of any project waiting for this channel now (queued, between "
                "retries, or being sent); `fallback`: the next channel; `details`: what the "
                "platform adds (modem port, mode, reports received, multi-part drops).",
    tags=("notifications",),
)
async def list_notifiers(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    counts = await manager.store.count_by_channel(principal(request).scope.allowed())
    out = []
    for info in manager.status():
        mine = counts.get(info["name"], {})
        out.append({**info, "sent": mine.get("sent", 0) + mine.get("delivered", 0),
                    "failed": mine.get("failed", 0), "delivered": mine.get("delivered", 0),
                    "counts": mine})
    return json_response(out)


@routes.get(
    "/api/subscriptions",
    "Notification subscriptions: mine, and (admins) those of users I manage",
    scope=SCOPED,
    tags=("notifications",),
)
async def list_subscriptions(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    who = principal(request)
    users = {u.id: u for u in await request.app[HUB].auth.users.list()}
    rows = await manager.store.subscriptions()
    shown = [subscription_dict(row, users.get(row["user_id"])) for row in rows
             if row["user_id"] in users and _may_manage(who, users[row["user_id"]])]
    return json_response(shown)


@routes.post(
    "/api/subscriptions",
    "Subscribe (me, or a user I manage) to alarms of projects, kinds, severities, channels",
    scope=SCOPED,
    description="`projects` empty = the subscriber's whole scope; `kinds` empty = all; "
                "`channels` empty = the first configured notifier (failing over down the chain); "
                "`quiet_hours` {start, end} local times: non-critical messages are held and "
                "summarised when they end.",
    body_schema=SUBSCRIPTION_BODY,
    responses={201: "Created"},
    tags=("notifications",),
)
async def create_subscription(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    hub = request.app[HUB]
    who = principal(request)
    body = request[BODY]
    user_id = body.get("user_id") or who.user_id
    if user_id is None:
        raise ApiError(400, "user_id is required for a system token")
    user = await hub.auth.users.get(user_id)
    if user is None:
        raise ApiError(404, f"No user {user_id}")
    if not _may_manage(who, user):
        raise await deny(request, f"User {user.name} is not managed by {who.name}",
                         target=f"user {user.name}")
    scope = hub.auth.scope_for(user)
    for project in body["projects"]:
        if not who.scope.can_see(project) or not scope.can_see(project):
            raise await deny(request, f"Project {project} is outside the scope of "
                             f"{who.name if not who.scope.can_see(project) else user.name}",
                             target=project, project=project)
    unknown = [c for c in body["channels"] if c not in manager.order]
    if unknown:
        raise ApiError(400, f"No notifier is called {unknown[0]!r} "
                            f"(configured: {', '.join(manager.order) or 'none'})")
    if not user.phone:
        raise ApiError(400, f"User {user.name} has no phone number")
    quiet = body.get("quiet_hours") or {}
    row = {
        "user_id": user.id, "projects": body["projects"], "kinds": body["kinds"],
        "min_severity": body["min_severity"], "channels": body["channels"],
        "quiet_start": quiet.get("start"), "quiet_end": quiet.get("end"),
        "language": body.get("language"), "enabled": body["enabled"],
        "created_at": manager.clock(), "created_by": who.name,
    }
    row["id"] = await manager.store.insert_subscription(row)
    await hub.auth.audit.record("subscription.create", "ok", actor=who.name,
                                actor_role=who.role, ip=request.remote,
                                target=f"user {user.name}", detail={"id": row["id"]})
    return json_response(subscription_dict(row, user), status=201)


@routes.delete(
    "/api/subscriptions/{sub_id}",
    "Remove a subscription (mine, or of a user I manage)",
    scope=SCOPED,
    tags=("notifications",),
)
async def delete_subscription(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    hub = request.app[HUB]
    who = principal(request)
    sub_id = path_id(request, "sub_id")
    row = await manager.store.get_subscription(sub_id)
    if row is None:
        raise ApiError(404, f"No subscription {sub_id}")
    user = await hub.auth.users.get(row["user_id"])
    if user is not None and not _may_manage(who, user):
        raise await deny(request, f"Subscription {sub_id} belongs to a user not managed by "
                         f"{who.name}", target=f"subscription {sub_id}")
    await manager.store.delete_subscription(sub_id)
    await hub.auth.audit.record("subscription.delete", "ok", actor=who.name,
                                actor_role=who.role, ip=request.remote,
                                target=f"subscription {sub_id}")
    return json_response({"id": sub_id, "deleted": True})
