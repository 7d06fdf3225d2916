"""Work orders over HTTP (CONTRACTS §5): list and filter, open (by hand or from an alarm),
move through their lifecycle, comment, and upload / fetch photos.

Every change goes through `hub.workorders` (hub/core/workorders.py), so the API, the
`workorder.*` services and automations share one set of rules; an illegal transition is a 409
whose `error` says why ("cannot go from created to repaired ..."). The caller is the token's
user (its name until users exist), taken in one place: `request_user`.

Photos are multipart uploads (field `photo`, or any file part), read as a stream and cut off
at `workorders.max_photo_size`; the type is decided by the bytes (JPEG, PNG, WebP), not by the
file name or the part's declared type, and served back with that type.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import voluptuous as vol
from aiohttp import BodyPartReader, web

from hub.core.context import Context
from hub.core.workorders import (
    CREATE_FIELDS,
    PRIORITIES,
    SOURCES,
    STATUSES,
    UPDATE_FIELDS,
    photo_dict,
)
from hub.storage.workorder_store import WorkOrderQuery

from .routes import BODY, HUB, QUERY, TOKEN, ApiError, RouteTable, json_response

routes = RouteTable()

MAX_LIMIT = 10_000
#: multipart framing allowed on top of the photo itself before a Content-Length is refused
MULTIPART_SLACK = 64 * 1024
_SPLIT = re.compile(r"\s*,\s*")


# -- who is asking: the one place the auth issue swaps for real users -------------------------
def request_user(request: web.Request) -> str | None:
    """The user a change is recorded under: the token's user, or its name until users exist."""
    token = request.get(TOKEN)
    return token.audit_user if token is not None else None


def request_context(request: web.Request) -> Context:
    return Context(user_id=request_user(request))


# -- shared helpers (patrols and statistics use them too) ------------------------------------
def list_of(allowed: tuple[str, ...] | None = None) -> Any:
    """A comma-separated query value, optionally restricted to some words."""

    def check(value: Any) -> list[str]:
        items = [item for item in _SPLIT.split(str(value).strip()) if item]
        if not items:
            raise vol.Invalid("expected one value or a comma-separated list")
        if allowed is not None:
            bad = [item for item in items if item not in allowed]
            if bad:
                raise vol.Invalid(f"unknown value {bad[0]!r} (one of: {', '.join(allowed)})")
        return items

    check.__name__ = "comma_separated_list"
    return check


def query_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise vol.Invalid(f"expected true or false, got {value!r}")


def project_subtree(hub: Any, wanted: list[str]) -> list[str]:
    """A project and every project below it in the configured tree."""
    out: set[str] = set(wanted)

    def walk(items: list[dict[str, Any]], inside: bool) -> None:
        for item in items:
            here = inside or item.get("id") in wanted
            if here:
                out.add(item["id"])
            walk(item.get("children") or [], here)

    walk(getattr(hub, "config", {}).get("projects") or [], False)
    return sorted(out)


def manager(request: web.Request) -> Any:
    workorders = getattr(request.app[HUB], "workorders", None)
    if workorders is None:
        raise ApiError(503, "Work orders are not running")
    return workorders


def _path_id(request: web.Request, name: str) -> int:
    return int(request.match_info[name])


# -- schemas ---------------------------------------------------------------------------------
LIST_SCHEMA = vol.Schema({
    vol.Optional("status", description="created, dispatched, accepted, repaired, verified, "
                                       "closed, or open (not closed); comma-separated"):
        list_of((*STATUSES, "open")),
    vol.Optional("project", description="project id; includes its sub-projects"): list_of(),
    vol.Optional("assignee", description="comma-separated for several"): list_of(),
    vol.Optional("device", description="device id (comma-separated for several)"): list_of(),
    vol.Optional("alarm_id"): vol.All(vol.Coerce(int), vol.Range(min=1)),
    vol.Optional("patrol_id"): vol.All(vol.Coerce(int), vol.Range(min=1)),
    vol.Optional("overdue", description="true: waiting past the due time"): query_bool,
    vol.Optional("limit", default=1000, description=f"at most {MAX_LIMIT}"): vol.All(
        vol.Coerce(int), vol.Range(min=1, max=MAX_LIMIT)),
    vol.Optional("offset", default=0): vol.All(vol.Coerce(int), vol.Range(min=0)),
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
    "Work orders (工单), newest first",
    description="Filters combine with AND. `overdue=true`: still waiting (created, dispatched "
                "or accepted) past `due_at`.",
    query_schema=LIST_SCHEMA,
    response_schema={"type": "array", "items": WORKORDER_SCHEMA},
    tags=("workorders",),
)
async def list_workorders(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    query = request[QUERY]
    statuses = list(query.get("status", ()))
    if "open" in statuses:
        statuses = sorted({*statuses, *STATUSES} - {"open", "closed"})
    q = WorkOrderQuery(
        statuses=statuses,
        projects=project_subtree(request.app[HUB], query["project"]) if "project" in query
        else (),
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


@routes.post(
    "/api/workorders",
    "Open a work order, by hand or from an alarm",
    description=(
        "Give `alarm_id` (device, project and title are taken from the alarm) or `device_id`, "
        "or at least a `title`. With an `assignee` the order is dispatched at once. `due` is "
        "the time allowed (e.g. `4h`, default `workorders.default_due`), or `due_at` a time. "
        "An alarm that already has an open order answers that order with 200 and "
        "`created: false`; a new order is 201."
    ),
    body_schema=CREATE_SCHEMA,
    responses={201: "Created", 200: "The alarm's open work order already existed"},
    response_schema=WORKORDER_SCHEMA,
    tags=("workorders",),
)
async def create_workorder(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    shown, created = await manager(request).async_create(
        title=body.get("title"), description=body.get("description"),
        alarm_id=body.get("alarm_id"), device_id=body.get("device_id"),
        project=body.get("project"), assignee=body.get("assignee"),
        priority=body.get("priority", "normal"), due_at=body.get("due_at"),
        due_in=body.get("due"), source="manual",
        context=request_context(request),
    )
    return json_response({**shown, "created": created}, status=201 if created else 200)


@routes.get(
    "/api/workorders/{workorder_id:\\d+}",
    "One work order with its history (transitions, comments) and photos",
    response_schema=WORKORDER_SCHEMA,
    tags=("workorders",),
)
async def get_workorder(request: web.Request) -> web.StreamResponse:
    return json_response(await manager(request).async_detail(_path_id(request, "workorder_id")))


@routes.patch(
    "/api/workorders/{workorder_id:\\d+}",
    "Move a work order on, reassign it, move its due time, or comment",
    description=(
        "`status`: created → dispatched → accepted → repaired → verified → closed; also "
        "accepted → dispatched (handed back), repaired → accepted (rework), repaired → closed, "
        "and closing earlier (a cancellation, `note` required). Anything else is a 409 with "
        "the reason. A new `assignee` dispatches a created or accepted order. `note` is kept "
        "with the transition, or as a comment."
    ),
    body_schema=UPDATE_SCHEMA,
    response_schema=WORKORDER_SCHEMA,
    responses={200: "OK", 409: "Not allowed from the order's current status (reason in `error`)"},
    tags=("workorders",),
)
async def update_workorder(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    kwargs: dict[str, Any] = {}
    for name in ("assignee", "due_at"):
        if name in body:
            kwargs[name] = body[name]
    shown = await manager(request).async_update(
        _path_id(request, "workorder_id"), status=body.get("status"), note=body.get("note"),
        context=request_context(request), **kwargs)
    return json_response(shown)


@routes.post(
    "/api/workorders/{workorder_id:\\d+}/comments",
    "Comment on a work order",
    body_schema=COMMENT_SCHEMA,
    responses={201: "Created"},
    tags=("workorders",),
)
async def comment_workorder(request: web.Request) -> web.StreamResponse:
    entry = await manager(request).async_comment(
        _path_id(request, "workorder_id"), request[BODY]["text"], request_context(request))
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
        "`<config>/uploads/workorders/<id>/`."
    ),
    responses={201: "Stored"},
    response_schema=PHOTO_SCHEMA,
    tags=("workorders",),
)
async def upload_workorder_photo(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    workorder_id = _path_id(request, "workorder_id")
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
                                                  request_context(request))
    if stored is None:
        raise ApiError(400, "no photo in the upload: send a file in the `photo` field")
    return json_response(stored, status=201)


@routes.get(
    "/api/workorders/{workorder_id:\\d+}/photos",
    "The photos of a work order",
    response_schema={"type": "array", "items": PHOTO_SCHEMA},
    tags=("workorders",),
)
async def list_workorder_photos(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    workorder_id = _path_id(request, "workorder_id")
    await workorders.async_get(workorder_id)
    return json_response([photo_dict(p) for p in await workorders.store.photos(workorder_id)])


@routes.get(
    "/api/workorders/{workorder_id:\\d+}/photos/{photo_id:\\d+}",
    "One photo, with the content type of what is stored",
    response_content_type="image/*",
    tags=("workorders",),
)
async def get_workorder_photo(request: web.Request) -> web.StreamResponse:
    workorders = manager(request)
    workorder_id = _path_id(request, "workorder_id")
    photo_id = _path_id(request, "photo_id")
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


__all__ = ["list_of", "project_subtree", "query_bool", "request_user", "routes"]
