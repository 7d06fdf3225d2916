"""Patrol inspections over HTTP (巡检): templates (checklists with a period), the rounds the
hub generates from them, completing a round with a result per item (hub/core/patrols.py).

A failed item opens a work order linked to the round; the answer to `complete` lists them.

Who may do what (docs/security.md): every role reads the templates and rounds of its
projects (lists cut to the scope in SQL; one outside it is a 403, a missing one a 404);
templates and assigning rounds are project_admin and above, within scope (a template is the
site's plan, a setting); a round is completed by its assignee or by project_admin and above.
Completing with failed items opens work orders in the round's project whoever completes it:
the finding is the completer's, the order is the system's. Template changes, assignments and
completions go to the audit log (`patrol.template.create`, `patrol.template.update`,
`patrol.assign`, `patrol.complete`).
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from hub.auth.permissions import PROJECT_ADMIN
from hub.core.patrols import (
    COMPLETED,
    PENDING,
    RESULT_SCHEMA,
    TEMPLATE_FIELDS,
    instance_dict,
    template_dict,
)
from hub.storage.patrol_store import PatrolQuery

from .auth import context_for, deny, principal, require_device, require_project
from .query import path_id, query_bool, query_list, query_offset, row_id
from .routes import BODY, HUB, QUERY, SCOPED, ApiError, RouteTable, json_response
from .workorders_api import (
    WORKORDER_SCHEMA,
    audit,
    scoped_projects,
)

routes = RouteTable()


def _patrols(request: web.Request) -> Any:
    patrols = getattr(request.app[HUB], "patrols", None)
    if patrols is None:
        raise ApiError(503, "Patrols are not running")
    return patrols


async def _scoped_template(request: web.Request, template_id: int) -> dict[str, Any]:
    """404 when there is no such template, 403 (audited) when it lies outside the scope."""
    row = await _patrols(request).store.template(template_id)
    if row is None:
        raise ApiError(404, f"Patrol template {template_id} not found")
    await require_project(request, row.get("project"), f"Patrol template {template_id}")
    return row


async def _scoped_round(request: web.Request, patrol_id: int) -> dict[str, Any]:
    """404 when there is no such round, 403 (audited) when it lies outside the scope."""
    row = await _patrols(request).async_get(patrol_id)
    await require_project(request, row.get("project"), f"Patrol round {patrol_id}")
    return row


async def _require_item_devices(request: web.Request, items: list[Any]) -> None:
    """A checklist item naming a device outside the caller's scope is refused: its failure
    would open a work order about a device the template's owner may not see."""
    for item in items:
        if isinstance(item, dict) and item.get("device_id"):
            await require_device(request, item["device_id"])


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

TEMPLATES_QUERY = vol.Schema({vol.Optional("project"): query_list()})
TEMPLATE_SCHEMA = vol.Schema(TEMPLATE_FIELDS)
TEMPLATE_UPDATE_SCHEMA = vol.All(
    vol.Schema({vol.Optional(key.schema): value for key, value in TEMPLATE_FIELDS.items()
                if key.schema in ("name", "items", "allowed", "assignee", "enabled")}),
    vol.Length(min=1, msg="nothing to change: give name, items, allowed, assignee or enabled"),
)
ROUNDS_QUERY = vol.Schema({
    vol.Optional("status", description="pending, completed (comma-separated)"):
        query_list((PENDING, COMPLETED)),
    vol.Optional("project", description="includes sub-projects"): query_list(),
    vol.Optional("assignee"): query_list(),
    vol.Optional("template_id"): row_id,
    vol.Optional("overdue"): query_bool,
    vol.Optional("limit", default=1000): vol.All(vol.Coerce(int), vol.Range(min=1, max=10_000)),
    vol.Optional("offset", default=0): query_offset,
})
COMPLETE_SCHEMA = vol.Schema({
    vol.Required("results"): vol.All([RESULT_SCHEMA], vol.Length(min=1, max=500)),
})
ASSIGN_SCHEMA = vol.Schema({vol.Required("assignee"): vol.Any(None, vol.All(
    str, vol.Length(min=1, max=255)))})


@routes.get("/api/patrols/templates", "Patrol templates (巡检计划) of my projects",
            scope=SCOPED, query_schema=TEMPLATES_QUERY,
            response_schema={"type": "array", "items": _TEMPLATE}, tags=("patrols",))
async def list_patrol_templates(request: web.Request) -> web.StreamResponse:
    projects = await scoped_projects(request, request[QUERY].get("project"))
    rows = await _patrols(request).store.templates(projects)
    return json_response([template_dict(row) for row in rows])


@routes.post(
    "/api/patrols/templates",
    "Create a patrol template: a checklist per project with a period",
    description=(
        "`period`: daily, weekly, monthly (on the local calendar, counted from `start_at`) or "
        "interval (`interval`, e.g. `8h`). A round is generated when a period comes due, with "
        "`allowed` (default: the period) to complete it; a `start_at` in the past generates "
        "the current round at once. project_admin and above, for a `project` inside their "
        "scope (required unless the caller sees everything)."
    ),
    scope=PROJECT_ADMIN,
    body_schema=TEMPLATE_SCHEMA,
    responses={201: "Created"},
    response_schema=_TEMPLATE,
    tags=("patrols",),
)
async def create_patrol_template(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    who = principal(request)
    if body.get("project"):
        await require_project(request, body["project"])
    elif not who.scope.unrestricted:
        raise await deny(request, f"A patrol template made by {who.name} must name a project "
                                  "inside its scope")
    await _require_item_devices(request, body["items"])
    shown = await _patrols(request).async_create_template(body, context_for(request))
    await audit(request, "patrol.template.create", shown["id"], shown.get("project"), {
        "name": shown["name"], "period": shown["period"], "assignee": shown.get("assignee"),
        "items": len(shown["items"])})
    return json_response(shown, status=201)


@routes.patch(
    "/api/patrols/templates/{template_id:\\d+}",
    "Change a patrol template (name, items, allowed, assignee, enabled)",
    description="Rounds already generated keep their checklist; later rounds use the new one. "
                "project_admin and above, for a template of their projects.",
    scope=PROJECT_ADMIN,
    body_schema=TEMPLATE_UPDATE_SCHEMA,
    response_schema=_TEMPLATE,
    tags=("patrols",),
)
async def update_patrol_template(request: web.Request) -> web.StreamResponse:
    template_id = path_id(request, "template_id")
    changes = dict(request[BODY])
    row = await _scoped_template(request, template_id)
    await _require_item_devices(request, changes.get("items") or [])
    shown = await _patrols(request).async_update_template(template_id, changes)
    await audit(request, "patrol.template.update", template_id, row.get("project"),
                {"changed": sorted(changes)})
    return json_response(shown)


@routes.get(
    "/api/patrols",
    "Patrol rounds (巡检任务) of my projects, newest first",
    scope=SCOPED,
    description="`overdue=true`: pending past `due_at`. A `project` outside the caller's scope "
                "is a 403.",
    query_schema=ROUNDS_QUERY,
    response_schema={"type": "array", "items": _ROUND},
    tags=("patrols",),
)
async def list_patrols(request: web.Request) -> web.StreamResponse:
    patrols = _patrols(request)
    query = request[QUERY]
    q = PatrolQuery(
        statuses=query.get("status", ()),
        projects=await scoped_projects(request, query.get("project")),
        assignees=query.get("assignee", ()),
        template_id=query.get("template_id"),
        overdue=query.get("overdue"),
        now=patrols.clock(),
        limit=query["limit"],
        offset=query["offset"],
    )
    now = patrols.clock()
    return json_response([instance_dict(row, now) for row in await patrols.store.instances(q)])


@routes.get("/api/patrols/{patrol_id:\\d+}", "One patrol round", scope=SCOPED,
            response_schema=_ROUND, tags=("patrols",))
async def get_patrol(request: web.Request) -> web.StreamResponse:
    row = await _scoped_round(request, path_id(request, "patrol_id"))
    return json_response(instance_dict(row, _patrols(request).clock()))


@routes.patch("/api/patrols/{patrol_id:\\d+}", "Assign a pending patrol round",
              description="project_admin and above, for a round of their projects.",
              scope=PROJECT_ADMIN, body_schema=ASSIGN_SCHEMA, response_schema=_ROUND,
              tags=("patrols",))
async def assign_patrol(request: web.Request) -> web.StreamResponse:
    patrol_id = path_id(request, "patrol_id")
    row = await _scoped_round(request, patrol_id)
    assignee = request[BODY]["assignee"]
    shown = await _patrols(request).async_assign(patrol_id, assignee)
    await audit(request, "patrol.assign", patrol_id, row.get("project"),
                {"from": row.get("assignee"), "to": assignee})
    return json_response(shown)


@routes.post(
    "/api/patrols/{patrol_id:\\d+}/complete",
    "Complete a patrol round with a result per checklist item",
    description=(
        "`results`: one `{item, ok, note}` per checklist item (`item` is its name or its "
        "number from 0); every item must be answered. Each failed item opens a work order "
        "linked to the round (`workorders` in the answer). 409 when already completed. "
        "The round's assignee, or project_admin and above within scope."
    ),
    scope=SCOPED,
    body_schema=COMPLETE_SCHEMA,
    response_schema={**_ROUND, "properties": {**_ROUND["properties"], "workorders": {
        "type": "array", "items": WORKORDER_SCHEMA}}},
    tags=("patrols",),
)
async def complete_patrol(request: web.Request) -> web.StreamResponse:
    patrol_id = path_id(request, "patrol_id")
    row = await _scoped_round(request, patrol_id)
    who = principal(request)
    as_assignee: str | None = None
    if not who.at_least(PROJECT_ADMIN):
        if row.get("assignee") != who.name:
            holder = row.get("assignee")
            whose = f"assigned to {holder}" if holder else "not assigned to anyone"
            raise await deny(request, f"Patrol round {patrol_id} is {whose}: only its assignee "
                                      "or a project_admin or above may complete it",
                             target=str(patrol_id), project=row.get("project"))
        as_assignee = who.name
    result = await _patrols(request).async_complete(
        patrol_id, request[BODY]["results"], context_for(request),
        expected_assignee=as_assignee)
    await audit(request, "patrol.complete", patrol_id, row.get("project"), {
        "failed": result["failed_count"], "late": result["late"],
        "workorders": [order["id"] for order in result["workorders"]]})
    return json_response(result)
