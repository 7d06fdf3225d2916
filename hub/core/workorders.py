"""Work orders (工单): a hazard or fault becomes a job for a maintainer, tracked to its end.

Lifecycle (docs/hazards.md):

    created ──▶ dispatched ──▶ accepted ──▶ repaired ──▶ verified ──▶ closed
    accepted ──▶ dispatched (handed back)     repaired ──▶ accepted (rework)
    repaired ──▶ closed                       created | dispatched | accepted ──▶ closed (cancel)

Why it is built this way:

* The allowed transitions are one table (`TRANSITIONS`); anything else is refused with the
  reason ("cannot go from created to repaired"), so the web UI, the API and automations all
  meet the same rules.
* Giving an order to someone *is* dispatching it: an assignee on a new order dispatches it, a
  new assignee on an accepted order sends it back to `dispatched` (the new person has to
  accept). Closing an order nobody repaired is a cancellation and needs a note saying why.
* Every change is a history row (who, when, from, to, note) written in the same transaction
  as the change itself, and the change is conditional on the status it was decided from, so
  two people acting at once cannot both win. The row also keeps per-transition timestamps
  because statistics (mean time to repair) aggregate over them.
* An alarm has at most one open work order (a partial unique index): `workorder.create` from
  an automation that fires on every repeat returns the existing order instead of piling up.
* An automation on `alarm_raised` names its alarm by `alarm_ref` (`{{ trigger.alarm.ref }}`):
  during a database stall the alarm is announced before its row exists (`id` null), and the
  order must still be opened, for the row it gets. The service waits for that row
  (`AlarmEngine.record_id`); two workers that both announced it name the same row, and the
  unique index keeps it to one order.
* Nothing happens automatically when an alarm is handled unless `workorders.on_alarm_handled`
  says `create`; the other way round, repairing an order marks its alarm handled
  (`workorders.handle_alarm_on_repair`, default on), because that is what repairing means.

* Who may do what is decided outside (docs/security.md): the API and the service permission
  check both ask `assignee_refusal` what a technician below project_admin may do to an
  order given to them; everything else needs project_admin or above within the project.

Bus events: `workorder_created` {workorder, project}, `workorder_updated` {workorder,
actions, from_status, to_status, note, user, project}; `project` at the top level so the
websocket shows each subscriber the orders of its scope only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import voluptuous as vol

from .config import duration, row_id
from .context import Context
from .events import Event
from .hazard_config import WORKORDERS_SCHEMA
from .photos import PhotoStore, SavedPhoto
from .services import ServiceError
from .states import iso

_LOGGER = logging.getLogger(__name__)

EVENT_WORKORDER_CREATED = "workorder_created"
EVENT_WORKORDER_UPDATED = "workorder_updated"

CREATED = "created"
DISPATCHED = "dispatched"
ACCEPTED = "accepted"
REPAIRED = "repaired"
VERIFIED = "verified"
CLOSED = "closed"
STATUSES: tuple[str, ...] = (CREATED, DISPATCHED, ACCEPTED, REPAIRED, VERIFIED, CLOSED)
#: waiting for someone: these can be overdue
WAITING: tuple[str, ...] = (CREATED, DISPATCHED, ACCEPTED)

TRANSITIONS: dict[str, tuple[str, ...]] = {
    CREATED: (DISPATCHED, CLOSED),
    DISPATCHED: (ACCEPTED, CLOSED),
    ACCEPTED: (REPAIRED, DISPATCHED, CLOSED),  # dispatched: handed back (退回)
    REPAIRED: (VERIFIED, ACCEPTED, CLOSED),  # accepted: verification failed, rework (返工)
    VERIFIED: (CLOSED,),
    CLOSED: (),
}

#: Words users see for a status (zh-CN, en).
STATUS_WORDS: dict[str, tuple[str, str]] = {
    CREATED: ("待派单", "Created"),
    DISPATCHED: ("已派单", "Dispatched"),
    ACCEPTED: ("已接单", "Accepted"),
    REPAIRED: ("已维修", "Repaired"),
    VERIFIED: ("已验收", "Verified"),
    CLOSED: ("已关闭", "Closed"),
}

PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")
SOURCES: tuple[str, ...] = ("manual", "alarm", "automation", "patrol")
#: What an order's assignee may do to it without being a supervisor (project_admin or above,
#: docs/security.md): take it, report it repaired, or hand it back; comments and photos too.
#: Verifying and closing are the supervisor's, because the person who did the work is not
#: the one to sign it off; so are reassigning and moving the due time.
ASSIGNEE_MOVES: frozenset[tuple[str, str]] = frozenset(
    {(DISPATCHED, ACCEPTED), (ACCEPTED, REPAIRED), (ACCEPTED, DISPATCHED)}
)
RESOLUTION_REPAIRED = "repaired"
RESOLUTION_CANCELLED = "cancelled"

#: The manager's time source; tests replace it (or pass `clock=`) to make orders overdue.
CLOCK: Callable[[], float] = time.time

_UNSET: Any = object()


class DuplicateOpenWorkOrder(Exception):
    """The alarm already has an open work order (another writer created it first)."""


class WorkOrderNotFound(ServiceError):
    status = 404


class WorkOrderConflict(ServiceError):
    """The request does not fit the order's current state (an illegal transition, ...)."""

    status = 409


class WorkOrderInvalid(ServiceError):
    status = 400


#: Times outside 1970..3000 are typing mistakes (or fuzzing), and past year 9999 they cannot
#: even be shown: refused as invalid rather than crashing whatever formats them later.
MAX_TIME = 32503680000.0  # 3000-01-01T00:00:00Z


def _bounded_time(value: float) -> float:
    if not 0.0 <= value <= MAX_TIME:  # also refuses NaN
        raise vol.Invalid("expected a time between 1970 and 3000")
    return value


def parse_time(value: Any) -> float:
    """ISO 8601 (a naive time is UTC) or unix seconds -> unix seconds (1970..3000)."""
    if isinstance(value, bool):
        raise vol.Invalid("expected an ISO 8601 time or unix seconds")
    if isinstance(value, int | float):
        return _bounded_time(float(value))
    text = str(value).strip()
    try:
        return _bounded_time(float(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise vol.Invalid(
            f"expected an ISO 8601 time (2025-01-31T08:00:00+08:00) or unix seconds, got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _bounded_time(parsed.timestamp())


def assignee_refusal(row: dict[str, Any], user: str | None, *, status: str | None = None,
                     assignee: Any = _UNSET, due_at: Any = _UNSET) -> str | None:
    """Why `user`, acting below project_admin, may not make this change; None if they may.

    One rule for the API (PATCH, comments, photos) and the `workorder.update` service, so a
    technician gets the same answer whichever way they ask. A transition the lifecycle itself
    refuses is let through: the 409 from `async_update` says more than a 403 would.
    """
    label = f"Work order {row['id']}"
    holder = row.get("assignee")
    if not user or holder != user:
        who = f"assigned to {holder}" if holder else "not assigned to anyone"
        return f"{label} is {who}: only its assignee or a project_admin or above may change it"
    if assignee is not _UNSET and (assignee or None) != holder:
        return f"{label}: only a project_admin or above may reassign it"
    if due_at is not _UNSET and due_at != row.get("due_at"):
        return f"{label}: only a project_admin or above may move its due time"
    current = row["status"]
    if (status is not None and status != current and status in TRANSITIONS.get(current, ())
            and (current, status) not in ASSIGNEE_MOVES):
        return (f"{label}: as its assignee you may accept, repair or hand it back; "
                f"{current} → {status} needs a project_admin or above")
    return None


def _iso(value: float | None) -> str | None:
    return iso(value) if value is not None else None


def is_overdue(row: dict[str, Any], now: float) -> bool:
    due = row.get("due_at")
    return due is not None and row.get("status") in WAITING and float(due) < now


def workorder_dict(row: dict[str, Any], now: float) -> dict[str, Any]:
    """A work order as the API and bus events show it (times ISO 8601 UTC)."""
    status = row["status"]
    return {
        "id": row["id"],
        "title": row["title"],
        "description": row.get("description"),
        "alarm_id": row.get("alarm_id"),
        "patrol_id": row.get("patrol_id"),
        "patrol_item": row.get("patrol_item"),
        "source": row.get("source"),
        "device_id": row.get("device_id"),
        "project": row.get("project"),
        "assignee": row.get("assignee"),
        "priority": row.get("priority"),
        "status": status,
        "status_text": dict(zip(("zh-CN", "en"), STATUS_WORDS.get(status, (status, status)),
                                strict=True)),
        "resolution": row.get("resolution"),
        "overdue": is_overdue(row, now),
        "due_at": _iso(row.get("due_at")),
        "created_by": row.get("created_by"),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row.get("updated_at")),
        "dispatched_at": _iso(row.get("dispatched_at")),
        "accepted_at": _iso(row.get("accepted_at")),
        "repaired_at": _iso(row.get("repaired_at")),
        "verified_at": _iso(row.get("verified_at")),
        "closed_at": _iso(row.get("closed_at")),
        "allowed": list(TRANSITIONS.get(status, ())),
    }


def event_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A history entry (transition, assignment, due change, comment, photo)."""
    return {
        "id": row.get("id"),
        "at": _iso(row["at"]),
        "user": row.get("actor"),
        "action": row["action"],
        "from_status": row.get("from_status"),
        "to_status": row.get("to_status"),
        "note": row.get("note"),
        "data": row.get("data"),
    }


class WorkOrderStore(Protocol):
    """Persistence (implemented by hub.storage.workorder_store.SqlWorkOrderStore)."""

    async def insert(self, row: dict[str, Any], events: Sequence[dict[str, Any]]) -> int: ...

    async def get(self, workorder_id: int) -> dict[str, Any] | None: ...

    async def open_for_alarm(self, alarm_id: int) -> dict[str, Any] | None: ...

    async def any_for_alarm(self, alarm_id: int) -> bool: ...

    async def change(self, workorder_id: int, expected_status: str, changes: dict[str, Any],
                     events: Sequence[dict[str, Any]],
                     expected_assignee: str | None = None) -> bool: ...

    async def add_event(self, workorder_id: int, event: dict[str, Any], at: float) -> None: ...

    async def history(self, workorder_id: int) -> list[dict[str, Any]]: ...

    async def query(self, q: Any) -> list[dict[str, Any]]: ...

    async def add_photo(self, row: dict[str, Any], event: dict[str, Any]) -> int: ...

    async def photos(self, workorder_id: int) -> list[dict[str, Any]]: ...

    async def photo(self, workorder_id: int, photo_id: int) -> dict[str, Any] | None: ...

    async def photo_count(self, workorder_id: int) -> int: ...


def _event(action: str, at: float, user: str | None, *, from_status: str | None = None,
           to_status: str | None = None, note: str | None = None,
           data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"action": action, "at": at, "actor": user, "from_status": from_status,
            "to_status": to_status, "note": note, "data": data}


class WorkOrderManager:
    """See the module docstring. `hub.workorders` once the hub started."""

    def __init__(self, hub: Any, config: dict[str, Any] | None, store: WorkOrderStore,
                 clock: Callable[[], float] | None = None) -> None:
        conf = WORKORDERS_SCHEMA(dict(config or {}))
        self.hub = hub
        self.store = store
        self.clock: Callable[[], float] = clock or (lambda: CLOCK())
        self.default_due: float = conf["default_due"]
        self.max_photos: int = conf["max_photos"]
        self.on_alarm_handled: str = conf["on_alarm_handled"]
        self.handle_alarm_on_repair: bool = conf["handle_alarm_on_repair"]
        root = Path(getattr(hub, "config_dir", ".")) / "uploads" / "workorders"
        self.photos = PhotoStore(root, conf["max_photo_size"])
        self._unsubs: list[Callable[[], None]] = []

    # -- lifecycle --------------------------------------------------------------------------
    async def async_start(self) -> None:
        if self.on_alarm_handled == "create":
            self._unsubs.append(self.hub.bus.listen("alarm_handled", self._on_alarm_handled))
        self._register_services()

    async def async_stop(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []
        for name in ("create", "update"):
            self.hub.services.remove("workorder", name)

    def shown(self, row: dict[str, Any]) -> dict[str, Any]:
        return workorder_dict(row, self.clock())

    # -- reading ----------------------------------------------------------------------------
    async def async_get(self, workorder_id: int) -> dict[str, Any]:
        row = await self.store.get(workorder_id)
        if row is None:
            raise WorkOrderNotFound(f"Work order {workorder_id} not found")
        return row

    async def async_detail(self, workorder_id: int) -> dict[str, Any]:
        """The order with its history and photos (the detail page)."""
        row = await self.async_get(workorder_id)
        shown = self.shown(row)
        shown["history"] = [event_dict(e) for e in await self.store.history(workorder_id)]
        shown["comments"] = [e for e in shown["history"] if e["action"] == "comment"]
        shown["photos"] = [photo_dict(p) for p in await self.store.photos(workorder_id)]
        return shown

    # -- creating ---------------------------------------------------------------------------
    async def async_create(
        self,
        *,
        title: str | None = None,
        description: str | None = None,
        alarm_id: int | None = None,
        alarm_ref: str | None = None,
        device_id: str | None = None,
        project: str | None = None,
        assignee: str | None = None,
        priority: str = "normal",
        due_at: float | None = None,
        due_in: float | None = None,
        source: str = "manual",
        patrol_id: int | None = None,
        patrol_item: str | None = None,
        context: Context | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Open a work order; (order, created). An alarm's open order is returned, not doubled."""
        context = context or Context()
        user = context.user_id
        if alarm_id is None and alarm_ref:
            alarm_id = await self._alarm_id_of(alarm_ref)
        now = self.clock()
        if alarm_id is not None:
            existing = await self.store.open_for_alarm(alarm_id)
            if existing is not None:
                return self.shown(existing), False
            alarm = await self._alarm(alarm_id)
            device_id = device_id or alarm.get("device_id")
            project = project or alarm.get("project")
            title = title or alarm.get("message")
            if description is None:
                where = " ".join(str(alarm[k]) for k in ("device_name", "area", "location")
                                 if alarm.get(k))
                description = f"{alarm.get('message')} — {where}" if where else None
        elif device_id is not None:
            device = self.hub.devices.get(device_id)
            if device is None:
                raise WorkOrderNotFound(f"Device {device_id} not found")
            project = project or device.project
        if not title:
            raise WorkOrderInvalid("a title is required (or an alarm_id to take it from)")
        if priority not in PRIORITIES:
            raise WorkOrderInvalid(f"unknown priority {priority!r} (one of: {', '.join(PRIORITIES)})")
        if due_at is None:
            wait = due_in if due_in is not None else self.default_due
            due_at = now + wait if wait and wait > 0 else None
        elif due_at <= now:
            raise WorkOrderInvalid("the due time is in the past")
        row: dict[str, Any] = {
            "title": title[:255], "description": description, "alarm_id": alarm_id,
            "patrol_id": patrol_id, "patrol_item": patrol_item, "source": source,
            "device_id": device_id, "project": project, "assignee": assignee or None,
            "priority": priority, "status": CREATED, "due_at": due_at, "created_by": user,
            "created_at": now, "updated_at": now, "context_id": context.id,
        }
        events = [_event("created", now, user, to_status=CREATED,
                         data={"source": source, "alarm_id": alarm_id, "patrol_id": patrol_id})]
        if assignee:
            row.update(status=DISPATCHED, dispatched_at=now)
            events.append(_event("transition", now, user, from_status=CREATED,
                                 to_status=DISPATCHED, data={"assignee": assignee}))
        try:
            row["id"] = await self.store.insert(row, events)
        except DuplicateOpenWorkOrder:
            existing = await self.store.open_for_alarm(int(alarm_id or 0))
            if existing is None:
                raise
            return self.shown(existing), False
        shown = self.shown(row)
        # `project` at the top: websocket subscribers see the events of their scope only
        self.hub.bus.async_fire(EVENT_WORKORDER_CREATED,
                                {"workorder": shown, "project": shown["project"]},
                                context=context)
        _LOGGER.info("Work order %s opened (%s) by %s", row["id"], source, user or "-")
        return shown, True

    async def _alarm_id_of(self, ref: str) -> int:
        """The row id of the alarm announced as `ref`, waiting while it is not written yet."""
        engine = getattr(self.hub, "alarms", None)
        if engine is None:
            raise WorkOrderNotFound(f"Alarm {ref} not found")
        try:
            return await engine.record_id(ref)
        except KeyError:
            raise WorkOrderNotFound(f"Alarm {ref} not found (not raised by this hub, or too "
                                    "long ago: name it by alarm_id)") from None

    async def _alarm(self, alarm_id: int) -> dict[str, Any]:
        engine = getattr(self.hub, "alarms", None)
        store = getattr(engine, "store", None)
        rows = await store.get_many([alarm_id]) if store is not None else []
        if not rows:
            raise WorkOrderNotFound(f"Alarm {alarm_id} not found")
        return rows[0]

    # -- changing ---------------------------------------------------------------------------
    async def async_update(
        self,
        workorder_id: int,
        *,
        status: str | None = None,
        assignee: Any = _UNSET,
        note: str | None = None,
        due_at: Any = _UNSET,
        context: Context | None = None,
        expected_assignee: str | None = None,
    ) -> dict[str, Any]:
        """Transition, reassign, move the due time and/or comment; 409 with the reason if not.

        `expected_assignee`: the caller acts as the order's assignee (checked against
        `assignee_refusal` beforehand), so the change only lands while the order is still
        theirs; given to someone else in between, it is a 409.
        """
        context = context or Context()
        user = context.user_id
        row = await self.async_get(workorder_id)
        if expected_assignee is not None and row.get("assignee") != expected_assignee:
            raise WorkOrderConflict(
                f"work order {workorder_id} is assigned to {row.get('assignee') or 'nobody'} "
                "now; reload and try again")
        now = self.clock()
        current = row["status"]
        changes: dict[str, Any] = {}
        events: list[dict[str, Any]] = []
        actions: list[str] = []
        if status is not None and status not in STATUSES:
            raise WorkOrderInvalid(f"unknown status {status!r} (one of: {', '.join(STATUSES)})")

        if assignee is not _UNSET and (assignee or None) != row.get("assignee"):
            assignee = assignee or None
            if current in (REPAIRED, VERIFIED, CLOSED):
                raise WorkOrderConflict(f"cannot reassign a work order that is {current}")
            if assignee is None and current != CREATED:
                raise WorkOrderConflict(f"cannot remove the assignee of a {current} work order")
            changes["assignee"] = assignee
            events.append(_event("assigned", now, user, note=None,
                                 data={"from": row.get("assignee"), "to": assignee}))
            actions.append("assigned")
            if status is None and assignee is not None:
                if current in (CREATED, ACCEPTED):
                    status = DISPATCHED  # giving it to someone is dispatching it
                elif current == DISPATCHED:
                    changes["dispatched_at"] = now

        if due_at is not _UNSET and due_at != row.get("due_at"):
            if current == CLOSED:
                raise WorkOrderConflict("cannot move the due time of a closed work order")
            changes["due_at"] = due_at
            events.append(_event("due", now, user,
                                 data={"from": _iso(row.get("due_at")), "to": _iso(due_at)}))
            actions.append("due")

        transition = status is not None and status != current
        if transition:
            assert status is not None
            allowed = TRANSITIONS.get(current, ())
            if status not in allowed:
                options = ", ".join(allowed) or "nothing: it is final"
                raise WorkOrderConflict(
                    f"cannot go from {current} to {status} (from {current}: {options})")
            if status == DISPATCHED and not changes.get("assignee", row.get("assignee")):
                raise WorkOrderConflict(
                    f"cannot dispatch work order {workorder_id}: it has no assignee")
            repaired = row.get("repaired_at") is not None or current in (REPAIRED, VERIFIED)
            if status == CLOSED and not repaired and not (note and note.strip()):
                raise WorkOrderInvalid(
                    "closing a work order that was not repaired cancels it: a note (the reason) "
                    "is required")
            changes[f"{status}_at"] = now
            if status == ACCEPTED and current == REPAIRED:  # rework: the repair did not hold
                changes.update(repaired_at=None, verified_at=None)
            if status == CLOSED:
                changes["resolution"] = RESOLUTION_REPAIRED if repaired else RESOLUTION_CANCELLED
            changes["status"] = status
            events.append(_event("transition", now, user, from_status=current,
                                 to_status=status, note=note))
            actions.insert(0, "transition")
        elif note:
            events.append(_event("comment", now, user, note=note))
            actions.append("comment")

        if not events:
            return self.shown(row)
        changes["updated_at"] = now
        if not await self.store.change(workorder_id, current, changes, events,
                                       expected_assignee=expected_assignee):
            latest = await self.async_get(workorder_id)
            raise WorkOrderConflict(
                f"work order {workorder_id} changed meanwhile (now {latest['status']}); "
                "reload and try again")
        row.update(changes)
        shown = self.shown(row)
        self.hub.bus.async_fire(
            EVENT_WORKORDER_UPDATED,
            {"workorder": shown, "actions": actions, "from_status": current,
             "to_status": row["status"], "note": note, "user": user,
             "project": row.get("project")},
            context=context,
        )
        if transition and status == REPAIRED and row.get("alarm_id") is not None:
            await self._handle_alarm(row, context)
        return shown

    async def _handle_alarm(self, row: dict[str, Any], context: Context) -> None:
        engine = getattr(self.hub, "alarms", None)
        if not self.handle_alarm_on_repair or engine is None:
            return
        try:
            await engine.async_handle([int(row["alarm_id"])],
                                      f"工单 #{row['id']} 已维修 / work order #{row['id']} repaired",
                                      context.child())
        except Exception:  # the repair is recorded; the alarm can be handled by hand
            _LOGGER.exception("Work order %s: marking alarm %s handled failed", row["id"],
                              row["alarm_id"])

    async def async_comment(self, workorder_id: int, text: str,
                            context: Context | None = None) -> dict[str, Any]:
        context = context or Context()
        row = await self.async_get(workorder_id)
        now = self.clock()
        entry = _event("comment", now, context.user_id, note=text)
        await self.store.add_event(workorder_id, entry, now)
        row["updated_at"] = now
        self.hub.bus.async_fire(
            EVENT_WORKORDER_UPDATED,
            {"workorder": self.shown(row), "actions": ["comment"], "from_status": row["status"],
             "to_status": row["status"], "note": text, "user": context.user_id,
             "project": row.get("project")},
            context=context,
        )
        return event_dict(entry)

    async def async_add_photo(self, workorder_id: int, saved: SavedPhoto,
                              original_name: str | None,
                              context: Context | None = None) -> dict[str, Any]:
        """Record a photo already stored by `self.photos`; removes the file if that fails."""
        context = context or Context()
        now = self.clock()
        row = {
            "workorder_id": workorder_id, "file_name": saved.file_name,
            "original_name": (original_name or "")[:255] or None,
            "content_type": saved.content_type, "size": saved.size, "sha256": saved.sha256,
            "uploaded_by": context.user_id, "uploaded_at": now,
        }
        entry = _event("photo", now, context.user_id,
                       data={"content_type": saved.content_type, "size": saved.size})
        try:
            row["id"] = await self.store.add_photo(row, entry)
        except BaseException:
            await self.photos.remove(workorder_id, saved.file_name)
            raise
        order = await self.async_get(workorder_id)
        self.hub.bus.async_fire(
            EVENT_WORKORDER_UPDATED,
            {"workorder": self.shown(order), "actions": ["photo"], "from_status": order["status"],
             "to_status": order["status"], "note": None, "user": context.user_id,
             "project": order.get("project")},
            context=context,
        )
        return photo_dict(row)

    async def check_photo_room(self, workorder_id: int) -> None:
        """Refuse an upload early: unknown order (404), closed (409), or too many photos."""
        row = await self.async_get(workorder_id)
        if row["status"] == CLOSED:
            raise WorkOrderConflict(f"work order {workorder_id} is closed")
        if await self.store.photo_count(workorder_id) >= self.max_photos:
            raise WorkOrderConflict(
                f"work order {workorder_id} has {self.max_photos} photos already "
                "(workorders.max_photos)")

    # -- alarms handled -> work orders (only when configured) -------------------------------
    async def _on_alarm_handled(self, event: Event) -> None:
        alarm_id = event.data.get("id")
        if alarm_id is None or event.data.get("kind") == "event":
            return
        if await self.store.any_for_alarm(int(alarm_id)):
            return
        await self.async_create(alarm_id=int(alarm_id), source="alarm",
                                context=event.context.child())

    # -- services ---------------------------------------------------------------------------
    def _register_services(self) -> None:
        services = self.hub.services

        async def create(call: Any) -> dict[str, Any]:
            data = call.data
            shown, created = await self.async_create(
                title=data.get("title"), description=data.get("description"),
                alarm_id=data.get("alarm_id"), alarm_ref=data.get("alarm_ref"),
                device_id=data.get("device_id"),
                project=data.get("project"), assignee=data.get("assignee"),
                priority=data.get("priority", "normal"), due_at=data.get("due_at"),
                due_in=data.get("due"), source=data.get("source", "automation"),
                context=call.context,
            )
            return {**shown, "created": created}

        async def update_(call: Any) -> dict[str, Any]:
            data = call.data
            return await self.async_update(
                data["id"], status=data.get("status"),
                assignee=data.get("assignee", _UNSET),
                note=data.get("note"),
                due_at=data.get("due_at", _UNSET),
                context=call.context,
            )

        services.register("workorder", "create", create, schema=CREATE_SERVICE_SCHEMA,
                          supports_response=True,
                          description="Open a work order (工单) for an alarm or a device; an "
                                      "alarm's open order is returned instead of a second one")
        services.register("workorder", "update", update_, schema=UPDATE_SERVICE_SCHEMA,
                          supports_response=True,
                          description="Move a work order on (dispatch, accept, repair, verify, "
                                      "close), reassign it, move its due time or comment")


def photo_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "workorder_id": row["workorder_id"],
        "content_type": row["content_type"],
        "size": row["size"],
        "sha256": row["sha256"],
        "original_name": row.get("original_name"),
        "uploaded_by": row.get("uploaded_by"),
        "uploaded_at": _iso(row["uploaded_at"]),
        "url": f"/api/workorders/{row['workorder_id']}/photos/{row['id']}",
    }


def _one_target(data: dict[str, Any]) -> dict[str, Any]:
    named = [key for key in ("alarm_id", "alarm_ref", "device_id") if key in data]
    if len(named) > 1:
        raise vol.Invalid(f"give one of alarm_id, alarm_ref or device_id, not {' and '.join(named)}")
    if not named and not data.get("title"):
        raise vol.Invalid("give alarm_id, alarm_ref, device_id or at least a title")
    return data


_TEXT = vol.All(str, vol.Length(min=1, max=255))
CREATE_FIELDS: dict[Any, Any] = {
    vol.Optional("alarm_id"): row_id,
    vol.Optional("device_id"): _TEXT,
    vol.Optional("title"): _TEXT,
    vol.Optional("description"): vol.All(str, vol.Length(max=5000)),
    vol.Optional("project"): _TEXT,
    vol.Optional("assignee"): vol.Any(None, _TEXT),
    vol.Optional("priority", default="normal"): vol.In(PRIORITIES),
    vol.Optional("due", description="time allowed, e.g. 4h (default workorders.default_due)"):
        duration,
    vol.Optional("due_at", description="ISO 8601 or unix seconds"): parse_time,
}
CREATE_SERVICE_SCHEMA = vol.All(
    vol.Schema({**CREATE_FIELDS,
                # an automation's `{{ trigger.alarm.ref }}`: its alarm, also one announced
                # during a database stall before it had an id (waits for the row)
                vol.Optional("alarm_ref"): vol.All(str, vol.Length(min=1, max=64)),
                vol.Optional("source", default="automation"): vol.In(SOURCES)}),
    _one_target,
)
UPDATE_FIELDS: dict[Any, Any] = {
    vol.Optional("status"): vol.In(STATUSES),
    vol.Optional("assignee"): vol.Any(None, _TEXT),
    vol.Optional("note"): vol.All(str, vol.Length(max=5000)),
    vol.Optional("due_at", description="ISO 8601 or unix seconds; null: no due time"):
        vol.Any(None, parse_time),
}
UPDATE_SERVICE_SCHEMA = vol.Schema(
    {vol.Required("id"): row_id, **UPDATE_FIELDS})
