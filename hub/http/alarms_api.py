"""Alarm records over HTTP (CONTRACTS §5): list and filter, the event-log CSV, acknowledge,
handle and reset, one or a batch.

Lists read the database, not the engine's memory: the database is the one truth when several
hubs share it, and it holds cleared records and events too. Acknowledging and handling go
through the engine so the bus hears about them (`alarm_acknowledged`, `alarm_handled`) with
the caller's Context; the caller is the token's user (or name), recorded in `acked_by`.

The CSV is the seed's event log (类型, 时间, 设备名称, 设备类型, 通讯地址, 探测器地址, 区域,
位置, 备注 ...): UTF-8 with a BOM, so Excel on a Chinese Windows opens it without mojibake;
times in the hub's time zone, as people on site read them. JSON times are ISO 8601 UTC.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import voluptuous as vol
from aiohttp import web

from hub.core.alarms import KIND_WORDS, record_dict
from hub.core.conditions import KINDS
from hub.core.context import Context
from hub.storage.alarm_store import AlarmQuery

from .auth import auth_manager, context_for, deny, principal
from .query import MAX_ROW_ID, path_id, query_bool, query_list, query_offset, query_time
from .routes import BODY, HUB, QUERY, SCOPED, ApiError, RouteTable, json_response

routes = RouteTable()

MAX_LIMIT = 10_000


_FILTERS = {
    vol.Optional("status", default="all", description="active, cleared or all"): vol.In(
        ("active", "cleared", "all"), msg="expected active, cleared or all"
    ),
    vol.Optional("kind", description="alarm, fault, event (comma-separated for several)"):
        query_list(KINDS),
    vol.Optional("project", description="project id; includes its sub-projects"): query_list(),
    vol.Optional("device", description="device id (comma-separated for several)"): query_list(),
    vol.Optional("type", description="alarm type, e.g. residual_current_high"): query_list(),
    vol.Optional("since", description="ISO 8601 or unix seconds"): query_time,
    vol.Optional("until", description="ISO 8601 or unix seconds"): query_time,
    vol.Optional("acknowledged", description="true or false"): query_bool,
    vol.Optional("limit", default=1000, description=f"at most {MAX_LIMIT}"): vol.All(
        vol.Coerce(int), vol.Range(min=1, max=MAX_LIMIT)
    ),
    vol.Optional("offset", default=0): query_offset,
}


def _window_ok(query: dict[str, Any]) -> dict[str, Any]:
    if "since" in query and "until" in query and query["since"] >= query["until"]:
        raise vol.Invalid("since must be before until", path=["since"])
    return query


QUERY_SCHEMA = vol.All(vol.Schema(_FILTERS), _window_ok)
CSV_QUERY_SCHEMA = vol.All(
    vol.Schema({**_FILTERS, vol.Optional("lang", description="zh-CN or en"): vol.In(
        ("zh-CN", "zh", "en"), msg="expected zh-CN or en")}),
    _window_ok,
)
_IDS = vol.All([vol.All(int, vol.Range(min=1, max=MAX_ROW_ID))],
               vol.Length(min=1, max=MAX_LIMIT))
_NOTE = vol.All(str, vol.Length(max=2000))
BATCH_SCHEMA = vol.Schema({vol.Required("ids"): _IDS, vol.Optional("note"): _NOTE})
NOTE_SCHEMA = vol.Schema({vol.Optional("note"): _NOTE})
CLEAR_SCHEMA = vol.Schema({vol.Optional("force", default=False): bool})

_RECORD_SCHEMA = {
    "type": "object",
    "description": "An alarm, fault or event record; times ISO 8601 UTC",
    "properties": {
        name: {"type": kind}
        for name, kind in [
            ("id", "integer"), ("kind", "string"), ("type", "string"), ("device_id", "string"),
            ("entity_id", "string"), ("project", "string"), ("area", "string"),
            ("location", "string"), ("message", "string"), ("message_en", "string"),
            ("value", "number"), ("unit", "string"), ("status", "string"),
            ("acknowledged", "boolean"), ("severity", "string"), ("count", "integer"),
            ("sources", "array"), ("latching", "boolean"), ("started_at", "string"),
            ("last_seen_at", "string"), ("acked_at", "string"), ("acked_by", "string"),
            ("cleared_at", "string"), ("cleared_by", "string"), ("handled_at", "string"),
            ("handled_by", "string"), ("note", "string"), ("device_name", "string"),
            ("platform", "string"), ("address", "string"), ("unit_address", "string"),
        ]
    },
}
_BATCH_RESPONSE = {
    "type": "object",
    "properties": {
        "done": {"type": "array", "items": _RECORD_SCHEMA},
        "unchanged": {"type": "array", "items": {"type": "integer"},
                      "description": "already acknowledged / handled before this call"},
        "not_found": {"type": "array", "items": {"type": "integer"}},
    },
}


def _engine(request: web.Request) -> Any:
    engine = getattr(request.app[HUB], "alarms", None)
    if engine is None or engine.store is None:
        raise ApiError(503, "The alarm engine is not running")
    return engine


def _context(request: web.Request) -> Context:
    return context_for(request)


def _project_ids(hub: Any, wanted: list[str]) -> list[str]:
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


async def _alarm_query(request: web.Request) -> AlarmQuery | None:
    """The query, cut to the caller's scope; None when nothing in scope can match.

    A `project` or `device` filter naming something outside the scope is a 403 (not an empty
    answer), so a user learns at once that the id was wrong for them.
    """
    query = request[QUERY]
    hub = request.app[HUB]
    who = principal(request)
    projects = _project_ids(hub, query["project"]) if "project" in query else []
    for project in query.get("project", ()):
        if not who.scope.can_see(project):
            raise await deny(request, f"Project {project} is outside the scope of {who.name}",
                             target=project, project=project)
    manager = auth_manager(request)
    for device_id in query.get("device", ()):
        project = manager.device_project(device_id) if manager is not None else None
        if not who.scope.unrestricted and not who.scope.can_see(project):
            raise await deny(request, f"Device {device_id} is outside the scope of {who.name}",
                             target=device_id, project=project)
    visible = who.scope.allowed()
    if visible is not None:
        projects = [p for p in projects if p in visible] if projects else sorted(visible)
        if not projects:
            return None
    return AlarmQuery(
        status=query["status"],
        kinds=query.get("kind", ()),
        projects=projects,
        devices=query.get("device", ()),
        types=query.get("type", ()),
        since=query.get("since"),
        until=query.get("until"),
        acknowledged=query.get("acknowledged"),
        limit=query["limit"],
        offset=query["offset"],
    )


@routes.get(
    "/api/alarms",
    "Alarm, fault and event records (in my scope), newest first",
    scope=SCOPED,
    description=(
        "Filters combine with AND; `kind`, `device`, `project` and `type` take comma-separated "
        "lists. `since`/`until` select records whose time span overlaps the window (an alarm "
        "still active that started before `since` is included). `project` includes its "
        "sub-projects."
    ),
    query_schema=QUERY_SCHEMA,
    response_schema={"type": "array", "items": _RECORD_SCHEMA},
    tags=("alarms",),
)
async def list_alarms(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    query = await _alarm_query(request)
    rows = [] if query is None else await engine.store.query(query)
    return json_response([record_dict(row) for row in rows])


CSV_COLUMNS: list[tuple[str, str, str]] = [
    # (key, zh-CN, en)
    ("kind", "类型", "Kind"),
    ("time", "时间", "Time"),
    ("device_name", "设备名称", "Device name"),
    ("platform", "设备类型", "Device type"),
    ("address", "通讯地址", "Communication address"),
    ("unit_address", "探测器地址", "Detector address"),
    ("area", "区域", "Area"),
    ("location", "位置", "Location"),
    ("remark", "备注", "Remark"),
    ("project", "项目", "Project"),
    ("device_id", "设备编号", "Device id"),
    ("type", "报警类型", "Type"),
    ("severity", "级别", "Severity"),
    ("status", "状态", "Status"),
    ("cleared_at", "恢复时间", "Cleared at"),
    ("acked_by", "确认人", "Acknowledged by"),
    ("acked_at", "确认时间", "Acknowledged at"),
    ("handled_by", "处理人", "Handled by"),
    ("handled_at", "处理时间", "Handled at"),
    ("note", "处理备注", "Note"),
]
_STATUS_WORDS = {"active": ("未恢复", "active"), "cleared": ("已恢复", "cleared")}


def _local(ts: float | None, zone: ZoneInfo) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S")


def _zone(hub: Any) -> ZoneInfo:
    try:
        return ZoneInfo(getattr(hub, "time_zone", "Asia/Shanghai"))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def event_log_csv(rows: list[dict[str, Any]], english: bool, zone: ZoneInfo) -> bytes:
    """The event log as CSV bytes (UTF-8 with BOM)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([en if english else zh for _key, zh, en in CSV_COLUMNS])
    index = 1 if english else 0
    for row in rows:
        status_words = _STATUS_WORDS.get(row["status"], (row["status"], row["status"]))
        if row["kind"] == "event":
            status_words = ("", "")
        values = {
            "kind": KIND_WORDS.get(row["kind"], (row["kind"], row["kind"]))[index],
            "time": _local(row["started_at"], zone),
            "remark": (row.get("message_en") or row["message"]) if english else row["message"],
            "status": status_words[index],
            "cleared_at": "" if row["kind"] == "event" else _local(row.get("cleared_at"), zone),
            "acked_at": _local(row.get("acked_at"), zone),
            "handled_at": _local(row.get("handled_at"), zone),
        }
        writer.writerow([
            values[key] if key in values else ("" if row.get(key) is None else row.get(key))
            for key, _zh, _en in CSV_COLUMNS
        ])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


@routes.get(
    "/api/alarms.csv",
    "The event log as CSV (UTF-8 with BOM, for Excel), in my scope",
    scope=SCOPED,
    description=(
        "Same filters as `GET /api/alarms`. Columns: kind (报警/故障/事件), time, device name, "
        "device type, communication address, detector address, area, location, remark, then "
        "project, device id, type, severity, status, cleared at, acknowledged by/at, handled "
        "by/at, note. Headers and words in Chinese (`lang=zh-CN`, the default when the hub's "
        "language is zh-CN) or English (`lang=en`). Times in the hub's time zone."
    ),
    query_schema=CSV_QUERY_SCHEMA,
    response_content_type="text/csv",
    tags=("alarms",),
)
async def export_alarms_csv(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    hub = request.app[HUB]
    query = await _alarm_query(request)
    rows = [] if query is None else await engine.store.query(query)
    lang = request[QUERY].get("lang") or getattr(hub, "language", "zh-CN")
    body = event_log_csv(rows, lang.startswith("en"), _zone(hub))
    stamp = datetime.now(_zone(hub)).strftime("%Y%m%d-%H%M%S")
    return web.Response(
        body=body,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="voltwatch-events-{stamp}.csv"',
        },
    )


def _alarm_id(request: web.Request) -> int:
    return path_id(request, "alarm_id")


@routes.get(
    "/api/alarms/{alarm_id}",
    "One alarm record",
    scope=SCOPED,
    response_schema=_RECORD_SCHEMA,
    tags=("alarms",),
)
async def get_alarm(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    alarm_id = _alarm_id(request)
    rows = await engine.store.get_many([alarm_id])
    if not rows:
        raise ApiError(404, f"Alarm {alarm_id} not found")
    await _require_alarms(request, rows)
    return json_response(record_dict(rows[0]))


_ACTION_SERVICE = {"ack": "acknowledge", "handle": "handle", "clear": "reset"}


async def _require_alarms(request: web.Request, rows: list[dict[str, Any]]) -> None:
    who = principal(request)
    outside = [row["id"] for row in rows if not who.scope.can_see(row.get("project"))]
    if outside:
        raise await deny(request, f"Alarm(s) {', '.join(map(str, outside))} outside the scope "
                                  f"of {who.name}", target=",".join(map(str, outside)),
                         project=next((r.get("project") for r in rows), None))


async def _authorise(request: web.Request, action: str, ids: list[int]) -> None:
    """Role (the same rule as the alarm.* service) and scope of every record, before any
    change: a batch with one record outside the scope changes nothing."""
    who = principal(request)
    manager = auth_manager(request)
    service = _ACTION_SERVICE[action]
    if manager is not None and not manager.policy.allows(who.role, "alarm", service):
        raise await deny(request, f"Role {who.role} may not {service} alarms")
    if not who.scope.unrestricted:
        await _require_alarms(request, await _engine(request).store.get_many(ids))


async def _audit(request: web.Request, action: str, ids: list[int], result: dict[str, Any],
                 note: str | None) -> None:
    manager = auth_manager(request)
    if manager is None:
        return
    who = principal(request)
    done = result.get("done") or []
    await manager.audit.record(
        f"alarm.{action}", "ok", actor=who.name, actor_role=who.role, ip=request.remote,
        target=",".join(map(str, ids))[:255],
        project=next((r.get("project") for r in done if r.get("project")), None),
        detail={"ids": ids[:100], "changed": [r["id"] for r in done][:100],
                "unchanged": result.get("unchanged", [])[:100],
                "not_found": result.get("not_found", [])[:100], "note": note},
    )


async def _single(request: web.Request, action: str) -> web.StreamResponse:
    engine = _engine(request)
    alarm_id = _alarm_id(request)
    note = request[BODY].get("note")
    await _authorise(request, action, [alarm_id])
    if action == "ack":
        result = await engine.async_acknowledge([alarm_id], note, _context(request))
    else:
        result = await engine.async_handle([alarm_id], note, _context(request))
    if result["not_found"]:
        raise ApiError(404, f"Alarm {alarm_id} not found")
    await _audit(request, action, [alarm_id], result, note)
    rows = await engine.store.get_many([alarm_id])
    return json_response({**record_dict(rows[0]), "changed": bool(result["done"])})


@routes.post(
    "/api/alarms/{alarm_id}/ack",
    "Acknowledge one record (确认)",
    scope=SCOPED,
    description="Records who (the token's user) and when, and the optional note. "
                "Acknowledging twice keeps the first acknowledgement (`changed: false`).",
    body_schema=NOTE_SCHEMA,
    body_optional=True,
    response_schema=_RECORD_SCHEMA,
    tags=("alarms",),
)
async def ack_alarm(request: web.Request) -> web.StreamResponse:
    return await _single(request, "ack")


@routes.post(
    "/api/alarms/ack",
    "Acknowledge a batch of records (批量确认)",
    description="A batch naming any record outside the caller's scope is refused whole (403).",
    scope=SCOPED,
    body_schema=BATCH_SCHEMA,
    response_schema=_BATCH_RESPONSE,
    tags=("alarms",),
)
async def ack_alarms(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    await _authorise(request, "ack", body["ids"])
    result = await _engine(request).async_acknowledge(body["ids"], body.get("note"),
                                                      _context(request))
    await _audit(request, "ack", body["ids"], result, body.get("note"))
    return json_response(result)


@routes.post(
    "/api/alarms/{alarm_id}/handle",
    "Mark one record handled (处理), acknowledging it if needed",
    scope=SCOPED,
    body_schema=NOTE_SCHEMA,
    body_optional=True,
    response_schema=_RECORD_SCHEMA,
    tags=("alarms",),
)
async def handle_alarm(request: web.Request) -> web.StreamResponse:
    return await _single(request, "handle")


@routes.post(
    "/api/alarms/handle",
    "Mark a batch of records handled (批量处理), with a note",
    scope=SCOPED,
    body_schema=BATCH_SCHEMA,
    response_schema=_BATCH_RESPONSE,
    tags=("alarms",),
)
async def handle_alarms(request: web.Request) -> web.StreamResponse:
    body = request[BODY]
    await _authorise(request, "handle", body["ids"])
    result = await _engine(request).async_handle(body["ids"], body.get("note"),
                                                 _context(request))
    await _audit(request, "handle", body["ids"], result, body.get("note"))
    return json_response(result)


@routes.post(
    "/api/alarms/{alarm_id}/clear",
    "Reset (clear) an active record, e.g. a latched arc fault (复位)",
    scope=SCOPED,
    description=(
        "While a source still reports the condition the record stays active and clears when "
        "it lets go (`reset_pending: true`); `force: true` clears it at once."
    ),
    body_schema=CLEAR_SCHEMA,
    body_optional=True,
    response_schema=_RECORD_SCHEMA,
    tags=("alarms",),
)
async def clear_alarm(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    alarm_id = _alarm_id(request)
    body = request[BODY]
    await _authorise(request, "clear", [alarm_id])
    shown = await engine.async_reset(alarm_id, _context(request), body["force"])
    if shown is not None:
        await _audit(request, "clear", [alarm_id], {"done": [shown]}, None)
    if shown is None:
        rows = await engine.store.get_many([alarm_id])
        if not rows:
            raise ApiError(404, f"Alarm {alarm_id} not found")
        raise ApiError(409, f"Alarm {alarm_id} is not active (status {rows[0]['status']})")
    return json_response(shown)
