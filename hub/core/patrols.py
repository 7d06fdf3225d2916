"""Patrol inspections (巡检): periodic checklists per project, done by a person, with results.

A *template* is a checklist for a project with a period (`daily`, `weekly`, `monthly`, or an
`interval` in seconds) counted from its `start_at`. When a period comes due the hub generates
a *round* (an instance): the checklist as it is then, the assignee, and a due time (the
template's `allowed` time, by default the whole period). The assignee completes it with a
result per item (`ok` or failed, with a note); every failed item opens a work order linked to
the round, so a hazard found on a walk-through is tracked like one a detector reported.

Why it is built this way:

* Rounds are counted from `start_at` in the hub's time zone (a daily 09:00 round stays at
  09:00 across DST, a monthly round on the 31st falls on the 30th in April and back on the
  31st in May) instead of adding a period to the last round, which would drift.
* `next_due_at` is persisted and moved in the same transaction that inserts the round, and
  (template, scheduled_at) is unique: a restart never generates a round twice or loses one.
* A hub that was down for several periods generates only the latest missed round (the others
  cannot be walked any more); their absence shows in the statistics as fewer rounds.
* One task sleeps until the earliest `next_due_at` (at most `MAX_SLEEP`), woken early when a
  template changes; tests call `async_generate()` with an injected clock instead.

Events: `patrol_due` {patrol} when a round is generated, `patrol_completed` {patrol,
workorders}.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import voluptuous as vol

from .config import duration
from .context import Context
from .services import ServiceError
from .states import iso
from .statistics import zone_of
from .workorders import parse_time

_LOGGER = logging.getLogger(__name__)

EVENT_PATROL_DUE = "patrol_due"
EVENT_PATROL_COMPLETED = "patrol_completed"
PENDING = "pending"
COMPLETED = "completed"
PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "interval")
_APPROX = {"daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 30.436875 * 86400.0}
MAX_SLEEP = 60.0
MIN_SLEEP = 1.0

#: The manager's time source; tests replace it (or pass `clock=`) to make rounds come due.
CLOCK: Callable[[], float] = time.time


class PatrolNotFound(ServiceError):
    status = 404


class PatrolConflict(ServiceError):
    status = 409


class PatrolInvalid(ServiceError):
    status = 400


class PatrolStore(Protocol):
    """Implemented by hub.storage.patrol_store.SqlPatrolStore."""

    async def insert_template(self, row: dict[str, Any]) -> int: ...

    async def template(self, template_id: int) -> dict[str, Any] | None: ...

    async def templates(self, projects: Sequence[str] | None = None) -> list[dict[str, Any]]: ...

    async def update_template(self, template_id: int, changes: dict[str, Any]) -> None: ...

    async def due_templates(self, now: float) -> list[dict[str, Any]]: ...

    async def next_due(self) -> float | None: ...

    async def advance(self, template_id: int, expected_next: float, new_next: float,
                      instance: dict[str, Any]) -> int | None: ...

    async def instance(self, instance_id: int) -> dict[str, Any] | None: ...

    async def instances(self, q: Any) -> list[dict[str, Any]]: ...

    async def complete(self, instance_id: int, at: float, by: str | None,
                       results: list[dict[str, Any]], failed: int,
                       expected_assignee: str | None = None) -> bool: ...

    async def set_results(self, instance_id: int, results: list[dict[str, Any]]) -> None: ...

    async def assign(self, instance_id: int, assignee: str | None) -> bool: ...


def _iso(value: float | None) -> str | None:
    return iso(value) if value is not None else None


def occurrence(template: dict[str, Any], k: int, zone: Any) -> float:
    """The k-th round of a template (k = 0 is `start_at`), on the local calendar."""
    start = float(template["start_at"])
    period = template["period"]
    if period == "interval":
        return start + k * float(template["interval"])
    local = datetime.fromtimestamp(start, zone)
    if period == "daily":
        day = local.date() + timedelta(days=k)
    elif period == "weekly":
        day = local.date() + timedelta(days=7 * k)
    else:
        months = local.month - 1 + k
        year, month = local.year + months // 12, months % 12 + 1
        day = local.date().replace(year=year, month=month,
                                   day=min(local.day, calendar.monthrange(year, month)[1]))
    return datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=zone).timestamp()


def latest_index(template: dict[str, Any], now: float, zone: Any) -> int:
    """The largest k whose round starts at or before `now` (-1 before the first)."""
    start = float(template["start_at"])
    if now < start:
        return -1
    step = (float(template["interval"]) if template["period"] == "interval"
            else _APPROX[template["period"]])
    k = max(0, math.floor((now - start) / step))
    while k > 0 and occurrence(template, k, zone) > now:
        k -= 1
    while occurrence(template, k + 1, zone) <= now:
        k += 1
    return k


def template_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "project": row.get("project"),
        "items": row.get("items") or [], "period": row["period"],
        "interval": row.get("interval"), "allowed": row.get("allowed"),
        "assignee": row.get("assignee"), "enabled": bool(row.get("enabled")),
        "start_at": _iso(row["start_at"]), "next_due_at": _iso(row["next_due_at"]),
        "created_by": row.get("created_by"), "created_at": _iso(row["created_at"]),
    }


def instance_dict(row: dict[str, Any], now: float) -> dict[str, Any]:
    completed_at = row.get("completed_at")
    return {
        "id": row["id"], "template_id": row["template_id"], "name": row["name"],
        "project": row.get("project"), "items": row.get("items") or [],
        "assignee": row.get("assignee"), "status": row["status"],
        "scheduled_at": _iso(row["scheduled_at"]), "due_at": _iso(row["due_at"]),
        "overdue": row["status"] == PENDING and float(row["due_at"]) < now,
        "completed_at": _iso(completed_at), "completed_by": row.get("completed_by"),
        "late": completed_at is not None and float(completed_at) > float(row["due_at"]),
        "results": row.get("results"), "failed_count": int(row.get("failed_count") or 0),
    }


def _normalise_items(items: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in items:
        entry = {"name": item} if isinstance(item, str) else dict(item)
        name = str(entry["name"]).strip()
        if not name:
            raise PatrolInvalid("a checklist item needs a name")
        if name in seen:
            raise PatrolInvalid(f"checklist item {name!r} appears twice")
        seen.add(name)
        entry["name"] = name
        out.append(entry)
    if not out:
        raise PatrolInvalid("a patrol template needs at least one checklist item")
    return out


class PatrolManager:
    """See the module docstring. `hub.patrols` once the hub started."""

    def __init__(self, hub: Any, store: PatrolStore, workorders: Any,
                 clock: Callable[[], float] | None = None) -> None:
        self.hub = hub
        self.store = store
        self.workorders = workorders
        self.clock: Callable[[], float] = clock or (lambda: CLOCK())
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.errors = 0

    @property
    def zone(self) -> Any:
        return zone_of(getattr(self.hub, "time_zone", None))

    async def async_start(self) -> None:
        await self.async_generate()
        self._task = self.hub.create_task(self._loop(), "patrol scheduler")

    async def async_stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            # A generation in progress holds the lock and may be inside a write transaction: let
            # it commit first. Cancelled mid-transaction, its connection kept SQLite's write
            # lock past the hub's stop, and the next start failed with "database is locked".
            async with self._lock:
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                next_due = await self.store.next_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again later
                next_due = None
            # At least MIN_SLEEP: a template that cannot be generated must not spin the loop.
            delay = MAX_SLEEP if next_due is None else min(MAX_SLEEP,
                                                          max(MIN_SLEEP, next_due - self.clock()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            try:
                await self.async_generate()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the database may come back
                self.errors += 1
                if self.errors % 10 == 1:
                    _LOGGER.error("Patrol generation failed (%s: %s)", type(err).__name__, err)

    # -- templates --------------------------------------------------------------------------
    async def async_create_template(self, data: dict[str, Any],
                                    context: Context | None = None) -> dict[str, Any]:
        context = context or Context()
        now = self.clock()
        period = data["period"]
        interval = data.get("interval")
        if period == "interval" and not interval:
            raise PatrolInvalid("period interval needs `interval` (e.g. 8h)")
        if period != "interval" and interval:
            raise PatrolInvalid(f"`interval` is only for period interval, not {period}")
        start = data.get("start_at", now)
        row = {
            "name": data["name"], "project": data.get("project"),
            "items": _normalise_items(data["items"]), "period": period,
            "interval": float(interval) if interval else None,
            "allowed": data.get("allowed"), "assignee": data.get("assignee"),
            "enabled": data.get("enabled", True), "start_at": start, "next_due_at": start,
            "created_by": context.user_id, "created_at": now,
        }
        row["id"] = await self.store.insert_template(row)
        await self.async_generate()
        self._wake.set()
        fresh = await self.store.template(row["id"])
        return template_dict(fresh or row)

    async def async_update_template(self, template_id: int, changes: dict[str, Any]
                                    ) -> dict[str, Any]:
        row = await self.store.template(template_id)
        if row is None:
            raise PatrolNotFound(f"Patrol template {template_id} not found")
        if "items" in changes:
            changes["items"] = _normalise_items(changes["items"])
        await self.store.update_template(template_id, changes)
        self._wake.set()
        fresh = await self.store.template(template_id)
        assert fresh is not None
        return template_dict(fresh)

    # -- generating rounds ------------------------------------------------------------------
    async def async_generate(self) -> list[dict[str, Any]]:
        """Generate every round that has come due; returns the new rounds."""
        async with self._lock:
            now = self.clock()
            zone = self.zone
            made = []
            for template in await self.store.due_templates(now):
                k = latest_index(template, now, zone)
                if k < 0:
                    continue
                scheduled = occurrence(template, k, zone)
                following = occurrence(template, k + 1, zone)
                allowed = template.get("allowed") or (following - scheduled)
                instance = {
                    "template_id": template["id"], "name": template["name"],
                    "project": template.get("project"), "items": template["items"],
                    "assignee": template.get("assignee"), "status": PENDING,
                    "scheduled_at": scheduled, "due_at": scheduled + float(allowed),
                    "failed_count": 0,
                }
                instance_id = await self.store.advance(
                    template["id"], float(template["next_due_at"]), following, instance)
                if instance_id is None:
                    continue
                instance["id"] = instance_id
                shown = instance_dict(instance, now)
                made.append(shown)
                # `project` at the top: websocket subscribers see the events of their scope
                self.hub.bus.async_fire(EVENT_PATROL_DUE,
                                        {"patrol": shown, "project": shown["project"]})
            return made

    # -- rounds -----------------------------------------------------------------------------
    async def async_get(self, instance_id: int) -> dict[str, Any]:
        row = await self.store.instance(instance_id)
        if row is None:
            raise PatrolNotFound(f"Patrol round {instance_id} not found")
        return row

    async def async_assign(self, instance_id: int, assignee: str | None) -> dict[str, Any]:
        row = await self.async_get(instance_id)
        if not await self.store.assign(instance_id, assignee):
            raise PatrolConflict(f"patrol round {instance_id} is {row['status']}")
        row["assignee"] = assignee
        return instance_dict(row, self.clock())

    async def async_complete(self, instance_id: int, results: list[dict[str, Any]],
                             context: Context | None = None,
                             expected_assignee: str | None = None) -> dict[str, Any]:
        """Record the results; each failed item opens a work order linked to the round.

        `expected_assignee`: the caller may complete the round only as its assignee, so the
        completion is conditional on the round still being assigned to them (a reassignment
        between the caller's check and this write makes it a 409, not a completion by the
        wrong person).
        """
        context = context or Context()
        row = await self.async_get(instance_id)
        if row["status"] != PENDING:
            raise PatrolConflict(f"patrol round {instance_id} is already {row['status']}")
        items = row.get("items") or []
        by_name = {item["name"]: item for item in items}
        answered: dict[str, dict[str, Any]] = {}
        for result in results:
            key = result["item"]
            if isinstance(key, int):
                if not 0 <= key < len(items):
                    raise PatrolInvalid(f"no checklist item number {key} (0–{len(items) - 1})")
                key = items[key]["name"]
            if key not in by_name:
                raise PatrolInvalid(f"unknown checklist item {key!r}")
            if key in answered:
                raise PatrolInvalid(f"checklist item {key!r} answered twice")
            answered[key] = {"item": key, "ok": bool(result["ok"]),
                             "note": result.get("note")}
        missing = [item["name"] for item in items if item["name"] not in answered]
        if missing:
            raise PatrolInvalid(f"no result for: {', '.join(missing)}")
        ordered = [answered[item["name"]] for item in items]
        failed = [entry for entry in ordered if not entry["ok"]]
        now = self.clock()
        if not await self.store.complete(instance_id, now, context.user_id, ordered,
                                         len(failed), expected_assignee=expected_assignee):
            latest = await self.async_get(instance_id)
            if latest["status"] == PENDING:
                raise PatrolConflict(f"patrol round {instance_id} was reassigned meanwhile "
                                     f"(now {latest.get('assignee') or 'nobody'})")
            raise PatrolConflict(f"patrol round {instance_id} was completed meanwhile")
        opened = []
        for entry in failed:
            item = by_name[entry["item"]]
            device_id = item.get("device_id")
            if device_id and self.hub.devices.get(device_id) is None:
                device_id = None
            order, _created = await self.workorders.async_create(
                title=f"巡检不合格：{entry['item']}（{row['name']}）",
                description=entry.get("note"),
                device_id=device_id, project=row.get("project"), source="patrol",
                patrol_id=instance_id, patrol_item=entry["item"], context=context,
            )
            entry["workorder_id"] = order["id"]
            opened.append(order)
        if opened:
            await self.store.set_results(instance_id, ordered)
        row.update(status=COMPLETED, completed_at=now, completed_by=context.user_id,
                   results=ordered, failed_count=len(failed))
        shown = instance_dict(row, now)
        self.hub.bus.async_fire(EVENT_PATROL_COMPLETED,
                                {"patrol": shown, "workorders": [o["id"] for o in opened],
                                 "project": shown["project"]},
                                context=context)
        return {**shown, "workorders": opened}


_NAME = vol.All(str, vol.Length(min=1, max=255))
#: A round's interval or time allowed: at most a (leap) year; beyond that it is a mistake, and
#: a due time computed from it must stay a date that can be shown.
MAX_SPAN = 366 * 86400.0
ITEM_SCHEMA = vol.Any(
    _NAME,
    vol.Schema({vol.Required("name"): _NAME, vol.Optional("device_id"): _NAME,
                vol.Optional("description"): vol.All(str, vol.Length(max=2000))}),
)
TEMPLATE_FIELDS: dict[Any, Any] = {
    vol.Required("name"): _NAME,
    vol.Optional("project"): _NAME,
    vol.Required("items", description="checklist: names, or {name, device_id, description}"):
        vol.All([ITEM_SCHEMA], vol.Length(min=1, max=500)),
    vol.Required("period"): vol.In(PERIODS),
    vol.Optional("interval", description="for period interval: e.g. 8h"): vol.All(
        duration, vol.Range(min=60, max=MAX_SPAN)),
    vol.Optional("start_at", description="first round (ISO 8601 or unix seconds); default now"):
        parse_time,
    vol.Optional("allowed", description="time to complete a round; default the period"):
        vol.All(duration, vol.Range(min=60, max=MAX_SPAN)),
    vol.Optional("assignee"): vol.Any(None, _NAME),
    vol.Optional("enabled", default=True): bool,
}
RESULT_SCHEMA = vol.Schema({
    vol.Required("item", description="checklist item name, or its number from 0"):
        vol.Any(_NAME, vol.All(int, vol.Range(min=0))),
    vol.Required("ok"): bool,
    vol.Optional("note"): vol.Any(None, vol.All(str, vol.Length(max=2000))),
})
