"""Traffic accounting and data budgets per DTU (issue #13).

A DTU's SIM plan bills every byte at the carrier's gateway: our Modbus bytes, and also the
TCP/IP headers, ACKs, handshakes and retransmissions the hub never sees as data. So usage here is
the payload the hub counted plus a modelled overhead (`OverheadModel`, docs/plugins/gsm.md
"Traffic model"), accumulated per local day and calendar month and written to the core's `kv`
table once a minute and at shutdown (never per frame).

Nothing on the hot path: the server already keeps plain cumulative counters per DTU (bytes,
requests, replies, heartbeats, connects); `settle()` turns their growth since the last settle
into usage. The projection is model-based: detectors declare their regular reads
(`hub.core.links.PollSchedule`), so the hub knows what a month at the current settings costs
without waiting a month to find out; month-to-date usage is the measured part.

Over budget, the measurement tier of every detector behind the DTU is stretched until the
projection fits (never the status tier: that is what makes an alarm reach people), a
`data_budget_exceeded` event (流量超预算) is fired once per month, and the reason is shown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.links import PollSchedule

from .settings import MB, TrafficSettings

if TYPE_CHECKING:
    from .server import Dtu, GsmServer

_LOGGER = logging.getLogger(__name__)

KEY_PREFIX = "gsm.traffic."
STATUS_OK = "ok"
STATUS_STRETCHED = "stretched"
STATUS_OVER = "over_budget"
STATUS_IDLE = "idle"  # nothing polled: only heartbeats count

# Modbus-RTU frame sizes: a read request is 8 bytes, its reply 5 + 2 per register.
READ_REQUEST = 8


def read_reply(count: int) -> int:
    return 5 + 2 * count


# Heartbeat intervals a recommendation picks from (common DTU configuration-tool choices).
HEARTBEAT_LADDER = (30.0, 60.0, 120.0, 180.0, 300.0, 600.0)
# Share of the budget heartbeats may take in a recommendation: they buy reconnect speed after a
# hub restart and DTU-level loss detection, which polls already give in part.
HEARTBEAT_SHARE = 0.10


def mb(value: float) -> float:
    return round(value / MB, 2)


def _fmt_interval(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 < 1:
        return f"{seconds / 3600:.0f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m".replace(".0m", "m")
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class OverheadModel:
    """What the SIM bill adds to the bytes the hub sees (all numbers from `gsm.traffic`)."""

    settings: TrafficSettings

    @property
    def factor(self) -> float:
        return 1.0 + self.settings.cellular_overhead

    def exchange(self, request: int, reply: int) -> float:
        """Billed bytes of one request/reply: 2 data packets plus the pure ACKs."""
        t = self.settings
        return (request + reply + t.ip_overhead * (2 + t.acks_per_exchange)) * self.factor

    def heartbeat(self, size: int) -> float:
        t = self.settings
        return (size + t.ip_overhead * (1 + t.acks_per_heartbeat)) * self.factor

    def overhead(self, requests: int, replies: int, heartbeats: int, connects: int,
                 other_packets: int) -> float:
        """Modelled header bytes for counted events (before the cellular percentage).

        A request is one packet down plus `acks_per_exchange` ACKs (also when unanswered: the
        DTU's TCP still acknowledges it); a reply, a garbage burst and the registration packet
        are one packet up; a heartbeat is one packet plus `acks_per_heartbeat`; a connection
        adds its handshake and teardown and the ACK of the registration.
        """
        t = self.settings
        packets = (requests * (1 + t.acks_per_exchange) + replies
                   + heartbeats * (1 + t.acks_per_heartbeat) + connects * 2 + other_packets)
        return packets * t.ip_overhead + connects * t.connect_overhead


@dataclass(slots=True)
class Usage:
    """Bytes in one period: payload up/down as the hub saw them, modelled overhead, and the
    bytes a flooding DTU sent that the hub dropped over its rate limits (`dropped`): never
    parsed, but carried over the SIM and billed, so they count against the budget too."""

    up: float = 0.0
    down: float = 0.0
    overhead: float = 0.0
    dropped: float = 0.0

    def add(self, other: Usage) -> None:
        self.up += other.up
        self.down += other.down
        self.overhead += other.overhead
        self.dropped += other.dropped

    def total(self, factor: float) -> float:
        """The estimate of what the carrier bills (payload + dropped + overhead, plus the
        percentage)."""
        return (self.up + self.down + self.dropped + self.overhead) * factor

    def as_list(self) -> list[float]:
        return [round(self.up), round(self.down), round(self.overhead, 1), round(self.dropped)]

    @classmethod
    def from_list(cls, value: Any) -> Usage:
        """Rows written before `dropped` existed have three numbers."""
        numbers = [float(x) for x in list(value)[:4]]
        up, down, overhead = numbers[:3]
        return cls(up, down, overhead, numbers[3] if len(numbers) > 3 else 0.0)


_COUNTERS = ("bytes_up", "bytes_down", "requests", "frames", "crc_errors", "heartbeats",
             "connects", "garbage", "throttled", "dropped_bytes")


@dataclass
class DtuTraffic:
    """One DTU's usage this month, its declared schedules and its budget state."""

    imei: str
    month: str
    days: dict[str, Usage] = field(default_factory=dict)
    snapshot: dict[str, int] = field(default_factory=dict)
    schedules: list[PollSchedule] = field(default_factory=list)
    status: str = STATUS_IDLE
    reason: str | None = None
    reason_en: str | None = None
    projected: float = 0.0
    projected_unstretched: float = 0.0
    rate: float = 0.0  # billed bytes per second at the current settings
    rate_unstretched: float = 0.0  # the same before any budget stretch
    month_seconds: float = 0.0  # length of the current calendar month
    fit_status_interval: float | None = None
    exceeded_month: str | None = None
    dirty: bool = False
    session: Usage = field(default_factory=Usage)  # since this process started
    # The other workers' usage of this DTU this month (their kv rows, read at load and at
    # every flush): the SIM's bill is the whole fleet's, so the budget counts it too.
    others: Usage = field(default_factory=Usage)

    def month_usage(self) -> Usage:
        total = Usage()
        for usage in self.days.values():
            total.add(usage)
        total.add(self.others)
        return total


class TrafficManager:
    """Per-DTU usage, projection and budget for one `GsmServer`."""

    def __init__(self, server: GsmServer, settings: TrafficSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.server = server
        self.settings = settings
        self.model = OverheadModel(settings)
        self.clock = clock
        self.dtus: dict[str, DtuTraffic] = {}
        self._stored: set[str] = set()
        zone = getattr(server.hub, "time_zone", None) or "Asia/Shanghai"
        try:
            self.tz: dt.tzinfo = ZoneInfo(zone)
        except (KeyError, ValueError):  # a bad zone name must not stop accounting
            _LOGGER.warning("GSM traffic: unknown time zone %r; using UTC", zone)
            self.tz = dt.UTC
        self.flushes = 0

    # -- calendar -------------------------------------------------------------------------
    def _local(self, now: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(now, self.tz)

    def month_of(self, now: float) -> str:
        return self._local(now).strftime("%Y-%m")

    def day_of(self, now: float) -> str:
        return self._local(now).strftime("%Y-%m-%d")

    def month_bounds(self, now: float) -> tuple[float, float]:
        """Unix start and end of the calendar month (hub time zone) containing `now`."""
        local = self._local(now)
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        return start.timestamp(), end.timestamp()

    # -- per DTU --------------------------------------------------------------------------
    def entry(self, imei: str, now: float | None = None) -> DtuTraffic:
        found = self.dtus.get(imei)
        if found is None:
            now = self.clock() if now is None else now
            # The snapshot starts at zero: a Dtu's counters start at zero when it is created,
            # and the manager lives as long as the server.
            found = self.dtus[imei] = DtuTraffic(imei, self.month_of(now))
        return found

    def budget(self, imei: str) -> int:
        return int(self.server.settings.for_dtu(imei, "budget"))

    def heartbeat_interval(self, imei: str) -> float:
        return float(self.server.settings.for_dtu(imei, "heartbeat_interval"))

    def declare(self, imei: str, schedule: PollSchedule) -> Callable[[], None]:
        """A detector behind `imei` polls like this; re-evaluate the budget at once."""
        entry = self.entry(imei)
        entry.schedules.append(schedule)
        self.evaluate(entry)

        def withdraw() -> None:
            if schedule in entry.schedules:
                entry.schedules.remove(schedule)
                self.evaluate(entry)

        return withdraw

    # -- accounting -----------------------------------------------------------------------
    def settle(self, now: float | None = None) -> None:
        """Move counter growth since the last settle into today's usage; re-check budgets."""
        now = self.clock() if now is None else now
        month, day = self.month_of(now), self.day_of(now)
        for imei, dtu in self.server.dtus.items():
            entry = self.entry(imei, now)
            self._settle_one(entry, dtu, month, day)
        for entry in self.dtus.values():
            if entry.month != month:
                self._roll_month(entry, month)
            self.evaluate(entry, now)

    def _settle_one(self, entry: DtuTraffic, dtu: Dtu, month: str, day: str) -> None:
        current = {name: getattr(dtu, name) for name in _COUNTERS}
        old = entry.snapshot
        delta = {name: current[name] - old.get(name, 0) for name in _COUNTERS}
        entry.snapshot = current
        if not any(delta.values()):
            return
        if entry.month != month:
            self._roll_month(entry, month)
        usage = Usage(
            up=delta["bytes_up"], down=delta["bytes_down"], dropped=delta["dropped_bytes"],
            overhead=self.model.overhead(
                requests=delta["requests"], replies=delta["frames"] + delta["crc_errors"],
                heartbeats=delta["heartbeats"], connects=delta["connects"],
                other_packets=delta["garbage"] + delta["throttled"]),
        )
        entry.days.setdefault(day, Usage()).add(usage)
        entry.session.add(usage)
        entry.dirty = True

    def _roll_month(self, entry: DtuTraffic, month: str) -> None:
        """A new calendar month: a new budget, so any stretch is undone and may come back."""
        _LOGGER.info("GSM traffic: DTU %s starts month %s (last: %.2f MB)", entry.imei, month,
                     entry.month_usage().total(self.model.factor) / MB)
        entry.month = month
        entry.days = {}
        entry.others = Usage()
        entry.dirty = True

    # -- projection and budget ------------------------------------------------------------
    def _schedule_rates(self, schedule: PollSchedule) -> tuple[float, float]:
        """(status bytes per second, measurement bytes per poll) of one detector."""
        ex = self.model.exchange
        status = sum(ex(READ_REQUEST, read_reply(c)) for _a, c in schedule.status_reads)
        measure = sum(ex(READ_REQUEST, read_reply(c)) for _a, c in schedule.measure_reads)
        return status / schedule.status_interval, measure

    def _measure_rate(self, schedules: list[PollSchedule], scale: float) -> float:
        cap = self.settings.max_measure_interval
        rate = 0.0
        for schedule in schedules:
            _status, per_poll = self._schedule_rates(schedule)
            interval = min(schedule.measure_interval * scale,
                           max(cap, schedule.measure_interval))
            rate += per_poll / interval
        return rate

    def evaluate(self, entry: DtuTraffic, now: float | None = None) -> None:
        """Project the month at the current settings; stretch measurements to fit the budget."""
        now = self.clock() if now is None else now
        month = self.month_of(now)
        if entry.month != month:
            self._roll_month(entry, month)
        imei = entry.imei
        budget = self.budget(imei)
        factor = self.model.factor
        heartbeat = self.model.heartbeat(len(self.server.settings.heartbeat)) \
            / self.heartbeat_interval(imei)
        schedules = entry.schedules
        status_rate = sum(self._schedule_rates(s)[0] for s in schedules)
        fixed = status_rate + heartbeat
        start, end = self.month_bounds(now)
        entry.month_seconds = end - start
        remaining = max(0.0, end - now)
        used = entry.month_usage().total(factor)
        measure1 = self._measure_rate(schedules, 1.0)
        entry.rate_unstretched = fixed + measure1
        entry.projected_unstretched = used + entry.rate_unstretched * remaining

        # The common status interval that would fit with measurements at their set interval.
        cycle = sum(self._schedule_rates(s)[0] * s.status_interval for s in schedules)
        room = (budget - used) / remaining - heartbeat - measure1 if remaining > 0 else 0.0
        entry.fit_status_interval = math.ceil(cycle / room) if cycle and room > 0 else None

        old_status = entry.status
        if not schedules:
            scale, status = 1.0, STATUS_IDLE
        elif entry.projected_unstretched <= budget:
            scale, status = 1.0, STATUS_OK
        else:
            available = (budget - used) / remaining - fixed if remaining > 0 else -1.0
            cap = max(max(self.settings.max_measure_interval, s.measure_interval)
                      / s.measure_interval for s in schedules)
            if available <= self._measure_rate(schedules, cap):
                scale, status = cap, STATUS_OVER
            else:
                low, high = 1.0, cap
                for _ in range(40):
                    mid = (low + high) / 2
                    if self._measure_rate(schedules, mid) <= available:
                        high = mid
                    else:
                        low = mid
                scale, status = math.ceil(high * 100) / 100, STATUS_STRETCHED
        measure = self._measure_rate(schedules, scale)
        entry.rate = fixed + measure
        entry.projected = used + entry.rate * remaining
        entry.status = status
        entry.reason, entry.reason_en = self._reason(entry, budget, scale, status, heartbeat,
                                                     remaining)
        self._apply_scale(entry, scale)
        over = status in (STATUS_STRETCHED, STATUS_OVER)
        if over and old_status != status:
            _LOGGER.warning("GSM: DTU %s over its data budget: %s", imei, entry.reason_en)
        if over and entry.exceeded_month != entry.month and self._fire_exceeded(entry):
            # Once per month; retried while the DTU is not yet registered at start.
            entry.exceeded_month = entry.month
            entry.dirty = True
        if status == STATUS_OK and old_status in (STATUS_STRETCHED, STATUS_OVER):
            _LOGGER.info("GSM: DTU %s fits its data budget again", imei)

    def _reason(self, entry: DtuTraffic, budget: int, scale: float, status: str,
                heartbeat: float, remaining: float) -> tuple[str | None, str | None]:
        if status not in (STATUS_STRETCHED, STATUS_OVER):
            return None, None
        first = min(entry.schedules, key=lambda s: s.measure_interval)
        stretched = _fmt_interval(min(first.measure_interval * scale,
                                      max(self.settings.max_measure_interval,
                                          first.measure_interval)))
        base = _fmt_interval(first.measure_interval)
        projected = f"{mb(entry.projected_unstretched):g}MB"
        limit = f"{mb(budget):g}MB"
        if status == STATUS_STRETCHED:
            zh = (f"本月预计 {projected} 超过预算 {limit}，测量间隔 {base} 延长至 {stretched}，"
                  "状态间隔不变")
            en = (f"projected {projected} this month > budget {limit}: measurement interval "
                  f"stretched {base} -> {stretched}; status interval unchanged")
            return zh, en
        if entry.fit_status_interval:
            hint_zh = f"；状态间隔需 ≥ {entry.fit_status_interval}s 或提高预算"
            hint_en = (f"; set status_interval >= {entry.fit_status_interval}s or raise the "
                       "budget")
        else:
            hint_zh, hint_en = "；请提高预算", "; raise the budget"
        zh = (f"本月预计 {projected} 超过预算 {limit}：状态轮询与心跳已超预算，测量间隔已延长至"
              f"上限 {stretched}{hint_zh}")
        en = (f"projected {projected} this month > budget {limit}: status polling and "
              f"heartbeats alone exceed it; measurement interval at its limit {stretched}"
              f"{hint_en}")
        return zh, en

    def _apply_scale(self, entry: DtuTraffic, scale: float) -> None:
        """Tell each poller its new measurement scale; small drifts are not worth a change."""
        cap = self.settings.max_measure_interval
        reason = entry.reason_en
        for schedule in entry.schedules:
            interval = min(schedule.measure_interval * scale, max(cap, schedule.measure_interval))
            new = interval / schedule.measure_interval
            old = schedule.measure_scale
            changed = abs(new - old) > 0.02 * old or (new == 1.0) != (old == 1.0)
            flipped = (reason is None) != (schedule.reason is None)
            schedule.reason = reason
            if not (changed or flipped):
                continue
            if changed:
                schedule.measure_scale = new
            for callback_ in list(schedule.on_change):
                try:
                    callback_()
                except Exception:  # one poller's hiccup must not stop the rest
                    _LOGGER.exception("GSM: schedule change callback for %s failed",
                                      schedule.device_id)

    def _fire_exceeded(self, entry: DtuTraffic) -> bool:
        server = self.server
        dtu = server.dtus.get(entry.imei)
        if dtu is None or not dtu.known or server.stopping or not server.started:
            return False
        condition = Condition.create(
            dtu.device_id, "data_budget_exceeded", True, entity_id=dtu.entity_id,
            value=mb(entry.projected_unstretched), unit="MB", detail=entry.reason,
            detail_en=entry.reason_en, source="gsm")
        server.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
        return True

    # -- heartbeat advice -----------------------------------------------------------------
    def recommend_heartbeat(self, entry: DtuTraffic) -> dict[str, float]:
        """The DTU heartbeat and `heartbeat_timeout` this budget suggests (docs: trade-off).

        The shortest interval whose heartbeats take at most 10 % of the budget and keep the
        projection inside it; the timeout covers two lost heartbeats plus a round trip. Polls
        prove liveness too, so detectors behind a polled DTU report their own loss sooner.
        """
        imei = entry.imei
        budget = self.budget(imei)
        month = 31 * 86400.0
        size = len(self.server.settings.heartbeat)
        current = self.model.heartbeat(size) / self.heartbeat_interval(imei)
        others = entry.rate - current
        chosen = HEARTBEAT_LADDER[-1]
        for interval in HEARTBEAT_LADDER:
            cost = self.model.heartbeat(size) / interval * month
            if cost <= HEARTBEAT_SHARE * budget and (others * month + cost) <= budget:
                chosen = interval
                break
        settings = self.server.settings
        slack = settings.request_timeout * (1 + settings.retries) + 30.0
        return {"heartbeat_interval": chosen,
                "heartbeat_timeout": math.ceil((2 * chosen + slack) / 10) * 10,
                "heartbeat_bytes_month": round(self.model.heartbeat(size) / chosen * month)}

    # -- reporting ------------------------------------------------------------------------
    def report(self, imei: str) -> dict[str, Any]:
        entry = self.entry(imei)
        now = self.clock()
        factor = self.model.factor
        today = entry.days.get(self.day_of(now), Usage()) if entry.month == self.month_of(now) \
            else Usage()
        month = entry.month_usage()
        budget = self.budget(imei)

        def usage(u: Usage) -> dict[str, Any]:
            return {"up": round(u.up), "down": round(u.down), "overhead": round(u.overhead),
                    "dropped": round(u.dropped),
                    "total": round(u.total(factor)), "total_mb": mb(u.total(factor))}

        return {
            "today": {"date": self.day_of(now), **usage(today)},
            "month": {"month": entry.month, **usage(month)},
            "projected_month": round(entry.projected),
            "projected_month_mb": mb(entry.projected),
            "projected_unstretched_mb": mb(entry.projected_unstretched),
            "budget": budget,
            "budget_mb": mb(budget),
            "status": entry.status,
            "reason": entry.reason,
            "reason_en": entry.reason_en,
            "rate_bytes_per_day": round(entry.rate * 86400),
            # A whole calendar month at the current settings, whatever day it is today.
            "full_month_mb": mb(entry.rate * entry.month_seconds),
            "full_month_unstretched_mb": mb(entry.rate_unstretched * entry.month_seconds),
            "fit_status_interval": entry.fit_status_interval,
            "heartbeat": {
                "interval": self.heartbeat_interval(imei),
                "timeout": self.server.settings.for_dtu(imei, "heartbeat_timeout"),
                "recommended": self.recommend_heartbeat(entry),
            },
            "schedules": [
                {"device_id": s.device_id, "unit": s.unit, "status_interval": s.status_interval,
                 "measure_interval": s.measure_interval,
                 "effective_measure_interval": round(s.effective_measure_interval, 1),
                 "measure_scale": s.measure_scale}
                for s in entry.schedules
            ],
        }

    def stats(self) -> dict[str, float]:
        factor = self.model.factor
        session = Usage()
        month_total = month_dropped = projected = 0.0
        over = unfit = 0
        for entry in self.dtus.values():
            session.add(entry.session)
            month = entry.month_usage()
            month_total += month.total(factor)
            month_dropped += month.dropped
            projected += entry.projected
            over += entry.status in (STATUS_STRETCHED, STATUS_OVER)
            unfit += entry.status == STATUS_OVER
        return {
            "gsm_bytes_overhead_total": round(session.overhead),
            "gsm_bytes_estimated_total": round(session.total(factor)),
            "gsm_bytes_month": round(month_total),
            "gsm_bytes_dropped_month": round(month_dropped),
            "gsm_bytes_projected_month": round(projected),
            "gsm_dtus_over_budget": over,
            "gsm_dtus_budget_unfit": unfit,
        }

    # -- persistence (core kv table) ------------------------------------------------------
    def _engine(self) -> Any:
        storage = getattr(self.server.hub, "storage", None)
        return getattr(storage, "engine", None) if storage is not None else None

    async def load(self) -> None:
        """This month's usage from the database, so a restart neither forgets nor doubles it."""
        engine = self._engine()
        if engine is None:
            return


        month = self.month_of(self.clock())
        for imei, worker, key, data, days in await self._read_month(engine, month):
            entry = self.entry(imei)
            entry.month = month
            if worker != self._worker():
                for usage in days.values():
                    entry.others.add(usage)
                continue
            for day, usage in days.items():
                entry.days.setdefault(day, Usage()).add(usage)
            entry.exceeded_month = data.get("exceeded_month")
            self._stored.add(key)

    def _worker(self) -> str | None:
        """This worker's id when several share the database (one kv row each), else None."""
        ownership = getattr(self.server, "ownership", None)
        return ownership.worker_id if ownership is not None and ownership.shared else None

    def _key(self, imei: str, month: str) -> str:
        worker = self._worker()
        base = f"{KEY_PREFIX}{imei}.{month}"
        return base if worker is None else f"{base}@{worker}"

    async def _read_month(self, engine: Any, month: str) -> list[tuple[
            str, str | None, str, dict[str, Any], dict[str, Usage]]]:
        """Every worker's rows of `month`: (imei, worker or None, key, data, days)."""
        from sqlalchemy import select

        from hub.storage.schema import kv

        suffix = f".{month}"
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(kv.c.key, kv.c.value).where(kv.c.key.like(f"{KEY_PREFIX}%{suffix}%"))
            )).all()
        out = []
        for key, value in rows:
            base, _, worker = key.partition("@")
            if not base.endswith(suffix):
                continue
            imei = base[len(KEY_PREFIX):-len(suffix)]
            try:
                data = json.loads(value or "{}")
                days = {day: Usage.from_list(u) for day, u in data.get("days", {}).items()}
            except (ValueError, TypeError) as err:
                _LOGGER.warning("GSM traffic: unreadable row %s: %s", key, err)
                continue
            out.append((imei, worker or None, key, data, days))
        return out

    async def flush(self) -> int:
        """Write the months that changed since the last flush; returns the rows written."""
        engine = self._engine()
        dirty = [e for e in self.dtus.values() if e.dirty and self._persisted(e.imei)]
        if engine is None or not dirty:
            return 0
        from sqlalchemy import bindparam, insert, update

        from hub.storage.schema import kv

        now = time.time()
        updates, inserts = [], []
        for entry in dirty:
            key = self._key(entry.imei, entry.month)
            value = json.dumps({
                "days": {day: u.as_list() for day, u in sorted(entry.days.items())},
                "exceeded_month": entry.exceeded_month,
            }, separators=(",", ":"))
            (updates if key in self._stored else inserts).append(
                {"k": key, "v": value, "t": now})
        async with engine.begin() as conn:
            if updates:
                await conn.execute(
                    update(kv).where(kv.c.key == bindparam("k"))
                    .values(value=bindparam("v"), updated_at=bindparam("t")), updates)
            if inserts and self._worker() is not None:
                # Several workers: our own row, but a restarted worker may not know it has
                # one yet; an upsert never collides (no `pk_kv` violation).
                for row in inserts:
                    await conn.execute(self._upsert(conn, kv, row))
            elif inserts:
                await conn.execute(insert(kv).values(key=bindparam("k"), value=bindparam("v"),
                                                     updated_at=bindparam("t")), inserts)
        for row in inserts:
            self._stored.add(row["k"])
        for entry in dirty:
            entry.dirty = False
        if self._worker() is not None:
            await self._read_others(engine, {e.month for e in dirty})
        self.flushes += 1
        return len(dirty)

    @staticmethod
    def _upsert(conn: Any, kv: Any, row: dict[str, Any]) -> Any:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(kv).values(key=row["k"], value=row["v"], updated_at=row["t"])
        return stmt.on_conflict_do_update(
            index_elements=[kv.c.key],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at})

    async def _read_others(self, engine: Any, months: set[str]) -> None:
        """Refresh every DTU's `others` (the other workers' rows) for these months."""
        me = self._worker()
        for month in months:
            others: dict[str, Usage] = {}
            for imei, worker, _key, _data, days in await self._read_month(engine, month):
                if worker == me:
                    continue
                total = others.setdefault(imei, Usage())
                for usage in days.values():
                    total.add(usage)
            for entry in self.dtus.values():
                if entry.month == month:
                    entry.others = others.get(entry.imei, Usage())

    def _persisted(self, imei: str) -> bool:
        """Known DTUs only: a flood of unknown ids must not fill the database."""
        dtu = self.server.dtus.get(imei)
        return dtu is not None and dtu.known

    async def run(self) -> None:
        """Settle and flush every `flush_interval` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            self.settle()
            try:
                await self.flush()
            except Exception:  # a database hiccup must not stop accounting
                _LOGGER.exception("GSM traffic: writing usage failed; will retry")

    async def close(self) -> None:
        """Final settle and write at shutdown."""
        self.settle()
        try:
            await self.flush()
        except Exception:
            _LOGGER.exception("GSM traffic: final write of usage failed")
