"""The alarm engine: every alarm, fault and event becomes one persisted record.

Two inputs feed it:

* `device_condition` events (hub/core/conditions.py) that device plugins fire on transitions:
  the detector's own alarm and fault bits, communication loss, momentary events;
* hub-side thresholds on numeric sensor readings (`state_changed`), per device, defaulting to
  the GB figures (residual current 300 mA, cable temperature 80 °C, 264/187 V), with a delay-on
  and a hysteresis so a value flapping around a setpoint makes one alarm, not a storm.

The model is ThingsBoard's, with the two things it gets wrong fixed: one active record per
(device, type), repeats update it (count, last_seen_at) instead of adding rows, also under
concurrent readings and across restarts. The detector's bit and the hub's threshold for the
same quantity share the type (`residual_current_high`); the record remembers which *sources*
hold it active and clears only when the last one clears. Latching types (arc fault, short
circuit) stay active until a reset (the device's `reset` event, the API, `alarm.reset`).

Why it is built this way:

* Deciding is a `@callback` on the loop and costs one dict lookup for a reading of an entity
  without thresholds, and a float() and two compares for one with thresholds whose value is
  in range. Nothing is written to the database on that path.
* Persisting happens in a single writer task that takes operations in the order the callbacks
  decided them, so a raise and its clear are never reordered and two readings can never
  insert two rows. The database enforces the same rule (a partial unique index on active
  records); a collision (another hub won) is folded into the winner's row.
* Delay-on timers are persisted (`alarm_pending`) and resumed after a restart with the part of
  the delay that had not yet run; active records are loaded before any plugin starts, so a
  condition still true after a restart updates its record and does not raise it again.
* After a restart the detector's view is re-learnt: a source loaded from the database stays
  "unconfirmed" until its plugin reports it again; once the device answers (its
  `binary_sensor.<obj>_online` turns on) the sources it did not re-report are dropped, so an
  alarm that ended while the hub was down does not stay active forever.

Bus events fired (data = the record as JSON, see `AlarmRecord.as_dict`): `alarm_raised`,
`alarm_updated` (throttled to `update_interval`), `alarm_acknowledged`, `alarm_handled`,
`alarm_cleared`. See docs/alarms.md.

A stalled database does not silence an alarm: a record whose row is not written within
`store_timeout` seconds (default 2) is announced anyway (`alarm_raised` with `id` None and
`provisional` true, its `ref` a hub-generated key) and kept in a JSON-lines spool in the
config dir (`alarm_spool.jsonl`) until its row is written; then `alarm_updated` carries the
same `ref` with the row's `id`. A spool left by a hub that died is written at the next start
(a row already there, same device, type and start time, is not written twice) and its records
are announced again once the notifiers listen (at-least-once, like the notifiers' own resume).
Whatever needs the row of a record it saw announced (a work order opened by an automation on
`alarm_raised`) asks `record_id(ref)`: it answers once the row is written, the same id for a
record folded into another worker's row.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import voluptuous as vol

from .conditions import (
    CONDITION_TYPES,
    EVENT_DEVICE_CONDITION,
    KIND_ALARM,
    KIND_EVENT,
    KIND_FAULT,
    condition_type,
    format_message,
)
from .context import Context
from .events import (
    EVENT_DEVICE_REGISTRY_UPDATED,
    EVENT_HUB_START,
    EVENT_STATE_CHANGED,
    ORIGIN_REMOTE,
    Event,
    callback,
)
from .states import STATE_ON, iso, slugify

_LOGGER = logging.getLogger(__name__)

#: The engine's time source; tests replace it to drive delay timers without sleeping.
CLOCK: Callable[[], float] = time.time

EVENT_ALARM_RAISED = "alarm_raised"
EVENT_ALARM_UPDATED = "alarm_updated"
EVENT_ALARM_ACKNOWLEDGED = "alarm_acknowledged"
EVENT_ALARM_HANDLED = "alarm_handled"
EVENT_ALARM_CLEARED = "alarm_cleared"

STATUS_ACTIVE = "active"
STATUS_CLEARED = "cleared"

SOURCE_HUB = "hub"
#: The source of a condition whose plugin did not name one: the device itself.
SOURCE_DEVICE = "device"

SEVERITY_CRITICAL = "critical"
SEVERITY_MAJOR = "major"
SEVERITY_MINOR = "minor"
SEVERITY_INFO = "info"
CRITICAL_TYPES = frozenset({"smoke", "arc_fault", "short_circuit"})
DEFAULT_LATCHING: tuple[str, ...] = ("arc_fault", "short_circuit")
DEFAULT_UPDATE_INTERVAL = 10.0
#: Seconds a new record waits for its row before it is announced anyway (a stalled database).
DEFAULT_STORE_TIMEOUT = 2.0
SPOOL_NAME = "alarm_spool.jsonl"
STOP_TIMEOUT = 10.0
#: Written records remembered by `ref` for `record_id` (an automation acting on its trigger's
#: alarm a little after the write); older ones are found only while they are active.
RECENT_REFS = 1024

#: Words of the event log's first column (the seed's 报警 / 故障 / 事件).
KIND_WORDS: dict[str, tuple[str, str]] = {
    KIND_ALARM: ("报警", "Alarm"),
    KIND_FAULT: ("故障", "Fault"),
    KIND_EVENT: ("事件", "Event"),
}

# Hub-side thresholds. Residual current: GB 51348 300 mA, detector response <= 30 s
# (GB 14287.2), so 5 s of delay-on leaves room. Cable temperature: 80 °C (70-80 % of a PVC
# cable's 90-105 °C rating, GB 51348), alarm within 40 s (GB 50166): 10 s of delay-on.
# Voltage: 220 V +20 %/-15 % (264/187 V), the reference map's own defaults. Overload: only
# when a device names its rated current. Hysteresis: a number in the unit, or a percentage.
DEFAULT_THRESHOLDS: dict[str, dict[str, Any]] = {
    "residual_current": {"enabled": True, "alarm": 300.0, "delay": 5.0, "hysteresis": "5%"},
    "temperature": {"enabled": True, "alarm": 80.0, "delay": 10.0, "hysteresis": "5%"},
    "voltage": {"enabled": True, "over": 264.0, "under": 187.0, "delay": 5.0,
                "hysteresis": "2%"},
    "current": {"enabled": True, "overload": None, "delay": 10.0, "hysteresis": "5%"},
}


def default_severity(type_: str, kind: str) -> str:
    if kind == KIND_EVENT:
        return SEVERITY_INFO
    if kind == KIND_FAULT:
        return SEVERITY_MINOR
    return SEVERITY_CRITICAL if type_ in CRITICAL_TYPES else SEVERITY_MAJOR


def link_summary(link: dict[str, Any] | None) -> str:
    """The event log's communication address: `modbus_tcp 127.0.0.1:5020`, `gsm 8600…`."""
    if not link:
        return ""
    transport = str(link.get("transport") or "")
    if link.get("imei"):
        return f"{transport} {link['imei']}".strip()
    if link.get("host"):
        port = link.get("port")
        return f"{transport} {link['host']}:{port}" if port else f"{transport} {link['host']}"
    if link.get("port"):
        return f"{transport} {link['port']}"
    return transport


def _iso(value: float | None) -> str | None:
    return iso(value) if value is not None else None


class DuplicateActiveAlarm(Exception):
    """The store already holds an active record for this (device, type) (another writer won)."""


class AlarmNotStored(Exception):
    """`record_id` gave up: the hub stopped before the record's row was written (it waits in
    the spool for the next start)."""


class AlarmStore(Protocol):
    """Persistence for alarm records (implemented by hub.storage.alarm_store)."""

    async def insert(self, record: dict[str, Any]) -> int: ...

    async def update(self, alarm_id: int, changes: dict[str, Any]) -> bool: ...

    async def clear(self, alarm_id: int, changes: dict[str, Any]) -> bool: ...

    async def merge_active(
        self, device_id: str, type_: str, sources: Iterable[str], seen_at: float
    ) -> dict[str, Any] | None: ...

    async def load_active(self) -> list[dict[str, Any]]: ...

    async def get_many(self, ids: Sequence[int]) -> list[dict[str, Any]]: ...

    async def acknowledge(
        self, ids: Sequence[int], user: str | None, at: float, note: str | None
    ) -> list[int]: ...

    async def handle(
        self, ids: Sequence[int], user: str | None, at: float, note: str | None
    ) -> list[int]: ...

    async def save_pending(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def delete_pending(self, keys: Sequence[tuple[str, str, str]]) -> None: ...

    async def load_pending(self) -> list[dict[str, Any]]: ...

    async def find(self, device_id: str, type_: str, started_at: float) -> int | None: ...


@dataclass(eq=False)
class AlarmRecord:
    """One alarm, fault or event: the row of `alarms`, plus what the engine tracks in memory."""

    device_id: str
    type: str
    kind: str
    severity: str
    message: str
    started_at: float
    last_seen_at: float
    id: int | None = None
    status: str = STATUS_ACTIVE
    entity_id: str | None = None
    project: str | None = None
    area: str | None = None
    location: str | None = None
    device_name: str | None = None
    platform: str | None = None
    address: str | None = None
    unit_address: str | None = None
    message_en: str | None = None
    value: float | None = None
    unit: str | None = None
    sources: set[str] = field(default_factory=set)
    latching: bool = False
    count: int = 1
    cleared_at: float | None = None
    cleared_by: str | None = None
    acked_at: float | None = None
    acked_by: str | None = None
    handled_at: float | None = None
    handled_by: str | None = None
    note: str | None = None
    context_id: str | None = None
    # -- in memory only ----------------------------------------------------------------------
    #: sources loaded from the database that no plugin has re-reported since the restart
    unconfirmed: set[str] = field(default_factory=set)
    #: a reset arrived while a source still held the latched record: clear once it lets go
    reset_armed: bool = False
    flush_handle: asyncio.TimerHandle | None = None
    #: the cause (the condition's Context): alarm_raised is fired in a child of it
    origin: Context | None = None
    #: a hub-generated key, shown as `ref`: a record announced before its row was written
    #: (a stalled database) is known by it until `alarm_updated` brings its `id`
    #: (None for a record loaded from the database: its id names it)
    ref: str | None = None
    #: alarm_raised was fired before the row was written (see `store_timeout`)
    announced: bool = False
    announce_handle: asyncio.TimerHandle | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.device_id, self.type)

    def row(self) -> dict[str, Any]:
        """The database row (times as unix seconds)."""
        return {
            "id": self.id, "device_id": self.device_id, "type": self.type, "kind": self.kind,
            "severity": self.severity, "status": self.status, "entity_id": self.entity_id,
            "project": self.project, "area": self.area, "location": self.location,
            "device_name": self.device_name, "platform": self.platform,
            "address": self.address, "unit_address": self.unit_address,
            "message": self.message, "message_en": self.message_en, "value": self.value,
            "unit": self.unit, "sources": sorted(self.sources), "latching": self.latching,
            "count": self.count, "started_at": self.started_at,
            "last_seen_at": self.last_seen_at, "cleared_at": self.cleared_at,
            "cleared_by": self.cleared_by, "acked_at": self.acked_at, "acked_by": self.acked_by,
            "handled_at": self.handled_at, "handled_by": self.handled_by, "note": self.note,
            "context_id": self.context_id,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AlarmRecord:
        data = {key: row.get(key) for key in _ROW_FIELDS}
        data["sources"] = set(row.get("sources") or ())
        data["latching"] = bool(row.get("latching"))
        data["count"] = int(row.get("count") or 1)
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        """The record as the API and bus events show it (CONTRACTS §5; times ISO 8601 UTC)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "type": self.type,
            "device_id": self.device_id,
            "entity_id": self.entity_id,
            "project": self.project,
            "area": self.area,
            "location": self.location,
            "message": self.message,
            "message_en": self.message_en,
            "value": self.value,
            "unit": self.unit,
            "status": self.status,
            "acknowledged": self.acked_at is not None,
            "severity": self.severity,
            "count": self.count,
            "sources": sorted(self.sources),
            "latching": self.latching,
            "started_at": _iso(self.started_at),
            "last_seen_at": _iso(self.last_seen_at),
            "acked_at": _iso(self.acked_at),
            "acked_by": self.acked_by,
            "cleared_at": _iso(self.cleared_at),
            "cleared_by": self.cleared_by,
            "handled_at": _iso(self.handled_at),
            "handled_by": self.handled_by,
            "note": self.note,
            "device_name": self.device_name,
            "platform": self.platform,
            "address": self.address,
            "unit_address": self.unit_address,
            "ref": self.ref,
            "provisional": self.id is None,
        }


_ROW_FIELDS = (
    "id", "device_id", "type", "kind", "severity", "status", "entity_id", "project", "area",
    "location", "device_name", "platform", "address", "unit_address", "message", "message_en",
    "value", "unit", "started_at", "last_seen_at", "cleared_at", "cleared_by", "acked_at",
    "acked_by", "handled_at", "handled_by", "note", "context_id",
)


def record_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as the API shows it."""
    return AlarmRecord.from_row(row).as_dict()


# -- hub-side thresholds ---------------------------------------------------------------------
_NORMAL, _PENDING, _RAISED = 0, 1, 2


class _Watch:
    """One threshold on one entity, with its hysteresis state.

    NORMAL -> PENDING when the value crosses `limit`; PENDING -> RAISED when it has not come
    back past `clear_at` for `delay` seconds; back to NORMAL only past `clear_at`. Between
    `limit` and `clear_at` nothing changes: that band is what stops a flapping value.
    """

    __slots__ = (
        "clear_at",
        "confirmed",
        "delay",
        "device_id",
        "due",
        "entity",
        "entity_id",
        "high",
        "limit",
        "noted",
        "since",
        "state",
        "type",
        "unit",
        "value",
    )

    def __init__(self, device_id: str, type_: str, entity_id: str, high: bool, limit: float,
                 hysteresis: float | str, delay: float, unit: str) -> None:
        self.device_id = device_id
        self.type = type_
        self.entity_id = entity_id
        self.high = high
        self.limit = limit
        if isinstance(hysteresis, str):
            band = abs(limit) * float(hysteresis.rstrip("%")) / 100.0
        else:
            band = float(hysteresis)
        self.clear_at = limit - band if high else limit + band
        self.delay = delay
        self.unit = unit
        self.state = _NORMAL
        self.since = 0.0
        self.due = 0.0
        self.value: float | None = None
        #: a pending delay restored after a restart is confirmed by the first reading
        self.confirmed = True
        self.noted = 0.0
        self.entity: _Entity | None = None

    def set_state(self, state: int) -> None:
        self.state = state
        if self.entity is not None:
            self.entity.refresh()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.device_id, self.type, self.entity_id)


class _Entity:
    """Everything the engine watches on one entity, with a fast gate for the common case.

    While every watch is NORMAL a reading strictly between `lo` and `hi` (the nearest limits)
    cannot change anything, so the hot path is: one lookup, one float(), two compares.
    `online` is set after a restart on a device's online entity, whose first `on` re-learns
    the device's sources (see `_online_again`).
    """

    __slots__ = ("calm", "entity_id", "hi", "lo", "online", "watches")

    def __init__(self, entity_id: str, watches: Sequence[_Watch],
                 online: str | None = None) -> None:
        self.entity_id = entity_id
        self.watches = tuple(watches)
        self.online = online
        self.hi = min((w.limit for w in self.watches if w.high), default=math.inf)
        self.lo = max((w.limit for w in self.watches if not w.high), default=-math.inf)
        for watch in self.watches:
            watch.entity = self
        self.calm = False
        self.refresh()

    def refresh(self) -> None:
        self.calm = self.online is None and all(w.state == _NORMAL for w in self.watches)


def _threshold_specs(device_id: str, settings: dict[str, dict[str, Any]]) -> list[_Watch]:
    """The watches a device gets from its effective settings (CONTRACTS §4 entity names)."""
    obj = slugify(device_id)
    out: list[_Watch] = []
    rc = settings["residual_current"]
    if rc.get("enabled", True) and rc.get("alarm") is not None:
        out.append(_Watch(device_id, "residual_current_high", f"sensor.{obj}_residual_current",
                          True, float(rc["alarm"]), rc["hysteresis"], rc["delay"], "mA"))
    temp = settings["temperature"]
    if temp.get("enabled", True) and temp.get("alarm") is not None:
        for n in range(1, 5):
            out.append(_Watch(device_id, f"temperature_high_{n}",
                              f"sensor.{obj}_temperature_{n}", True, float(temp["alarm"]),
                              temp["hysteresis"], temp["delay"], "°C"))
    volt = settings["voltage"]
    if volt.get("enabled", True):
        for phase in "abc":
            entity_id = f"sensor.{obj}_voltage_{phase}"
            if volt.get("over") is not None:
                out.append(_Watch(device_id, "over_voltage", entity_id, True,
                                  float(volt["over"]), volt["hysteresis"], volt["delay"], "V"))
            if volt.get("under") is not None:
                out.append(_Watch(device_id, "under_voltage", entity_id, False,
                                  float(volt["under"]), volt["hysteresis"], volt["delay"], "V"))
    cur = settings["current"]
    if cur.get("enabled", True) and cur.get("overload") is not None:
        for phase in "abc":
            out.append(_Watch(device_id, "overload", f"sensor.{obj}_current_{phase}", True,
                              float(cur["overload"]), cur["hysteresis"], cur["delay"], "A"))
    return out


def _merge_settings(*layers: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    merged = {name: dict(values) for name, values in DEFAULT_THRESHOLDS.items()}
    for layer in layers:
        for name, values in (layer or {}).items():
            if name in merged and isinstance(values, dict):
                merged[name].update(values)
    return merged


# -- the engine ------------------------------------------------------------------------------
class AlarmEngine:
    """See the module docstring. `hub.alarms` once the hub started."""

    def __init__(self, hub: Any, config: dict[str, Any] | None = None,
                 store: AlarmStore | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        config = config or {}
        self.hub = hub
        self.store = store
        self.clock: Callable[[], float] = clock or CLOCK
        self.latching = frozenset(config.get("latching", DEFAULT_LATCHING))
        self.severity_overrides: dict[str, str] = dict(config.get("severity", {}))
        self.update_interval = float(config.get("update_interval", DEFAULT_UPDATE_INTERVAL))
        self.store_timeout = float(config.get("store_timeout", DEFAULT_STORE_TIMEOUT))
        if not self.store_timeout > 0:
            raise ValueError(f"alarms.store_timeout must be > 0 s, got {self.store_timeout!r}")
        #: Records announced before their row was written (the database did not answer).
        self.provisional_total = 0
        #: Spooled records written at start (left by a hub that stopped during a stall).
        self.spool_replayed = 0
        config_dir = getattr(hub, "config_dir", None)
        self.spool_path = (os.path.join(str(config_dir), SPOOL_NAME)
                           if config_dir is not None and store is not None else None)
        self._spooled: dict[str, dict[str, Any]] = {}
        self._replayed: list[AlarmRecord] = []
        #: records raised here whose row is not written yet, and the last ones written, by ref
        self._unstored: dict[str, AlarmRecord] = {}
        self._recent: collections.OrderedDict[str, AlarmRecord] = collections.OrderedDict()
        self._id_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self.default_thresholds: dict[str, Any] = dict(config.get("thresholds", {}))
        self.raised_total = 0
        #: Clears and updates another worker's write had already made moot (multi-worker).
        self.cleared_elsewhere = 0
        self.write_errors = 0

        self._active: dict[tuple[str, str], AlarmRecord] = {}
        # entity_id -> what is watched on it: the hot path's only lookup
        self._watches: dict[str, Any] = {}
        self._by_key: dict[tuple[str, str, str], _Watch] = {}
        self._keys_by_device: dict[str, list[tuple[str, str, str]]] = {}
        self._hub_groups: dict[tuple[str, str], set[str]] = {}
        self._timers: list[tuple[float, int, _Watch]] = []
        self._timer_seq = 0
        self._timer_handle: asyncio.TimerHandle | None = None
        self._ops: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._unsubs: list[Callable[[], None]] = []
        self._next_memory_id = 0
        self._running = False

    # -- lifecycle --------------------------------------------------------------------------
    async def async_start(self) -> None:
        """Load active records and pending delays, index thresholds, then start listening."""
        bus = self.hub.bus
        if self.store is not None:
            await self._replay_spool()
            for row in await self.store.load_active():
                record = AlarmRecord.from_row(row)
                record.unconfirmed = set(record.sources) - {SOURCE_HUB}
                self._active.setdefault(record.key, record)
        self._rebuild_index()
        self._restore_raised_watches()
        if self.store is not None:
            await self._restore_pending(await self.store.load_pending())
        self._watch_online()
        self._running = True
        self._arm()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(),
                                                              name="alarm writer")
        self._unsubs = [
            bus.listen(EVENT_DEVICE_CONDITION, self._on_condition),
            bus.listen(EVENT_STATE_CHANGED, self._on_state_changed),
            bus.listen(EVENT_DEVICE_REGISTRY_UPDATED, self._on_registry_updated),
        ]
        if self._replayed:
            self._unsubs.append(bus.listen(EVENT_HUB_START, self._announce_replayed))
        self._register_services()
        _LOGGER.info("Alarm engine started: %d active records, %d watched entities",
                     len(self._active), len(self._watches))

    async def async_stop(self) -> None:
        """Stop deciding, persist pending delays and repeat counts, finish every write."""
        if not self._running:
            return
        self._running = False
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        now = self.clock()
        # A confirmed delay ran until now; one restored but never re-confirmed keeps only what
        # it had, so time without readings is never counted as time the condition held.
        pending = [self._pending_row(w, now if w.confirmed else w.noted)
                   for w in self._by_key.values() if w.state == _PENDING]
        if pending:
            self._enqueue(("save_pending", pending))
        for record in self._active.values():
            if record.flush_handle is not None:
                record.flush_handle.cancel()
                record.flush_handle = None
                self._enqueue(("update", record, None))
        try:
            await asyncio.wait_for(self.async_flush(), STOP_TIMEOUT)
        except TimeoutError:
            _LOGGER.error("Alarm engine: %d writes not done at stop", len(self._ops))
            # Records whose row is still not written survive in the spool (next start), as
            # they are now (a later line of the same ref replaces an earlier one).
            for op in self._ops:
                if op[0] == "insert" and op[1].id is None:
                    self._spool_add(op[1])
        for op in self._ops:
            if op[0] == "insert" and op[1].announce_handle is not None:
                op[1].announce_handle.cancel()
                op[1].announce_handle = None
        waiters, self._id_waiters = self._id_waiters, {}
        for ref, futures in waiters.items():
            for future in futures:
                if not future.done():
                    future.set_exception(AlarmNotStored(
                        f"alarm {ref}: its row was not written before the hub stopped"))
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None
        services = getattr(self.hub, "services", None)
        if services is not None:
            for name in ("acknowledge", "handle", "reset"):
                services.remove("alarm", name)

    async def async_flush(self) -> None:
        """Return once every decision taken so far is in the database (and its event fired)."""
        if not self._ops:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(("barrier", done))
        await done

    # -- what others read -------------------------------------------------------------------
    def active(self) -> list[AlarmRecord]:
        return list(self._active.values())

    def get_active(self, device_id: str, type_: str) -> AlarmRecord | None:
        return self._active.get((device_id, type_))

    def by_ref(self, ref: str) -> AlarmRecord | None:
        """A record raised by this hub, by its `ref`: waiting for its row, written recently,
        or still active (None when it is none of these)."""
        record = self._unstored.get(ref) or self._recent.get(ref)
        if record is None:
            record = next((r for r in self._active.values() if r.ref == ref), None)
        return record

    async def record_id(self, ref: str) -> int:
        """The row id of the record announced with `ref`, once its row is written.

        An `alarm_raised` fired during a stall has `id` null; an automation that opens a work
        order for it waits here instead of failing (or losing the order). A record folded
        into another worker's row answers that row's id, so every worker names the same row.
        Raises KeyError for a ref this hub does not know, AlarmNotStored at stop.
        """
        record = self.by_ref(ref)
        if record is None:
            raise KeyError(ref)
        if record.id is not None:
            return record.id
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._id_waiters.setdefault(ref, []).append(future)
        return await future

    def _written(self, record: AlarmRecord) -> None:
        """A record has its row: remember it by ref and answer who waits for its id."""
        if record.ref is None or record.id is None:
            return
        self._unstored.pop(record.ref, None)
        self._recent[record.ref] = record
        self._recent.move_to_end(record.ref)
        while len(self._recent) > RECENT_REFS:
            self._recent.popitem(last=False)
        for future in self._id_waiters.pop(record.ref, ()):
            if not future.done():
                future.set_result(record.id)

    def active_counts(self) -> dict[str, int]:
        counts = {KIND_ALARM: 0, KIND_FAULT: 0}
        for record in self._active.values():
            counts[record.kind] = counts.get(record.kind, 0) + 1
        return counts

    def pending(self) -> list[dict[str, Any]]:
        """Delay timers running now (for diagnostics and tests)."""
        return [
            {"device_id": w.device_id, "type": w.type, "entity_id": w.entity_id,
             "since": w.since, "due": w.due, "confirmed": w.confirmed}
            for w in self._by_key.values() if w.state == _PENDING
        ]

    def severity_of(self, type_: str, kind: str) -> str:
        return self.severity_overrides.get(type_) or default_severity(type_, kind)

    def thresholds_for(self, device_id: str) -> dict[str, dict[str, Any]]:
        device = self.hub.devices.get(device_id)
        own = device.options.get("thresholds") if device is not None else None
        return _merge_settings(self.default_thresholds, own)

    # -- inputs: device conditions ----------------------------------------------------------
    @callback
    def _on_condition(self, event: Event) -> None:
        data = event.data
        device_id = data.get("device_id")
        type_ = data.get("type")
        if not device_id or not type_:
            _LOGGER.warning("device_condition without device_id or type ignored: %s", data)
            return
        kind = data.get("kind") or condition_type(type_).kind
        source = data.get("source") or SOURCE_DEVICE
        when = float(data.get("time") or self.clock())
        active = bool(data.get("active", True))
        if kind == KIND_EVENT:
            if not active:
                return
            self._record_event(device_id, type_, data, source, when, event.context)
            if type_ == "reset":
                self._device_reset(device_id, when, event.context.user_id or "device")
            return
        if active:
            self._activate(device_id, type_, kind, source, when,
                           entity_id=data.get("entity_id"), value=data.get("value"),
                           unit=data.get("unit"), message=data.get("message"),
                           message_en=data.get("message_en"), context=event.context)
        else:
            self._deactivate(device_id, type_, source, when)

    # -- inputs: readings (the hot path) ----------------------------------------------------
    @callback
    def _on_state_changed(self, event: Event) -> None:
        # No event_filter on purpose: a filter plus a listener is two calls per watched
        # reading; this is one call and one dict miss for an entity without thresholds,
        # the same as a filter would cost (bench/bench_alarms.py).
        data = event.data
        entity = self._watches.get(data["entity_id"])
        if entity is None or event.origin == ORIGIN_REMOTE:  # the owning worker decides
            return
        new = data["new_state"]
        if entity.calm:
            try:
                value = float(new.state)
            except (ValueError, AttributeError):  # not a number; or None: entity removed
                return
            if entity.lo < value < entity.hi:
                return
        else:
            if new is None:
                return
            if entity.online is not None and new.state == STATE_ON:
                self._online_again(entity)
            try:
                value = float(new.state)
            except ValueError:
                return  # unavailable / unknown: neither raises nor clears
        self._evaluate(entity, value, new.last_updated)

    def _evaluate(self, entity: _Entity, value: float, now: float) -> None:
        for watch in entity.watches:
            state = watch.state
            if state == _NORMAL:
                if (value >= watch.limit) if watch.high else (value <= watch.limit):
                    self._begin(watch, value, now)
            elif (value < watch.clear_at) if watch.high else (value > watch.clear_at):
                self._back_to_normal(watch, value, now)
            else:
                watch.value = value
                if state == _PENDING and not watch.confirmed:
                    watch.confirmed = True
                    if self.clock() >= watch.due:
                        self._due(watch)

    def _begin(self, watch: _Watch, value: float, now: float) -> None:
        watch.value = value
        watch.confirmed = True
        if watch.delay <= 0:
            watch.set_state(_RAISED)
            self._hub_source(watch, True, now)
            return
        watch.set_state(_PENDING)
        watch.since = now
        watch.due = now + watch.delay
        self._schedule(watch)
        # noted_at == since: after a crash the delay starts over (never raises on a guess).
        self._enqueue(("save_pending", [self._pending_row(watch, now)]))

    def _back_to_normal(self, watch: _Watch, value: float, now: float) -> None:
        state = watch.state
        watch.set_state(_NORMAL)
        watch.value = value
        if state == _PENDING:
            self._enqueue(("delete_pending", [watch.key]))
        elif state == _RAISED:
            self._hub_source(watch, False, now)

    def _due(self, watch: _Watch) -> None:
        """The delay ran out: raise if the condition still holds (confirmed after a restart)."""
        if watch.state != _PENDING or not watch.confirmed:
            return
        watch.set_state(_RAISED)
        self._enqueue(("delete_pending", [watch.key]))
        self._hub_source(watch, True, watch.due)

    def _hub_source(self, watch: _Watch, active: bool, now: float) -> None:
        """Several entities (phases) feed one type: the hub holds it while any of them is out."""
        key = (watch.device_id, watch.type)
        group = self._hub_groups.setdefault(key, set())
        if active:
            first = not group
            group.add(watch.entity_id)
            if first or key not in self._active:
                self._activate(watch.device_id, watch.type, condition_type(watch.type).kind,
                               SOURCE_HUB, now, entity_id=watch.entity_id, value=watch.value,
                               unit=watch.unit)
        else:
            group.discard(watch.entity_id)
            if not group:
                self._deactivate(watch.device_id, watch.type, SOURCE_HUB, now)

    # -- timers -----------------------------------------------------------------------------
    def _schedule(self, watch: _Watch) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (watch.due, self._timer_seq, watch))
        if self._timers[0][2] is watch:
            self._arm()

    def _arm(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        if self._timers and self._running:
            delay = max(0.0, self._timers[0][0] - self.clock())
            self._timer_handle = asyncio.get_running_loop().call_later(delay, self.run_due_timers)

    @callback
    def run_due_timers(self) -> None:
        """Fire every delay that has run out by `clock()` (the loop calls this; tests may too)."""
        self._timer_handle = None
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            due, _seq, watch = heapq.heappop(self._timers)
            if watch.state == _PENDING and watch.due == due:
                self._due(watch)
        self._arm()

    # -- records ----------------------------------------------------------------------------
    def _activate(self, device_id: str, type_: str, kind: str, source: str, when: float, *,
                  entity_id: str | None = None, value: Any = None, unit: str | None = None,
                  message: str | None = None, message_en: str | None = None,
                  context: Context | None = None) -> None:
        key = (device_id, type_)
        record = self._active.get(key)
        if record is not None:
            new_source = source not in record.sources
            record.sources.add(source)
            record.unconfirmed.discard(source)
            record.reset_armed = False
            record.count += 1
            record.last_seen_at = max(record.last_seen_at, when)
            if record.entity_id is None and entity_id:
                record.entity_id = entity_id
            self._mark_dirty(record, immediate=new_source)
            return
        if not message:
            message = format_message(type_, value, unit, "zh-CN")
        if not message_en:
            message_en = format_message(type_, value, unit, "en")
        record = AlarmRecord(
            device_id=device_id, type=type_, kind=kind, severity=self.severity_of(type_, kind),
            message=message, message_en=message_en, started_at=when, last_seen_at=when,
            entity_id=entity_id, value=_number(value), unit=unit, sources={source},
            latching=type_ in self.latching,
            context_id=context.id if context is not None else None, origin=context,
        )
        self._snapshot_device(record)
        self._active[key] = record
        self._enqueue_insert(record)

    def _deactivate(self, device_id: str, type_: str, source: str, when: float) -> None:
        record = self._active.get((device_id, type_))
        if record is None:
            return
        record.sources.discard(source)
        record.unconfirmed.discard(source)
        record.last_seen_at = max(record.last_seen_at, when)
        if record.sources:
            self._mark_dirty(record, immediate=True)
            return
        if record.latching and not record.reset_armed:
            self._mark_dirty(record, immediate=True)  # latched: stays active until reset
            return
        self._clear(record, when, None)

    def _clear(self, record: AlarmRecord, when: float, by: str | None) -> None:
        record.status = STATUS_CLEARED
        record.cleared_at = max(when, record.started_at)
        record.cleared_by = by
        record.sources.clear()
        record.unconfirmed.clear()
        if record.flush_handle is not None:
            record.flush_handle.cancel()
            record.flush_handle = None
        if self._active.get(record.key) is record:
            del self._active[record.key]
        self._enqueue(("update", record, EVENT_ALARM_CLEARED))

    def _record_event(self, device_id: str, type_: str, data: dict[str, Any], source: str,
                      when: float, context: Context) -> None:
        record = AlarmRecord(
            device_id=device_id, type=type_, kind=KIND_EVENT,
            severity=self.severity_of(type_, KIND_EVENT),
            message=data.get("message") or format_message(type_, language="zh-CN"),
            message_en=data.get("message_en") or format_message(type_, language="en"),
            started_at=when, last_seen_at=when, status=STATUS_CLEARED, cleared_at=when,
            entity_id=data.get("entity_id"), value=_number(data.get("value")),
            unit=data.get("unit"), sources={source}, context_id=context.id, origin=context,
        )
        self._snapshot_device(record)
        self._enqueue_insert(record)

    def _device_reset(self, device_id: str, when: float, by: str) -> None:
        for record in [r for r in self._active.values() if r.device_id == device_id]:
            if record.latching:
                self._reset(record, when, by, force=False)

    def _reset(self, record: AlarmRecord, when: float, by: str | None, force: bool) -> bool:
        """Clear a latched record; while a source still holds it, clear when that lets go."""
        if force or not record.sources:
            self._clear(record, when, by)
            return True
        record.reset_armed = True
        return False

    def _snapshot_device(self, record: AlarmRecord) -> None:
        device = self.hub.devices.get(record.device_id)
        if device is None:
            return
        record.project = device.project
        record.area = device.area
        record.location = device.location
        record.device_name = device.display_name
        record.platform = device.platform
        record.address = link_summary(device.link) or None
        unit = (device.link or {}).get("unit")
        record.unit_address = str(unit) if unit is not None else None

    def _mark_dirty(self, record: AlarmRecord, immediate: bool = False) -> None:
        """Repeats are many, writes few: at most one update per record per `update_interval`."""
        if immediate or self.update_interval <= 0:
            if record.flush_handle is not None:
                record.flush_handle.cancel()
                record.flush_handle = None
            self._enqueue(("update", record, EVENT_ALARM_UPDATED))
            return
        if record.flush_handle is None and self._running:
            record.flush_handle = asyncio.get_running_loop().call_later(
                self.update_interval, self._flush_record, record)

    @callback
    def _flush_record(self, record: AlarmRecord) -> None:
        record.flush_handle = None
        if record.status == STATUS_ACTIVE:
            self._enqueue(("update", record, EVENT_ALARM_UPDATED))

    # -- after a restart --------------------------------------------------------------------
    def _restore_raised_watches(self) -> None:
        """A threshold alarm active before the restart: its watch starts RAISED, not NORMAL."""
        for record in list(self._active.values()):
            if SOURCE_HUB not in record.sources:
                continue
            watches = [w for w in self._by_key.values()
                       if w.device_id == record.device_id and w.type == record.type
                       and (record.entity_id is None or w.entity_id == record.entity_id)]
            if not watches:
                self._deactivate(record.device_id, record.type, SOURCE_HUB, self.clock())
                continue
            for watch in watches[:1]:
                watch.set_state(_RAISED)
                self._hub_groups.setdefault(record.key, set()).add(watch.entity_id)

    async def _restore_pending(self, rows: list[dict[str, Any]]) -> None:
        now = self.clock()
        stale = []
        for row in rows:
            watch = self._by_key.get((row["device_id"], row["type"], row["entity_id"]))
            if watch is None or watch.state != _NORMAL:
                stale.append((row["device_id"], row["type"], row["entity_id"]))
                continue
            elapsed = max(0.0, float(row["noted_at"]) - float(row["since"]))
            watch.set_state(_PENDING)
            watch.confirmed = False
            watch.since = now - elapsed
            watch.due = watch.since + watch.delay
            watch.noted = now
            self._schedule_later(watch)
        if stale and self.store is not None:
            await self.store.delete_pending(stale)

    def _schedule_later(self, watch: _Watch) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (watch.due, self._timer_seq, watch))

    def _watch_online(self) -> None:
        for record in self._active.values():
            if record.unconfirmed:
                entity_id = f"binary_sensor.{slugify(record.device_id)}_online"
                current = self._watches.get(entity_id)
                if current is not None and current.online is not None:
                    continue
                self._watches[entity_id] = _Entity(entity_id, current.watches if current else (),
                                                   online=record.device_id)

    def _online_again(self, entity: _Entity) -> None:
        """The device answered: after this poll's conditions, drop what it did not re-report."""
        device_id, entity.online = entity.online, None
        entity.refresh()
        if not entity.watches:
            self._watches.pop(entity.entity_id, None)
        asyncio.get_running_loop().call_soon(self._reconcile, device_id)

    @callback
    def _reconcile(self, device_id: str) -> None:
        now = self.clock()
        for record in [r for r in self._active.values() if r.device_id == device_id]:
            for source in list(record.unconfirmed):
                _LOGGER.info("Alarm %s %s: source %s not re-reported after restart, dropped",
                             device_id, record.type, source)
                self._deactivate(device_id, record.type, source, now)

    # -- registry changes -------------------------------------------------------------------
    @callback
    def _on_registry_updated(self, event: Event) -> None:
        device_id = event.data.get("device_id")
        self._rebuild_index([device_id] if device_id else None)

    def _rebuild_index(self, device_ids: Sequence[str] | None = None) -> None:
        """Recompute the watches of some devices (all when None) from the registry.

        Per device, so a plugin adding a thousand devices at start costs a thousand small
        updates, not a thousand full rebuilds. A watch that remains keeps its state (a
        running delay, a raised alarm); one that went away lets go of what it held.
        """
        if device_ids is None:
            targets = list(dict.fromkeys([*self._keys_by_device,
                                          *(device.id for device in self.hub.devices)]))
        else:
            targets = list(device_ids)
        old_keys = [key for d in targets for key in self._keys_by_device.pop(d, ())]
        old = {key: self._by_key.pop(key) for key in old_keys}
        touched: set[str] = {key[2] for key in old_keys}
        for device_id in targets:
            if self.hub.devices.get(device_id) is None:
                continue
            for watch in _threshold_specs(device_id, self.thresholds_for(device_id)):
                before = old.pop(watch.key, None)
                if before is not None and before.high == watch.high:
                    watch.state, watch.since, watch.value = before.state, before.since, before.value
                    watch.confirmed, watch.noted = before.confirmed, before.noted
                    before.state = _NORMAL  # its heap entry must not fire any more
                    if watch.state == _PENDING:
                        watch.due = watch.since + watch.delay
                        self._schedule_later(watch)
                self._by_key[watch.key] = watch
                self._keys_by_device.setdefault(device_id, []).append(watch.key)
                touched.add(watch.entity_id)
        now = self.clock()
        for key, before in old.items():  # watches that went away
            if before.state == _RAISED:
                self._hub_source(before, False, now)
            elif before.state == _PENDING:
                self._enqueue(("delete_pending", [key]))
            before.state = _NORMAL
        rebuilt = set(targets)
        by_entity: dict[str, list[_Watch]] = {entity_id: [] for entity_id in touched}
        for entity_id in touched:  # another device's watches on the same id (a slug clash)
            current = self._watches.get(entity_id)
            if current is not None:
                by_entity[entity_id].extend(
                    w for w in current.watches if w.device_id not in rebuilt)
        for device_id in targets:
            for key in self._keys_by_device.get(device_id, ()):
                by_entity[key[2]].append(self._by_key[key])
        for entity_id, items in by_entity.items():
            current = self._watches.get(entity_id)
            online = current.online if current is not None else None
            if items or online is not None:
                self._watches[entity_id] = _Entity(entity_id, items, online)
            else:
                self._watches.pop(entity_id, None)
        if self._running and self._timers:
            self._arm()

    # -- people: acknowledge, handle, reset -------------------------------------------------
    async def async_acknowledge(self, ids: Sequence[int], note: str | None = None,
                                context: Context | None = None) -> dict[str, Any]:
        return await self._people_action(ids, note, context, "ack")

    async def async_handle(self, ids: Sequence[int], note: str | None = None,
                           context: Context | None = None) -> dict[str, Any]:
        return await self._people_action(ids, note, context, "handle")

    async def _people_action(self, ids: Sequence[int], note: str | None,
                             context: Context | None, action: str) -> dict[str, Any]:
        if self.store is None:
            raise RuntimeError("alarm engine has no store")
        context = context or Context()
        ids = sorted({int(i) for i in ids})
        now = self.clock()
        user = context.user_id
        if action == "ack":
            changed = await self.store.acknowledge(ids, user, now, note)
            event_type = EVENT_ALARM_ACKNOWLEDGED
        else:
            changed = await self.store.handle(ids, user, now, note)
            event_type = EVENT_ALARM_HANDLED
        rows = {row["id"]: row for row in await self.store.get_many(ids)}
        by_id = {r.id: r for r in self._active.values() if r.id is not None}
        done = []
        for alarm_id in changed:
            row = rows.get(alarm_id)
            if row is None:
                continue
            record = by_id.get(alarm_id)
            if record is not None:
                for name in ("acked_at", "acked_by", "handled_at", "handled_by", "note"):
                    setattr(record, name, row.get(name))
            shown = record_dict(row)
            done.append(shown)
            self.hub.bus.async_fire(event_type, shown, context=context)
        return {
            "done": done,
            "unchanged": [i for i in ids if i in rows and i not in changed],
            "not_found": [i for i in ids if i not in rows],
        }

    async def async_reset(self, alarm_id: int, context: Context | None = None,
                          force: bool = False) -> dict[str, Any] | None:
        """Reset (clear) one active record by id; None when no active record has that id.

        Without `force` a record whose condition a source still reports stays active and is
        cleared the moment that source lets go (`reset_pending` in the answer).
        """
        context = context or Context()
        record = next((r for r in self._active.values() if r.id == alarm_id), None)
        if record is None:
            return None
        cleared = self._reset(record, self.clock(), context.user_id or "api", force)
        if not cleared:
            self._mark_dirty(record, immediate=True)
        await self.async_flush()
        shown = record.as_dict()
        shown["reset_pending"] = not cleared
        return shown

    def _register_services(self) -> None:
        services = getattr(self.hub, "services", None)
        if services is None:
            return

        async def acknowledge(call: Any) -> dict[str, Any]:
            return await self.async_acknowledge(call.data["ids"], call.data.get("note"),
                                                call.context)

        async def handle(call: Any) -> dict[str, Any]:
            return await self.async_handle(call.data["ids"], call.data.get("note"),
                                           call.context)

        async def reset(call: Any) -> dict[str, Any] | None:
            return await self.async_reset(call.data["id"], call.context,
                                          call.data.get("force", False))

        ids = vol.All([vol.Coerce(int)], vol.Length(min=1, max=10_000))
        note = vol.All(str, vol.Length(max=2000))
        services.register("alarm", "acknowledge", acknowledge,
                          schema=vol.Schema({vol.Required("ids"): ids, vol.Optional("note"): note}),
                          supports_response=True,
                          description="Acknowledge alarm records (确认), with an optional note")
        services.register("alarm", "handle", handle,
                          schema=vol.Schema({vol.Required("ids"): ids, vol.Optional("note"): note}),
                          supports_response=True,
                          description="Mark alarm records handled (处理), with an optional note")
        services.register("alarm", "reset", reset,
                          schema=vol.Schema({vol.Required("id"): vol.Coerce(int),
                                             vol.Optional("force", default=False): bool}),
                          supports_response=True,
                          description="Reset (clear) a latched alarm record (复位)")

    # -- the writer -------------------------------------------------------------------------
    def _pending_row(self, watch: _Watch, noted_at: float) -> dict[str, Any]:
        return {"device_id": watch.device_id, "type": watch.type, "entity_id": watch.entity_id,
                "since": watch.since, "noted_at": noted_at}

    def _enqueue_insert(self, record: AlarmRecord) -> None:
        """Queue a new record's row; announce it anyway if the row takes `store_timeout`."""
        if record.ref is None:
            record.ref = uuid.uuid4().hex
        self._unstored[record.ref] = record
        self._enqueue(("insert", record, EVENT_ALARM_RAISED))
        if self.store is not None and self._running:
            record.announce_handle = asyncio.get_running_loop().call_later(
                self.store_timeout, self._announce_provisional, record)

    @callback
    def _announce_provisional(self, record: AlarmRecord) -> None:
        """The database did not answer in time: announce (and spool) before the row exists."""
        record.announce_handle = None
        if record.id is not None or record.announced or not self._running:
            return
        record.announced = True
        self.provisional_total += 1
        self._spool_add(record)
        _LOGGER.warning("Alarm %s %s: the database did not store it within %g s; announced "
                        "now, stored when the database answers (ref %s)", record.device_id,
                        record.type, self.store_timeout, record.ref)
        self.raised_total += 1
        origin, record.origin = record.origin, None
        self.hub.bus.async_fire(EVENT_ALARM_RAISED, record.as_dict(),
                                context=origin.child() if origin is not None else None)

    # -- the spool: announced records whose row is not written yet ---------------------------
    def _spool_add(self, record: AlarmRecord) -> None:
        if self.spool_path is None:
            return
        entry = {"ref": record.ref, "announced": record.announced, "row": record.row()}
        self._spooled[record.ref] = entry
        try:
            with open(self.spool_path, "a", encoding="utf-8") as spool:
                spool.write(json.dumps(entry, ensure_ascii=False) + "\n")
                spool.flush()
                os.fsync(spool.fileno())
        except OSError as err:
            _LOGGER.error("Alarm spool %s not written (%s): alarm %s %s survives only in "
                          "memory until the database answers", self.spool_path, err,
                          record.device_id, record.type)

    def _spool_remove(self, ref: str | None) -> None:
        if self._spooled.pop(ref, None) is None or self.spool_path is None:
            return
        self._spool_rewrite()

    def _spool_rewrite(self) -> None:
        if self.spool_path is None:
            return
        try:
            if not self._spooled:
                os.unlink(self.spool_path)
                return
            tmp = self.spool_path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as spool:
                spool.writelines(json.dumps(entry, ensure_ascii=False) + "\n"
                                 for entry in self._spooled.values())
                spool.flush()
                os.fsync(spool.fileno())
            os.replace(tmp, self.spool_path)
        except FileNotFoundError:
            pass
        except OSError as err:
            _LOGGER.error("Alarm spool %s not rewritten (%s)", self.spool_path, err)

    async def _replay_spool(self) -> None:
        """Write the rows a previous run announced but could not store (before loading)."""
        if self.spool_path is None or self.store is None or not os.path.exists(self.spool_path):
            return
        with open(self.spool_path, encoding="utf-8") as spool:  # noqa: ASYNC230 - at start, small
            lines = spool.read().splitlines()
        latest: dict[str, dict[str, Any]] = {}  # the last line of a ref is its latest state
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                row = dict(entry["row"])
                row["started_at"] = float(row["started_at"])
                if not (row["device_id"] and row["type"]):
                    raise ValueError("no device_id or type")
                latest[str(entry["ref"])] = row
            except (ValueError, KeyError, TypeError) as err:
                _LOGGER.error("Alarm spool %s line %d unreadable (%s), skipped: %.200s",
                              self.spool_path, number, err, line)
        kept: dict[str, dict[str, Any]] = {}
        for ref, row in latest.items():
            try:
                row = await self._write_spooled(row)
            except Exception as err:  # noqa: BLE001 - one bad line must not stop the hub
                _LOGGER.error("Alarm spool %s: %s %s not written (%s: %s); kept for the next "
                              "start", self.spool_path, row.get("device_id"), row.get("type"),
                              type(err).__name__, err)
                kept[ref] = {"ref": ref, "announced": True, "row": row}
                continue
            if row is None:
                continue  # written before the hub stopped (its spool line outlived it)
            self.spool_replayed += 1
            record = AlarmRecord.from_row(row)
            record.ref = ref
            self._replayed.append(record)
            self._written(record)
            _LOGGER.warning("Alarm %s %s from the spool written as record %s", record.device_id,
                            record.type, record.id)
        os.unlink(self.spool_path)
        for entry in kept.values():
            self._spooled[entry["ref"]] = entry
        if kept:
            self._spool_rewrite()

    async def _write_spooled(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Write one spooled row (None when it is already there); the row as stored."""
        assert self.store is not None
        if await self.store.find(row["device_id"], row["type"], row["started_at"]) is not None:
            return None
        row = {**row, "id": None}
        try:
            row["id"] = await self.store.insert(row)
            return row
        except DuplicateActiveAlarm:
            merged = await self.store.merge_active(row["device_id"], row["type"],
                                                   row.get("sources") or (), row["last_seen_at"])
            if merged is None:
                row["id"] = await self.store.insert(row)
                return row
            return merged

    @callback
    def _announce_replayed(self, event: Event) -> None:
        """Spooled records are announced again once the notifiers listen (at-least-once)."""
        replayed, self._replayed = self._replayed, []
        for record in replayed:
            self.raised_total += 1
            self.hub.bus.async_fire(EVENT_ALARM_RAISED, record.as_dict())

    def _enqueue(self, op: tuple[Any, ...]) -> None:
        self._ops.append(op)
        self._idle.clear()
        self._wake.set()

    async def _write_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops:
                op = self._ops[0]
                try:
                    await self._apply(op)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - the database may come back
                    self.write_errors += 1
                    if self.write_errors % 10 == 1:
                        _LOGGER.error("Alarm engine: write failed (%s: %s); retrying",
                                      type(err).__name__, err)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.05
                self._ops.popleft()
            self._idle.set()

    async def _apply(self, op: tuple[Any, ...]) -> None:
        what = op[0]
        bus = self.hub.bus
        if what == "insert":
            record, event_type = op[1], op[2]
            if record.id is None:
                event_type = await self._insert(record, event_type)
            self._written(record)
            if record.announce_handle is not None:
                record.announce_handle.cancel()
                record.announce_handle = None
            if record.announced:
                # Announced while the database stalled: now it has its row (or was folded
                # into another worker's): the same `ref`, with the id.
                self._spool_remove(record.ref)
                bus.async_fire(EVENT_ALARM_UPDATED, record.as_dict())
                return
            if event_type == EVENT_ALARM_RAISED:
                self.raised_total += 1
            origin, record.origin = record.origin, None
            bus.async_fire(event_type, record.as_dict(),
                           context=origin.child() if origin is not None else None)
        elif what == "update":
            record, event_type = op[1], op[2]
            if record.id is None:
                return  # its insert failed for good; nothing to update
            if self.store is not None:
                if event_type == EVENT_ALARM_CLEARED:
                    # Several workers may clear the same row (each saw the device's clear):
                    # only the one whose update ended the active state announces it.
                    if not await self.store.clear(record.id, record.row()):
                        self.cleared_elsewhere += 1
                        return
                elif record.status == STATUS_ACTIVE and \
                        not await self.store.update(record.id, record.row()):
                    # (A record cleared since this op was queued is written by its clear op.)
                    # Another worker cleared the row meanwhile: this record is stale. Forget
                    # it, so the next activation inserts a new record instead of reviving it.
                    self.cleared_elsewhere += 1
                    if self._active.get(record.key) is record:
                        del self._active[record.key]
                    return
            if event_type is not None:
                bus.async_fire(event_type, record.as_dict())
        elif what == "save_pending" and self.store is not None:
            await self.store.save_pending(op[1])
        elif what == "delete_pending" and self.store is not None:
            await self.store.delete_pending(op[1])
        elif what == "barrier" and not op[1].done():
            op[1].set_result(None)

    @staticmethod
    def _insert_row(record: AlarmRecord) -> dict[str, Any]:
        """An alarm or fault is inserted active even if it cleared while queued: its clear op
        follows and ends it through `store.clear`, the one path that tells whether this
        worker or another ended the row (and so who announces it). Inserting it cleared
        would also sidestep the unique index and leave a second row beside another worker's."""
        row = record.row()
        if record.kind != KIND_EVENT and row["status"] == STATUS_CLEARED:
            row.update(status=STATUS_ACTIVE, cleared_at=None, cleared_by=None)
        return row

    async def _insert(self, record: AlarmRecord, event_type: str) -> str:
        if self.store is None:
            self._next_memory_id += 1
            record.id = self._next_memory_id
            return event_type
        for _attempt in range(3):
            try:
                record.id = await self.store.insert(self._insert_row(record))
                return event_type
            except DuplicateActiveAlarm:
                row = await self.store.merge_active(record.device_id, record.type,
                                                    record.sources, record.last_seen_at)
                if row is None:
                    continue  # the other writer cleared it meanwhile: insert again
                record.id = int(row["id"])
                record.started_at = float(row["started_at"])
                record.count = int(row["count"])
                record.sources |= set(row["sources"])
                for name in ("acked_at", "acked_by", "handled_at", "handled_by", "note",
                             "context_id"):
                    setattr(record, name, row.get(name))
                return EVENT_ALARM_UPDATED
        raise RuntimeError(f"alarm {record.device_id}/{record.type}: active slot keeps changing")


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


__all__ = [
    "CONDITION_TYPES",
    "KIND_WORDS",
    "AlarmEngine",
    "AlarmNotStored",
    "AlarmRecord",
    "AlarmStore",
    "DuplicateActiveAlarm",
    "link_summary",
    "record_dict",
]
