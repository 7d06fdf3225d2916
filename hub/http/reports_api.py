"""GET /api/reports/monthly: a project's month as an HTML page or a PDF (hub/reports/).

Scoped like /api/statistics (docs/security.md): every role may ask, every figure is computed
over the caller's projects only, and a `project` outside the scope is a 403 with the reason.
The PDF is laid out in a worker thread: WeasyPrint takes a second or more of CPU, which must
not stall alarms on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import voluptuous as vol
from aiohttp import web

from ..reports.monthly import DEFAULT_TOP, build_monthly
from ..reports.render import PdfUnavailable, render_html, render_pdf
from .query import query_list
from .routes import HUB, QUERY, SCOPED, ApiError, RouteTable
from .statistics_api import _month
from .workorders_api import scoped_projects

routes = RouteTable()

QUERY_SCHEMA = vol.Schema({
    vol.Optional("month", description="YYYY-MM in the hub's time zone; default this month"):
        _month,
    vol.Optional("project", description="project id(s); includes sub-projects"): query_list(),
    vol.Optional("format", default="html", description="html or pdf"): vol.In(("html", "pdf")),
    vol.Optional("lang", description="zh-CN (default: the hub's language) or en"): vol.In(
        ("zh-CN", "en")),
    vol.Optional("top", default=DEFAULT_TOP, description="devices listed as riskiest"): vol.All(
        vol.Coerce(int), vol.Range(min=1, max=100)),
})


@routes.get(
    "/api/reports/monthly",
    "Monthly report of a project as HTML or PDF",
    description=(
        "Alarms and faults by kind and type, the riskiest devices (alarms, hazard warnings, "
        "residual-current trend), response times (raised → acknowledged) and repair times "
        "(work order opened → closed), work orders opened, closed and overdue, daily "
        "residual-current and temperature levels from the 1-day rollups, and the hazard "
        "warnings of a calendar month in the hub's time zone. `format=pdf` answers "
        "application/pdf (an attachment), else text/html. Chinese by default, `lang=en` for "
        "English. Over the caller's projects only; a `project` outside them is a 403. See "
        "docs/reports.md."
    ),
    scope=SCOPED,
    query_schema=QUERY_SCHEMA,
    response_content_type="text/html",
    tags=("statistics",),
)
async def get_monthly_report(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    if getattr(hub, "statistics", None) is None or getattr(hub, "report_store", None) is None:
        raise ApiError(503, "Reports are not available")
    query: dict[str, Any] = request[QUERY]
    year, month = query.get("month") or hub.statistics.current_month()
    wanted = query.get("project") or []
    projects = await scoped_projects(request, wanted)
    report = await build_monthly(hub, hub.report_store, year, month, projects, wanted,
                                 query["top"])
    lang = query.get("lang") or getattr(hub, "language", "zh-CN")
    html = render_html(report, lang)
    if query["format"] == "html":
        return web.Response(text=html, content_type="text/html", charset="utf-8")
    try:
        pdf = await asyncio.to_thread(render_pdf, html)
    except PdfUnavailable as err:
        raise ApiError(503, str(err)) from err
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(wanted)) or "all"
    name = f"voltwatch-report-{label}-{report['month']}.pdf"
    return web.Response(body=pdf, headers={
        "Content-Type": "application/pdf",
        "Content-Disposition": f'attachment; filename="{name}"',
    })
