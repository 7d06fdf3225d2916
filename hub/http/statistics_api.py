"""GET /api/statistics: the home page's and the monthly report's numbers (hub/core/statistics.py).

Scoped (docs/security.md): every role may ask, and every number is computed over the
caller's projects only (the SQL aggregates filter on them), so a user's home page counts its
own sites' hazards, never the whole platform's. A `project` outside the scope is a 403 with
the reason, not a report of zeros.
"""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol
from aiohttp import web

from .query import query_list
from .routes import HUB, QUERY, SCOPED, ApiError, RouteTable, json_response
from .workorders_api import scoped_projects

routes = RouteTable()

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _month(value: Any) -> tuple[int, int]:
    match = _MONTH.match(str(value).strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise vol.Invalid(f"expected a month as YYYY-MM (2026-11), got {value!r}")
    return int(match.group(1)), int(match.group(2))


QUERY_SCHEMA = vol.Schema({
    vol.Optional("month", description="YYYY-MM in the hub's time zone; default this month"):
        _month,
    vol.Optional("project", description="project id(s); includes sub-projects"): query_list(),
    vol.Optional("top", default=10, description="devices listed in by_device"): vol.All(
        vol.Coerce(int), vol.Range(min=1, max=1000)),
})

_COUNTS = {"type": "object", "properties": {k: {"type": "integer"}
                                            for k in ("alarm", "fault", "event", "total")}}
_MEAN = {"type": "object", "properties": {"seconds": {"type": ["number", "null"]},
                                          "count": {"type": "integer"}}}
RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "month": {"type": "string"}, "project": {"type": ["string", "null"]},
        "time_zone": {"type": "string"}, "since": {"type": "string"},
        "until": {"type": "string"}, "totals": _COUNTS,
        "by_type": {"type": "array", "items": {"type": "object"}},
        "by_project": {"type": "array", "items": _COUNTS},
        "by_device": {"type": "array", "items": _COUNTS},
        "daily": {"type": "array", "items": {"type": "object"}},
        "mtta": {**_MEAN, "description": "mean acked_at − started_at of alarms and faults"},
        "mttr": {**_MEAN, "description": "mean repaired_at − created_at of work orders"},
        "workorders": {"type": "object"}, "patrols": {"type": "object"},
    },
}


@routes.get(
    "/api/statistics",
    "Monthly statistics: hazards and faults by kind, type, project, device; MTTA, MTTR",
    description=(
        "Counts of alarm records started in the month (hub time zone) by kind (alarm = "
        "hazard, fault, event), type, project, device (top N) and day; mean time to "
        "acknowledge (alarms and faults) and to repair (work orders created → repaired) in "
        "seconds; work orders and patrol rounds of the month. See docs/hazards.md. Over the "
        "caller's projects only; a `project` outside them is a 403."
    ),
    scope=SCOPED,
    query_schema=QUERY_SCHEMA,
    response_schema=RESPONSE_SCHEMA,
    tags=("statistics",),
)
async def get_statistics(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    statistics = getattr(hub, "statistics", None)
    if statistics is None:
        raise ApiError(503, "Statistics are not available")
    query = request[QUERY]
    year, month = query.get("month", (None, None))
    projects = await scoped_projects(request, query.get("project"))
    report = await statistics.async_month(
        year, month, projects, query["top"],
        project_label=",".join(query["project"]) if "project" in query else None)
    return json_response(report)
