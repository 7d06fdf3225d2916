"""Patrol inspections over HTTP (巡检): templates (checklists with a period), the rounds the
hub generates from them, completing a round with a result per item (hub/core/patrols.py).

A failed item opens a work order linked to the round; the answer to `complete` lists them.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from hub.core.patrols import (
    COMPLETED,
    PENDING,
    RESULT_SCHEMA,
    TEMPLATE_FIELDS,
    instance_dict,
    template_dict,
)
from hub.storage.patrol_store import PatrolQuery

from .routes import BODY, HUB, QUERY, ApiError, RouteTable, json_response
from .workorders_api import (
    WORKORDER_SCHEMA,
    list_of,
    project_subtree,
    query_bool,
    request_context,
)

routes = RouteTable()


def _patrols(request: web.Request) -> Any:
    patrols = getattr(request.app[HUB], "patrols", None)
    if patrols is None:
        raise ApiError(503, "Patrols are not running")
    return patrols


_TEMPLATE = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"},
        "project": {"type": ["string", "null"]}, "items": {"type": "array"},
        "period": {"enum": ["daily", "weekly", "monthly", "interval"]},
        "interval": {"type": ["number", "null"]}, "allowed": {"type": ["number", "null"]},
        "assignee": {"type": ["string", "null"]}, "enabled": {"type": "boolean"},
        "start_at": {"type": "string"}, "next_due_at": {"type": "string"},
    },
}
_ROUND = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "template_id": {"type": "integer"},
        "name": {"type": "string"}, "project": {"type": ["string", "null"]},
        "items": {"type": "array"}, "assignee": {"type": ["string", "null"]},
        "status": {"enum": [PENDING, COMPLETED]}, "scheduled_at": {"type": "string"},
        "due_at": {"type": "string"}, "overdue": {"type": "boolean"},
        "completed_at": {"type": ["string", "null"]},
        "completed_by": {"type": ["string", "null"]}, "late": {"type": "boolean"},
        "results": {"type": ["array", "null"]}, "failed_count": {"type": "integer"},
    },
}

TEMPLATES_QUERY = vol.Schema({vol.Optional("project"): list_of()})
TEMPLATE_SCHEMA = vol.Schema(TEMPLATE_FIELDS)
TEMPLATE_UPDATE_SCHEMA = vol.All(
    vol.Schema({vol.Optional(key.schema): value for key, value in TEMPLATE_FIELDS.items()
                if key.schema in ("name", "items", "allowed", "assignee", "enabled")}),
    vol.Length(min=1, msg="nothing to change: give name, items, allowed, assignee or enabled"),
)
ROUNDS_QUERY = vol.Schema({
    vol.Optional("status", description="pending, completed (comma-separated)"):
        list_of((PENDING, COMPLETED)),
    vol.Optional("project", description="includes sub-projects"): list_of(),
    vol.Optional("assignee"): list_of(),
    vol.Optional("template_id"): vol.All(vol.Coerce(int), vol.Range(min=1)),
    vol.Optional("overdue"): query_bool,
    vol.Optional("limit", default=1000): vol.All(vol.Coerce(int), vol.Range(min=1, max=10_000)),
    vol.Optional("offset", default=0): vol.All(vol.Coerce(int), vol.Range(min=0)),
})
COMPLETE_SCHEMA = vol.Schema({
    vol.Required("results"): vol.All([RESULT_SCHEMA], vol.Length(min=1, max=500)),
})
ASSIGN_SCHEMA = vol.Schema({vol.Required("assignee"): vol.Any(None, vol.All(
    str, vol.Length(min=1, max=255)))})


@routes.get("/api/patrols/templates", "Patrol templates (巡检计划)", query_schema=TEMPLATES_QUERY,
            response_schema={"type": "array", "items": _TEMPLATE}, tags=("patrols",))
async def list_patrol_templates(request: web.Request) -> web.StreamResponse:
    query = request[QUERY]
    projects = project_subtree(request.app[HUB], query["project"]) if "project" in query else []
    rows = await _patrols(request).store.templates(projects)
    return json_response([template_dict(row) for row in rows])


@routes.post(
    "/api/patrols/templates",
    "Create a patrol template: a checklist per project with a period",
    description=(
        "`period`: daily, weekly, monthly (on the local calendar, counted from `start_at`) or "
        "interval (`interval`, e.g. `8h`). A round is generated when a period comes due, with "
        "`allowed` (default: the period) to complete it; a `start_at` in the past generates "
        "the current round at once."
    ),
    body_schema=TEMPLATE_SCHEMA,
    responses={201: "Created"},
    response_schema=_TEMPLATE,
    tags=("patrols",),
)
async def create_patrol_template(request: web.Request) -> web.StreamResponse:
    shown = await _patrols(request).async_create_template(request[BODY],
                                                          request_context(request))
    return json_response(shown, status=201)


@routes.patch(
    "/api/patrols/templates/{template_id:\\d+}",
    "Change a patrol template (name, items, allowed, assignee, enabled)",
    description="Rounds already generated keep their checklist; later rounds use the new one.",
    body_schema=TEMPLATE_UPDATE_SCHEMA,
    response_schema=_TEMPLATE,
    tags=("patrols",),
)
async def update_patrol_template(request: web.Request) -> web.StreamResponse:
    shown = await _patrols(request).async_update_template(
        int(request.match_info["template_id"]), dict(request[BODY]))
    return json_response(shown)


@routes.get(
    "/api/patrols",
    "Patrol rounds (巡检任务), newest first",
    description="`overdue=true`: pending past `due_at`.",
    query_schema=ROUNDS_QUERY,
    response_schema={"type": "array", "items": _ROUND},
    tags=("patrols",),
)
async def list_patrols(request: web.Request) -> web.StreamResponse:
    patrols = _patrols(request)
    query = request[QUERY]
    q = PatrolQuery(
        statuses=query.get("status", ()),
        projects=project_subtree(request.app[HUB], query["project"]) if "project" in query
        else (),
        assignees=query.get("assignee", ()),
        template_id=query.get("template_id"),
        overdue=query.get("overdue"),
        now=patrols.clock(),
        limit=query["limit"],
        offset=query["offset"],
    )
    now = patrols.clock()
    return json_response([instance_dict(row, now) for row in await patrols.store.instances(q)])


@routes.get("/api/patrols/{patrol_id:\\d+}", "One patrol round", response_schema=_ROUND,
            tags=("patrols",))
async def get_patrol(request: web.Request) -> web.StreamResponse:
    patrols = _patrols(request)
    row = await patrols.async_get(int(request.match_info["patrol_id"]))
    return json_response(instance_dict(row, patrols.clock()))


@routes.patch("/api/patrols/{patrol_id:\\d+}", "Assign a pending patrol round",
              body_schema=ASSIGN_SCHEMA, response_schema=_ROUND, tags=("patrols",))
async def assign_patrol(request: web.Request) -> web.StreamResponse:
    shown = await _patrols(request).async_assign(int(request.match_info["patrol_id"]),
                                                 request[BODY]["assignee"])
    return json_response(shown)


@routes.post(
    "/api/patrols/{patrol_id:\\d+}/complete",
    "Complete a patrol round with a result per checklist item",
    description=(
        "`results`: one `{item, ok, note}` per checklist item (`item` is its name or its "
        "number from 0); every item must be answered. Each failed item opens a work order "
        "linked to the round (`workorders` in the answer). 409 when already completed."
    ),
    body_schema=COMPLETE_SCHEMA,
    response_schema={**_ROUND, "properties": {**_ROUND["properties"], "workorders": {
        "type": "array", "items": WORKORDER_SCHEMA}}},
    tags=("patrols",),
)
async def complete_patrol(request: web.Request) -> web.StreamResponse:
    result = await _patrols(request).async_complete(
        int(request.match_info["patrol_id"]), request[BODY]["results"],
        request_context(request))
    return json_response(result)
