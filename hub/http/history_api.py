"""GET /api/history/{entity_id} (CONTRACTS §5): chart points from raw readings or rollups, or CSV.

Scoped like `GET /api/states/{entity_id}`: an entity of a device outside the caller's projects
is a 403 with the reason, whatever the time range. The points come from
`hub.recorder.reader` (hub/storage/history.py), which also picks the resolution by span when
the caller does not name one. docs/api.md documents the shape; a web chart is written
against it.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import voluptuous as vol
from aiohttp import web

from ..storage.history import RESOLUTION_NAMES, TooManyPoints, choose_resolution
from .auth import require_entity
from .query import query_time
from .routes import HUB, QUERY, SCOPED, ApiError, RouteTable, json_response

routes = RouteTable()

DEFAULT_SPAN = 86400.0
CSV_COLUMNS = ("t", "mean", "min", "max", "last", "count", "state")

QUERY_SCHEMA = vol.Schema({
    vol.Optional("start", description="ISO 8601 or unix seconds; default end − 24 h"): query_time,
    vol.Optional("end", description="ISO 8601 or unix seconds (exclusive); default now"):
        query_time,
    vol.Optional("resolution", default="auto",
                 description="raw, 5m, 1h or 1d; auto (default) chooses by span and retention"):
        vol.In(("auto", *RESOLUTION_NAMES)),
    vol.Optional("format", default="json", description="json (default) or csv"):
        vol.In(("json", "csv")),
})

_NUMBER = {"type": ["number", "null"]}
RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "entity_id": {"type": "string"},
        "resolution": {"enum": list(RESOLUTION_NAMES)},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "points": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "t": {"type": "string", "format": "date-time",
                          "description": "bucket start, or the reading's time (raw)"},
                    "mean": _NUMBER, "min": _NUMBER, "max": _NUMBER, "last": _NUMBER,
                    "count": {"type": "integer"},
                    "state": {"type": "string", "description": "raw points only: the text"},
                },
                "required": ["t", "mean", "min", "max", "last", "count"],
            },
        },
    },
    "required": ["entity_id", "resolution", "start", "end", "points"],
}


def history_csv(points: list[dict[str, Any]]) -> bytes:
    """Points as CSV (UTF-8 with BOM so Excel reads it), one row per point."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for point in points:
        writer.writerow(["" if point.get(key) is None else point[key] for key in CSV_COLUMNS])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


@routes.get(
    "/api/history/{entity_id}",
    "Readings or rollups of one entity (mean, min, max, last, count per point), JSON or CSV",
    description=(
        "`resolution` raw, 5m, 1h or 1d; when omitted (auto) the finest one whose points fit "
        "a chart for the span and that retention still holds: raw up to 6 h, 5m up to 5 days, "
        "1h up to 62 days, else 1d. Times are ISO 8601 in the hub's time zone; 1d buckets "
        "start at local midnight. `format=csv` returns the same points as a CSV file. More "
        "than 100000 points is a 400 that says so."
    ),
    scope=SCOPED,
    query_schema=QUERY_SCHEMA,
    responses={200: "The points, oldest first", 404: "No such entity"},
    response_schema=RESPONSE_SCHEMA,
    tags=("history",),
)
async def get_history(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    entity_id = request.match_info["entity_id"]
    query = request[QUERY]
    await require_entity(request, entity_id)
    reader = getattr(getattr(hub, "recorder", None), "reader", None)
    if reader is None:
        raise ApiError(503, "History is not available: the recorder is not running")
    end = query.get("end", time.time())
    start = query.get("start", end - DEFAULT_SPAN)
    if start >= end:
        raise ApiError(400, "Invalid query: start must be before end")
    resolution = query["resolution"]
    if resolution == "auto":
        resolution = choose_resolution(start, end, reader.keep)
    try:
        points = await reader.points(entity_id, start, end, resolution)
    except TooManyPoints as err:
        raise ApiError(400, f"Invalid query: {err}") from err
    if points is None:
        if hub.states.get(entity_id) is None:
            raise ApiError(404, f"Entity {entity_id} not found")
        points = []
    if query["format"] == "csv":
        filename = f"{entity_id}_{resolution}.csv"
        return web.Response(
            body=history_csv(points),
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
        )
    return json_response({
        "entity_id": entity_id,
        "resolution": resolution,
        "start": reader.iso(start),
        "end": reader.iso(end),
        "points": points,
    })
