"""Work orders over HTTP (CONTRACTS §5): list and filter, open (by hand or from an alarm),
move through their lifecycle, comment, and upload / fetch photos.

Every change goes through `hub.workorders` (hub/core/workorders.py), so the API, the
`workorder.*` services and automations share one set of rules; an illegal transition is a 409
whose `error` says why ("cannot go from created to repaired ..."). The caller is the request's
principal (`hub.http.auth`), recorded as `created_by`, the history's `user`, `uploaded_by`.

Who may do what (docs/security.md), decided here with the same policy as the services:

* reading (list, one order, photos): every role, for the orders of its projects; the list is
  cut to the scope in SQL, and an order outside it is a 403 (a missing one a 404), as alarms;
* opening one: `workorder.create` (project_admin and above), for a device, alarm or project
  inside the scope;
* changing one (PATCH, comments, photos): `workorder.update`; project_admin and above freely
  within scope, anyone below only as the order's assignee and only what
  `hub.core.workorders.assignee_refusal` allows (accept, repair, hand back, comment, photos).

Changes are written to the audit log (`workorder.create`, `workorder.update`,
`workorder.comment`, `workorder.photo`); refusals are `access.denied`.

Photos are multipart uploads (field `photo`, or any file part), read as a stream and cut off
at `workorders.max_photo_size`; the type is decided by the bytes (JPEG, PNG, WebP), not by the
file name or the part's declared type, and served back with that type. Permission is decided
before a byte of the upload is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import unquote

import voluptuous as vol
from aiohttp import BodyPartReader, web

from hub.auth.permissions import PROJECT_ADMIN
from hub.auth.principal import Principal
from hub.core.workorders import (
    CREATE_FIELDS,
    PRIORITIES,
    SOURCES,
    STATUSES,
    UPDATE_FIELDS,
    assignee_refusal,
    photo_dict,
)
from hub.storage.workorder_store import WorkOrderQuery

from .auth import (
    auth_manager,
    context_for,
    deny,
    principal,
    require_device,
    require_project,
    visible_projects,
)
from .query import path_id, query_bool, query_list, query_offset, row_id
from .routes import BODY, HUB, QUERY, SCOPED, ApiError, RouteTable, json_response

routes = RouteTable()

MAX_LIMIT = 10_000
#: multipart framing allowed on top of the photo itself before a Content-Length is refused
MULTIPART_SLACK = 64 * 1024


# -- shared helpers (patrols and statistics use them too) ------------------------------------


def project_subtree(hub: Any, wanted: list[str]) -> list[str]:
    """A project and every project below it: the configured tree, and the auth layer's tree
    (which also knows projects that only devices named), so `project=` means the same here
    as the scope does."""
    out: set[str] = set(wanted)

    def walk(items: list[dict[str, Any]], inside: bool) -> None:
        for item in items:
            here = inside or item.get("id") in wanted
            if here:
                out.add(item["id"])
            walk(item.get("children") or [], here)

    walk(getattr(hub, "config", {}).get("projects") or [], False)
    tree = getattr(getattr(hub, "auth", None), "tree", None)
    if tree is not None:
        out |= tree.subtree(wanted)
    return sorted(out)


async def scoped_projects(request: web.Request, wanted: Iterable[str] | None
                          ) -> list[str] | None:
    """The project filter of a list: the `project` parameter with its sub-projects, cut to
    the caller's scope; None means no filter (an unrestricted caller asking for everything).

    A `project` outside the scope is a 403 with the reason (and an `access.denied` entry),
    never a silently empty answer (docs/security.md). An empty list means "nothing": the
    stores filter with SQL `IN`, so a scope with no project sees no row.
    """
    wanted = list(wanted or ())
    for project in wanted:
        await require_project(request, project)
    visible = visible_projects(request)
    if wanted:
        projects = project_subtree(request.app[HUB], wanted)
        return projects if visible is None else [p for p in projects if p in visible]
    return None if visible is None else sorted(visible)


async def audit(request: web.Request, action: str, target: Any, project: str | None,
                detail: dict[str, Any]) -> None:
    """One audit entry for a change made through this API (as alarms_api does for acks)."""
    manager_ = auth_manager(request)
    if manager_ is None:
        return
    who = principal(request)
    await manager_.audit.record(action, "ok", actor=who.name, actor_role=who.role,
                                ip=request.remote, target=str(target), project=project,
                                detail=detail)


def manager(request: web.Request) -> Any:
    workorders = getattr(request.app[HUB], "workorders", None)
    if workorders is None:
        raise ApiError(503, "Work orders are not running")
    return workorders


async def scoped_order(request: web.Request, workorder_id: int) -> dict[str, Any]:
    """The order, if the caller may see it: 404 when there is none, 403 (audited) when it
    lies outside the caller's scope, the same answers alarms give for their ids."""
    row = await manager(request).async_get(workorder_id)
    await require_project(request, row.get("project"), f"Work order {workorder_id}")
    return row


async def _allowed(request: web.Request, service: str) -> Principal:
    """The role rule of the `workorder.<service>` service, so the API and the service (and a
    site's `auth.service_roles`) give one answer."""
    who = principal(request)
    manager_ = auth_manager(request)
    if manager_ is not None and not manager_.policy.allows(who.role, "workorder", service):
        verb = "open" if service == "create" else "change"
        raise await deny(request, f"Role {who.role} may not {verb} work orders")
    return who


async def _may_change(request: web.Request, row: dict[str, Any], *, status: str | None = None,
                      **changes: Any) -> str | None:
    """Whether the caller may make this change to an order it can see.

    project_admin and above: anything the lifecycle allows (None returned). Below: only as the
    order's assignee and only what `assignee_refusal` allows; the caller's name is returned so
    the change is made conditional on the order still being theirs.
    """
    who = await _allowed(request, "update")
    if who.at_least(PROJECT_ADMIN):
        return None
    reason = assignee_refusal(row, who.name, status=status, **changes)
    if reason is not None:
        raise await deny(request, reason, target=str(row["id"]), project=row.get("project"))
    return who.name


# -- schemas ---------------------------------------------------------------------------------
LIST_SCHEMA = vol.Schema({
    vol.Optional("status", description="created, dispatched, accepted, repaired, verified, "
                                       "closed, or open (not closed); comma-separated"):
        query_list((*STATUSES, "open")),
    vol.Optional("project", description="project id; includes its sub-projects"): query_list(),
    vol.Optional("assignee", description="comma-separated for several"): query_list(),
    vol.Optional("device", description="device id (comma-separated for several)"): query_list(),
    vol.Optional("alarm_id"): row_id,
    vol.Optional("patrol_id"): row_id,
    vol.Optional("overdue", description="true: waiting past the due time"): query_bool,
    vol.Optional("limit", default=1000, description=f"at most {MAX_LIMIT}"): vol.All(
        vol.Coerce(int), vol.Range(min=1, max=MAX_LIMIT)),
    vol.Optional("offset", default=0): query_offset,
})


def _not_both(data: dict[str, Any]) -> dict[str, Any]:
    if "alarm_id" in data and "device_id" in data:
        raise vol.Invalid("give alarm_id or device_id, not both")
    if "due" in data and "due_at" in data:
        raise vol.Invalid("give due or due_at, not both")
    return data


CREATE_SCHEMA = vol.All(vol.Schema(CREATE_FIELDS), _not_both)


def _something(data: dict[str, Any]) -> dict[str, Any]:
    if not data:
        raise vol.Invalid("nothing to change: give status, assignee, note or due_at")
    return data


UPDATE_SCHEMA = vol.All(vol.Schema(UPDATE_FIELDS), _something)
COMMENT_SCHEMA = vol.Schema({vol.Required("text"): vol.All(str, vol.Length(min=1, max=5000))})

_T = {"type": "string"}
_TN = {"type": ["string", "null"]}
WORKORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A work order; times ISO 8601 UTC",
    "properties": {
        "id": {"type": "integer"}, "title": _T, "description": _TN,
        "alarm_id": {"type": ["integer", "null"]}, "patrol_id": {"type": ["integer", "null"]},
        "patrol_item": _TN, "source": {"enum": list(SOURCES)}, "device_id": _TN,
        "project": _TN, "assignee": _TN, "priority": {"enum": list(PRIORITIES)},
        "status": {"enum": list(STATUSES)}, "status_text": {"type": "object"},
        "resolution": _TN, "overdue": {"type": "boolean"}, "due_at": _TN, "created_by": _TN,
        "created_at": _T, "updated_at": _T, "dispatched_at": _TN, "accepted_at": _TN,
        "repaired_at": _TN, "verified_at": _TN, "closed_at": _TN,
        "allowed": {"type": "array", "items": _T,
                    "description": "statuses it may go to from here"},
    },
}
PHOTO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "workorder_id": {"type": "integer"}, "content_type": _T,
        "size": {"type": "integer"}, "sha256": _T, "original_name": _TN, "uploaded_by": _TN,
        "uploaded_at": _T, "url": _T,
    },
}


# -- routes ----------------------------------------------------------------------------------
@routes.get(
    "/api/workorders",
    "Work orders (工单) of my projects, newest first",
    scope=SCOPED,
    description="Filters combine with AND. `overdue=true`: still waiting (created, dispatched "
                "or accepted) past `due_at`. Every role sees the orders of its projects; a "
                "`project` or `device` outside the caller's scope is a 403.",
    query_schema=LIST_SCHEMA,
    response_schema={"type": "array", "items": WORKORDER_SCHEMA},
    tags=("workorders",),
)
async def list_workorders(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    query = request[QUERY]
    projects = await scoped_projects(request, query.get("project"))
    for device_id in query.get("device", ()):
        await require_device(request, device_id)
    statuses = list(query.get("status", ()))
    if "open" in statuses:
        statuses = sorted({*statuses, *STATUSES} - {"open", "closed"})
    q = WorkOrderQuery(
        statuses=statuses,
        projects=projects,
        assignees=query.get("assignee", ()),
        devices=query.get("device", ()),
        alarm_id=query.get("alarm_id"),
        patrol_id=query.get("patrol_id"),
        overdue=query.get("overdue"),
        now=workorders.clock(),
        limit=query["limit"],
        offset=query["offset"],
    )
    rows = await workorders.store.query(q)
    return json_response([workorders.shown(row) for row in rows])


async def _require_targets(request: web.Request, body: dict[str, Any]) -> None:
    """The alarm, device and project a new order names must lie in the caller's scope, and a
    restricted caller must name one (an order with no project would be invisible to them)."""
    who = principal(request)
    alarm_id = body.get("alarm_id")
    if alarm_id is not None:
        engine = getattr(request.app[HUB], "alarms", None)
        store = getattr(engine, "store", None)
        rows = await store.get_many([alarm_id]) if store is not None else []
        if not rows:
            raise ApiError(404, f"Alarm {alarm_id} not found")
        await require_project(request, rows[0].get("project"), f"Alarm {alarm_id}")
    if body.get("device_id"):
        await require_device(request, body["device_id"])
    if body.get("project"):
        await require_project(request, body["project"])
    if not who.scope.unrestricted and not (
        alarm_id is not None or body.get("device_id") or body.get("project")
    ):
        raise await deny(request, f"A work order opened by {who.name} must name a device, "
                                  "alarm or project inside its scope")


@routes.post(
    "/api/workorders",
    "Open a work order, by hand or from an alarm",
    scope=SCOPED,
    description=(
        "Give `alarm_id` (device, project and title are taken from the alarm) or `device_id`, "
        "or at least a `title`. With an `assignee` the order is dispatched at once. `due` is "
        "the time allowed (e.g. `4h`, default `workorders.default_due`), or `due_at` a time. "
        "An alarm that already has an open order answers that order with 200 and "
        "`created: false`; a new order is 201. Needs the `workorder.create` role "
        "(project_admin) and an alarm, device or project inside the caller's scope."
    ),
    body_schema=CREATE_SCHEMA,
    responses={201: "Created", 200: "The alarm's open work order already existed"},
    response_schema=WORKORDER_SCHEMA,
    tags=("workorders",),
)
async def create_workorder(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    await _allowed(request, "create")
    await _require_targets(request, body)
    shown, created = await manager(request).async_create(
        title=body.get("title"), description=body.get("description"),
        alarm_id=body.get("alarm_id"), device_id=body.get("device_id"),
        project=body.get("project"), assignee=body.get("assignee"),
        priority=body.get("priority", "normal"), due_at=body.get("due_at"),
        due_in=body.get("due"), source="manual",
        context=context_for(request),
    )
    if created:
        await audit(request, "workorder.create", shown["id"], shown.get("project"), {
            "title": shown["title"], "alarm_id": shown.get("alarm_id"),
            "device_id": shown.get("device_id"), "assignee": shown.get("assignee"),
            "status": shown["status"]})
    return json_response({**shown, "created": created}, status=201 if created else 200)


@routes.get(
    "/api/workorders/{workorder_id:\\d+}",
    "One work order with its history (transitions, comments) and photos",
    scope=SCOPED,
    response_schema=WORKORDER_SCHEMA,
    tags=("workorders",),
)
async def get_workorder(request: web.Request) -> web.StreamResponse:
    workorder_id = path_id(request, "workorder_id")
    await scoped_order(request, workorder_id)
    return json_response(await manager(request).async_detail(workorder_id))


@routes.patch(
    "/api/workorders/{workorder_id:\\d+}",
    "Move a work order on, reassign it, move its due time, or comment",
    scope=SCOPED,
    description=(
        "`status`: created → dispatched → accepted → repaired → verified → closed; also "
        "accepted → dispatched (handed back), repaired → accepted (rework), repaired → closed, "
        "and closing earlier (a cancellation, `note` required). Anything else is a 409 with "
        "the reason. A new `assignee` dispatches a created or accepted order. `note` is kept "
        "with the transition, or as a comment. project_admin and above change any order of "
        "their projects; below that only the order's assignee, to accept, repair, hand back "
        "or comment (403 otherwise)."
    ),
    body_schema=UPDATE_SCHEMA,
    response_schema=WORKORDER_SCHEMA,
    responses={200: "OK", 409: "Not allowed from the order's current status (reason in `error`)"},
    tags=("workorders",),
)
async def update_workorder(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    workorder_id = path_id(request, "workorder_id")
    row = await scoped_order(request, workorder_id)
    kwargs: dict[str, Any] = {}
    for name in ("assignee", "due_at"):
        if name in body:
            kwargs[name] = body[name]
    as_assignee = await _may_change(request, row, status=body.get("status"), **kwargs)
    shown = await manager(request).async_update(
        workorder_id, status=body.get("status"), note=body.get("note"),
        context=context_for(request), expected_assignee=as_assignee, **kwargs)
    detail: dict[str, Any] = {"from_status": row["status"], "to_status": shown["status"],
                              "note": (body.get("note") or "")[:500] or None}
    if "assignee" in body:
        detail["assignee"] = {"from": row.get("assignee"), "to": shown.get("assignee")}
    if "due_at" in body:
        detail["due_at"] = shown.get("due_at")
    if as_assignee is not None:
        detail["as_assignee"] = True
    await audit(request, "workorder.update", workorder_id, row.get("project"), detail)
    return json_response(shown)


@routes.post(
    "/api/workorders/{workorder_id:\\d+}/comments",
    "Comment on a work order",
    scope=SCOPED,
    description="project_admin and above on any order of their projects; below that only the "
                "order's assignee.",
    body_schema=COMMENT_SCHEMA,
    responses={201: "Created"},
    tags=("workorders",),
)
async def comment_workorder(request: web.Request) -> web.StreamResponse:
    workorder_id = path_id(request, "workorder_id")
    row = await scoped_order(request, workorder_id)
    await _may_change(request, row)
    entry = await manager(request).async_comment(
        workorder_id, request[BODY]["text"], context_for(request))
    await audit(request, "workorder.comment", workorder_id, row.get("project"),
                {"text": request[BODY]["text"][:500]})
    return json_response(entry, status=201)


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            return
        yield chunk


@routes.post(
    "/api/workorders/{workorder_id:\\d+}/photos",
    "Upload a photo (multipart/form-data, field `photo`)",
    description=(
        "One JPEG, PNG or WebP image per request, at most `workorders.max_photo_size` "
        "(default 5 MB). The type is read from the file's bytes, not its name: anything else "
        "is a 415, a larger file a 413, each with the reason. Stored under "
        "`<config>/uploads/workorders/<id>/`. project_admin and above on any order of "
        "their projects; below that only the order's assignee."
    ),
    scope=SCOPED,
    responses={201: "Stored"},
    response_schema=PHOTO_SCHEMA,
    tags=("workorders",),
)
async def upload_workorder_photo(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    workorder_id = path_id(request, "workorder_id")
    row = await scoped_order(request, workorder_id)
    await _may_change(request, row)  # before a byte of the upload is read
    await workorders.check_photo_room(workorder_id)
    limit = workorders.photos.max_size
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise ApiError(413, f"photo too large: the request is {request.content_length} bytes, "
                            f"the limit is {limit} bytes (workorders.max_photo_size)")
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "expected a multipart/form-data upload with a `photo` file field")
    reader = await request.multipart()
    stored = None
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart bodies are not supported")
        if part.filename is None and part.name not in ("photo", "file"):
            await part.release()  # a plain form field: not needed
            continue
        if stored is not None:
            raise ApiError(400, "one photo per request")
        saved = await workorders.photos.save(workorder_id, _chunks(part))
        # Some clients (aiohttp among them) percent-encode a non-ASCII file name.
        name = unquote(part.filename) if part.filename else None
        stored = await workorders.async_add_photo(workorder_id, saved, name,
                                                  context_for(request))
    if stored is None:
        raise ApiError(400, "no photo in the upload: send a file in the `photo` field")
    await audit(request, "workorder.photo", workorder_id, row.get("project"), {
        "photo_id": stored["id"], "content_type": stored["content_type"],
        "size": stored["size"], "sha256": stored["sha256"]})
    return json_response(stored, status=201)


@routes.get(
    "/api/workorders/{workorder_id:\\d+}/photos",
    "The photos of a work order",
    scope=SCOPED,
    response_schema={"type": "array", "items": PHOTO_SCHEMA},
    tags=("workorders",),
)
async def list_workorder_photos(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    workorder_id = path_id(request, "workorder_id")
    await scoped_order(request, workorder_id)
    return json_response([photo_dict(p) for p in await workorders.store.photos(workorder_id)])


@routes.get(
    "/api/workorders/{workorder_id:\\d+}/photos/{photo_id:\\d+}",
    "One photo, with the content type of what is stored",
    scope=SCOPED,
    response_content_type="image/*",
    tags=("workorders",),
)
async def get_workorder_photo(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    workorder_id = path_id(request, "workorder_id")
    photo_id = path_id(request, "photo_id")
    await scoped_order(request, workorder_id)
    row = await workorders.store.photo(workorder_id, photo_id)
    if row is None:
        raise ApiError(404, f"Photo {photo_id} of work order {workorder_id} not found")
    try:
        path = workorders.photos.path(workorder_id, row["file_name"])
        body = await asyncio.to_thread(path.read_bytes)
    except (OSError, ValueError) as err:
        raise ApiError(410, f"Photo {photo_id} is recorded but its file is gone") from err
    return web.Response(
        body=body,
        content_type=row["content_type"],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=86400"},
    )


__all__ = ["audit", "project_subtree", "routes", "scoped_projects"]
