"""One arc-fault detector (故障电弧探测器, afd-ref): its poll loop, the GB 50166 rule, control.

afd-ref is small (registers 0-4, 16, 32, 64), so one read of 0-16 per poll carries every
reading and the status bits; the threshold (32) is read at start, every `THRESHOLD_REFRESH`
polls and after a write. The loop follows the arcm plugin's patterns (conditions on transitions
only, `communication_lost` after N failed polls, `device_fault` on an exception answer,
read-back on every control call) without importing it: plugins never import each other.

Two sources hold the `arc_fault` alarm, so it clears only when both let go (and, as arc_fault
is latching in the alarm engine, only after a reset):
* `arc_fault` - the detector's own arc alarm bit (register 16 b0), which a detector latches;
* `arc_fault_hub` - the hub's GB 50166 rule on register 0: a one-second window with at least
  `threshold` half-cycles (register 32, default 14) raises it; GB 50166 says <= 9 must never
  alarm, >= 14 must. 10-13 are below the default threshold and do not alarm unless an admin sets
  the threshold lower. The hub's source lets go at the first window below the threshold.
Polling every second (the default on a LAN) sees every window; a slower poll (a metered DTU)
may miss a window, which the detector's latched bit still reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.context import Context
from hub.core.links import (
    LinkElsewhere,
    LinkError,
    LinkExceptionResponse,
    LinkProtocolError,
    LinkTimeout,
    LinkUnavailable,
    MeteredLink,
    PollSchedule,
)
from hub.core.platform import (
    CommandNotConfirmed,
    DeviceElsewhere,
    DeviceRejected,
    DeviceUnreachable,
)
from hub.core.polling import PollJob
from hub.core.services import ServiceError, ServiceValidationError
from hub.core.states import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, STATE_UNKNOWN, slugify

_LOGGER = logging.getLogger(__name__)

PLATFORM = "arc_fault"
SOURCE = "arc_fault"  # the detector's own bits
SOURCE_HUB = "arc_fault_hub"  # the hub's GB 50166 rule on the arc count

STATUS_READ = (0, 17)  # arc_count .. status bits in one request
THRESHOLD_REGISTER = 32
COMMAND_REGISTER = 64
THRESHOLD_REFRESH = 60  # polls between threshold reads (a change at the panel shows in ~1 min)
DEFAULT_THRESHOLD = 14
THRESHOLD_RANGE = (1, 100)
ARC_UNIT = "half-cycles/s"
CONFIRM_TIMEOUT = 5.0

B_ARC, B_SENSOR_FAULT, B_TRIPPED, B_MUTED, B_SELF_TEST = 0, 1, 2, 3, 4

#: command -> (code, status bit the read-back must show, value it must have, event fired)
COMMANDS: dict[str, tuple[int, int, int, str]] = {
    "trip": (1, B_TRIPPED, 1, "tripped"),
    "reset": (3, B_TRIPPED, 0, "reset"),
    "mute": (4, B_MUTED, 1, "muted"),
    "self_test": (5, B_SELF_TEST, 1, "self_test"),
}
PARAMETERS = {"arc_alarm_threshold": (THRESHOLD_REGISTER, *THRESHOLD_RANGE)}

_LABELS = {
    "arc_count": ("电弧半周波数", "Arc count"), "arc_total": ("电弧累计", "Arc total"),
    "current": ("电流", "Current"), "temperature": ("温度", "Temperature"),
    "breaker": ("断路器", "Breaker"), "online": ("在线", "Online"),
}
# name -> (unit, device_class)
_SENSORS: dict[str, tuple[str | None, str | None]] = {
    "arc_count": (ARC_UNIT, None), "arc_total": (None, None),
    "current": ("A", "current"), "temperature": ("°C", "temperature"),
}


def _s16(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


class ArcFaultDevice:
    """A detector on a link; created by the plugin from a validated device config."""

    def __init__(self, hub: Any, config: dict[str, Any], link: Any) -> None:
        self.hub = hub
        self.id: str = config["id"]
        self.name: str = config.get("name") or self.id
        self.link = link
        self.unit = int((config.get("link") or {}).get("unit", 1))
        self.obj = slugify(self.id)
        self.comm_loss_after = int(config.get("failed_polls_for_comm_loss", 3))
        self.metered = isinstance(link, MeteredLink)
        self.poll_interval, self.poll_interval_source = self._interval(config)
        english = str(getattr(hub, "language", "zh-CN")).lower().startswith("en")

        def attrs(name: str, **extra: Any) -> dict[str, Any]:
            zh, en = _LABELS[name]
            return {"friendly_name": f"{self.name} {en if english else zh}",
                    "device_id": self.id, **extra}

        self.sensors: dict[str, tuple[str, dict[str, Any]]] = {}
        for name, (unit, device_class) in _SENSORS.items():
            extra: dict[str, Any] = {}
            if unit:
                extra["unit_of_measurement"] = unit
            if device_class:
                extra["device_class"] = device_class
            self.sensors[name] = (f"sensor.{self.obj}_{name}", attrs(name, **extra))
        self.breaker_entity = f"switch.{self.obj}_breaker"
        self.breaker_attrs = attrs("breaker", device_class="switch")
        self.online_entity = f"binary_sensor.{self.obj}_online"
        self.online_attrs = attrs("online", device_class="connectivity",
                                  poll_interval=self.poll_interval)
        self.threshold = DEFAULT_THRESHOLD
        self.threshold_known = False
        self.status: int | None = None
        self.values: dict[str, float] = {}
        self.active: dict[tuple[str, str], Condition] = {}
        self.failures = 0
        self.polls = 0
        self.good_polls = 0
        self.online: bool | None = None
        self.last_error: str | None = None
        self._job: PollJob | None = None
        self._withdraw: Callable[[], None] | None = None
        self._poll_done: list[Callable[[ArcFaultDevice], None]] = []
        self._command_context: Context | None = None

    def _interval(self, config: dict[str, Any]) -> tuple[float, str]:
        """The device's own poll_interval, else a metered link's status tier, else 1 s.

        One second is what the GB 50166 window asks for on a LAN; behind a paid DTU the link's
        status interval rules, and the detector's latched bit covers the windows in between.
        """
        if config.get("poll_interval") is not None:
            return float(config["poll_interval"]), "device"
        if self.metered:
            try:
                hinted = (self.link.polling_defaults() or {}).get("status_interval")
            except Exception:  # a link's hint must never stop a detector
                _LOGGER.exception("%s: link polling defaults failed", self.id)
                hinted = None
            if hinted:
                return float(hinted), "link"
        return 1.0, "default"

    # -- entities -------------------------------------------------------------------------
    async def async_register_entities(self) -> None:
        entities, states = self.hub.entities, self.hub.states
        rows = [*self.sensors.items(), ("breaker", (self.breaker_entity, self.breaker_attrs)),
                ("online", (self.online_entity, self.online_attrs))]
        for name, (entity_id, attrs) in rows:
            await entities.async_register(
                entity_id, PLATFORM, device_id=self.id, unique_id=f"{self.id}:{name}",
                name=attrs["friendly_name"], unit=attrs.get("unit_of_measurement"),
                device_class=attrs.get("device_class"))
            if states.get(entity_id) is None:
                states.async_set(entity_id, STATE_OFF if name == "online" else STATE_UNKNOWN,
                                 attrs)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self.metered:
            schedule = PollSchedule(device_id=self.id, unit=self.unit,
                                    status_reads=[STATUS_READ],
                                    status_interval=self.poll_interval,
                                    measure_reads=[], measure_interval=self.poll_interval)
            try:
                self._withdraw = self.link.declare_schedule(schedule)
            except Exception:  # accounting must never stop a detector
                _LOGGER.exception("%s: declaring the poll schedule failed", self.id)
        # One task per link walks its units (hub.core.polling); spread over the first second.
        self._job = self.hub.links.scheduler(self.link).add_periodic(
            f"arc_fault {self.id}", self.poll_once, self.poll_interval,
            min(self.poll_interval, 1.0))

    async def stop(self) -> None:
        """Stop polling (a poll in flight is cancelled; the link's other units go on)."""
        withdraw, self._withdraw = self._withdraw, None
        if withdraw is not None:
            withdraw()
        job, self._job = self._job, None
        if job is not None:
            await job.cancel()

    def add_poll_listener(self, listener: Callable[[ArcFaultDevice], None]) -> Callable[[], None]:
        """Called after every poll (tests await polls instead of sleeping)."""
        self._poll_done.append(listener)
        return lambda: self._poll_done.remove(listener) if listener in self._poll_done else None

    # -- reading --------------------------------------------------------------------------
    async def read_threshold(self) -> int:
        [word] = await self.link.read_holding_registers(self.unit, THRESHOLD_REGISTER, 1)
        self.threshold, self.threshold_known = word, True
        return word

    async def poll_once(self) -> bool:
        self.polls += 1
        try:
            if not self.threshold_known or self.good_polls % THRESHOLD_REFRESH == 0:
                await self.read_threshold()
            words = await self.link.read_holding_registers(self.unit, *STATUS_READ)
        except LinkError as err:
            self._failed(err)
            ok = False
        else:
            self._apply(words, time.time())
            ok = True
        for listener in list(self._poll_done):
            listener(self)
        return ok

    def _apply(self, words: list[int], now: float, context: Context | None = None) -> None:
        states = self.hub.states
        count = words[0]
        values = {"arc_count": count, "arc_total": (words[1] << 16) | words[2],
                  "current": round(words[3] / 100, 2),
                  "temperature": round(_s16(words[4]) / 10, 1)}
        self.values = values
        for name, value in values.items():
            entity_id, attrs = self.sensors[name]
            if name == "arc_count":
                attrs = {**attrs, "threshold": self.threshold}
            states.async_set(entity_id, value, attrs, timestamp=now)
        self.failures = 0
        self.good_polls += 1
        self.last_error = None
        self.online_attrs.pop("worker", None)
        self._set_online(True, now)
        for type_ in ("communication_lost", "device_fault"):
            if (type_, SOURCE) in self.active and type_ not in self._bit_faults(words[16]):
                self._set(type_, False, now)
        # GB 50166 at the hub: this window against the threshold.
        self._arc_rule(count, now)
        self._status(words[16], now, context)

    def _arc_rule(self, count: int, now: float) -> None:
        over = count >= self.threshold
        if over != ((("arc_fault", SOURCE_HUB)) in self.active):
            self._set("arc_fault", over, now, source=SOURCE_HUB,
                      detail=f"{count}半周波/秒 ≥ {self.threshold}" if over else None,
                      detail_en=f"{count} half-cycles/s >= {self.threshold}" if over else None)

    @staticmethod
    def _bit_faults(status: int) -> set[str]:
        return {"device_fault"} if status >> B_SENSOR_FAULT & 1 else set()

    def _status(self, status: int, now: float, context: Context | None) -> None:
        context = context or self._command_context
        old, self.status = self.status, status
        arc = bool(status >> B_ARC & 1)
        if arc != (("arc_fault", SOURCE) in self.active):
            self._set("arc_fault", arc, now, context=context,
                      detail=f"探测器报警 {self.values.get('arc_count', 0)}半周波/秒" if arc
                      else None,
                      detail_en=f"detector alarm, {self.values.get('arc_count', 0)} "
                                "half-cycles/s" if arc else None)
        sensor_fault = bool(status >> B_SENSOR_FAULT & 1)
        if sensor_fault != (("device_fault", SOURCE) in self.active):
            self._set("device_fault", sensor_fault, now, context=context,
                      detail="电弧传感器故障" if sensor_fault else None,
                      detail_en="arc sensor fault" if sensor_fault else None)
        tripped = bool(status >> B_TRIPPED & 1)
        self.hub.states.async_set(self.breaker_entity, STATE_OFF if tripped else STATE_ON,
                                  self.breaker_attrs, context=context, timestamp=now)
        if old is None or self._command_context is not None:
            return  # the first poll only learns; a command fires its own event on read-back
        for bit, event in ((B_TRIPPED, "tripped"), (B_MUTED, "muted"),
                           (B_SELF_TEST, "self_test")):
            if status >> bit & 1 and not old >> bit & 1:
                self._fire(Condition.create(self.id, event, True, timestamp=now,
                                            source=SOURCE), context)
        if old >> B_TRIPPED & 1 and not tripped:
            self._fire(Condition.create(self.id, "closed", True, entity_id=self.breaker_entity,
                                        timestamp=now, source=SOURCE), context)

    def _set(self, type_: str, active: bool, now: float, *, source: str = SOURCE,
             context: Context | None = None, detail: str | None = None,
             detail_en: str | None = None) -> None:
        entity_id = self.sensors["arc_count"][0] if type_ == "arc_fault" else self.online_entity
        self._fire(Condition.create(self.id, type_, active, entity_id=entity_id, detail=detail,
                                    detail_en=detail_en, timestamp=now, source=source), context)

    def _fire(self, condition: Condition, context: Context | None = None) -> None:
        if condition.kind != "event":
            key = (condition.type, condition.source)
            if condition.active:
                self.active[key] = condition
            else:
                self.active.pop(key, None)
        self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict(), context=context)

    def _set_online(self, online: bool, now: float) -> None:
        self.online = online
        self.hub.states.async_set(self.online_entity, STATE_ON if online else STATE_OFF,
                                  self.online_attrs, timestamp=now)

    def _failed(self, err: LinkError) -> None:
        now = time.time()
        if isinstance(err, LinkElsewhere):
            self._elsewhere(err, now)
            return
        self.failures += 1
        self.last_error = str(err)
        if isinstance(err, LinkExceptionResponse | LinkProtocolError) and \
                ("device_fault", SOURCE) not in self.active:
            _LOGGER.warning("%s: %s", self.id, err)
            detail = f"异常码 {err.code}" if isinstance(err, LinkExceptionResponse) else "应答帧错误"
            self._set("device_fault", True, now, detail=detail, detail_en=str(err))
        if self.failures < self.comm_loss_after:
            return
        if isinstance(err, LinkTimeout | LinkUnavailable):
            if ("communication_lost", SOURCE) not in self.active:
                _LOGGER.warning("%s: communication lost after %d failed polls: %s", self.id,
                                self.failures, err)
                self._set("communication_lost", True, now)
            self._set_online(False, now)
        if self.failures == self.comm_loss_after:
            for entity_id, attrs in self.sensors.values():
                self.hub.states.async_set(entity_id, STATE_UNAVAILABLE, attrs, timestamp=now)

    # -- remote control -------------------------------------------------------------------
    def _elsewhere(self, err: LinkElsewhere, now: float) -> None:
        """Another worker drives the link: it polls and raises; this one only shows it.

        Not a failed poll (no `communication_lost` here, ever: the owner raises it when the
        unit is silent). Shown as online, connected to that worker (`worker` attribute).
        """
        self.failures = 0
        self.last_error = str(err)
        if self.online_attrs.get("worker") != err.owner:
            self.online_attrs["worker"] = err.owner
        self._set_online(True, now)
        if ("communication_lost", SOURCE) in self.active:
            self._set("communication_lost", False, now)

    def _link_failure(self, err: LinkError, what: str, sent: bool = False) -> ServiceError:
        """The service error for a link failure; `sent`: part of the call already went out
        (a command written before its read-back), so another worker must not repeat it."""
        if isinstance(err, LinkElsewhere):
            return DeviceElsewhere.for_link(self.id, what, err, sent=sent)
        if isinstance(err, LinkExceptionResponse):
            return DeviceRejected(f"{self.id}: device refused {what}: exception code {err.code}")
        if isinstance(err, LinkProtocolError):
            return DeviceRejected(f"{self.id}: malformed answer to {what}: {err}")
        return DeviceUnreachable(f"{self.id}: no answer to {what}: {err}")

    async def _read_back(self, context: Context) -> int:
        try:
            words = await self.link.read_holding_registers(self.unit, *STATUS_READ)
        except LinkError as err:
            raise self._link_failure(err, "the status read-back", sent=True) from err
        self._apply(words, time.time(), context)
        return words[16]

    async def command(self, name: str, context: Context) -> dict[str, Any]:
        """Write the command code; answer only when the status read-back shows its result."""
        code, bit, wanted, event = COMMANDS[name]
        _LOGGER.info("arc_fault.%s on %s (context %s, user %s)", name, self.id, context.id,
                     context.user_id)
        self._command_context = context
        try:
            try:
                await self.link.write_register(self.unit, COMMAND_REGISTER, code)
            except LinkError as err:
                raise self._link_failure(err, name) from err
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CONFIRM_TIMEOUT
            status = await self._read_back(context)
            while (status >> bit & 1) != wanted:
                if loop.time() >= deadline:
                    raise CommandNotConfirmed(
                        f"{self.id}: {name} not confirmed within {CONFIRM_TIMEOUT:g}s "
                        f"(status bits {status:#06x})")
                await asyncio.sleep(0.1)  # the device's own pace; bounded by the deadline
                status = await self._read_back(context)
        finally:
            self._command_context = None
        # After the read-back applied the cleared arc bit: a reset finds no source holding
        # the latched alarm and clears it at once.
        self._fire(Condition.create(self.id, event, True, entity_id=self.breaker_entity,
                                    source=SOURCE), context)
        _LOGGER.info("arc_fault.%s on %s confirmed (context %s)", name, self.id, context.id)
        return {"device_id": self.id, "command": name, "confirmed": True,
                "status": status, "breaker": "tripped" if status >> B_TRIPPED & 1 else "closed"}

    async def set_parameter(self, name: str, value: Any, context: Context) -> dict[str, Any]:
        if name not in PARAMETERS:
            raise ServiceValidationError(
                f"{self.id}: unknown parameter {name!r}; known: {', '.join(PARAMETERS)}")
        address, low, high = PARAMETERS[name]
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise ServiceValidationError(f"{name} must be a number (got {value!r})") from err
        if not number.is_integer() or not low <= number <= high:
            raise ServiceValidationError(f"{name} must be a whole number {low}–{high} "
                                         f"(got {value!r})")
        _LOGGER.info("arc_fault.set_parameter %s=%d on %s (context %s, user %s)", name,
                     int(number), self.id, context.id, context.user_id)
        written = False
        try:
            previous = await self.read_threshold()
            await self.link.write_register(self.unit, address, int(number))
            written = True
            confirmed = await self.read_threshold()
        except LinkError as err:
            raise self._link_failure(err, f"set_parameter {name}", sent=written) from err
        if confirmed != int(number):
            raise DeviceRejected(f"{self.id}: wrote {name}={int(number)} but the device keeps "
                                 f"{confirmed}")
        return {"device_id": self.id, "name": name, "value": confirmed, "unit": ARC_UNIT,
                "previous": previous, "confirmed": True}
