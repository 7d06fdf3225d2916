"""One ARCM detector: its poll loop, its entities, its conditions and its remote control.

The poll loop turns register blocks into entity states and `device_condition` events. It fires
conditions on transitions only, keeping the set of active (type -> Condition) per device, so a
residual current that stays at 550 mA for an hour is one alarm, not 3,600.

Two schedules (docs/plugins/arcm.md, "Polling"):
* flat - every register block every `poll_interval` (LAN links, where bytes are free);
* tiered - the small status tier (alarm, fault, relay bits) every `status_interval`, the
  measurement tier every `measure_interval` (stretched by a metered link that is over its data
  budget), setpoints and info at start and after a write. A new alarm bit triggers an
  immediate measurement read so the alarm message quotes a fresh value. Default behind a
  `MeteredLink` (a GSM DTU), or when the device sets a tier interval.

Sources of conditions and who clears them:
* alarm / fault bits and sentinels (0xFFFF, 0x7FFF) - recomputed on every good poll;
* `communication_lost` - after N failed polls in a row, cleared by the next good poll;
* `device_fault` - the unit answered with an exception code or a malformed frame, cleared by
  the next good poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
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
from hub.core.states import (
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    State,
    slugify,
)

from .decoding import BlockPlan, read_slot
from .profile import BitField, Profile, Register

SOURCE = "arcm"  # the `source` of every condition this plugin fires
_LOGGER = logging.getLogger(__name__)

PLATFORM = "arcm"

# Tier intervals when neither the device, its link, nor its profile says (issue #13: a DTU with
# two detectors should fit a one-yuan SIM plan; docs/plugins/gsm.md has the arithmetic).
DEFAULT_STATUS_INTERVAL = 10.0
DEFAULT_MEASURE_INTERVAL = 300.0
# Timers may fire a hair early; a tier this close to due is read now rather than next cycle.
_DUE_SLACK = 0.005

# Words for entity names (friendly_name = "<device name> <label>").
_LABELS: dict[str, tuple[str, str]] = {
    "residual_current": ("剩余电流", "Residual current"),
    "power": ("有功功率", "Power"),
    "energy": ("电能", "Energy"),
    "frequency": ("频率", "Frequency"),
    "breaker": ("断路器", "Breaker"),
    "online": ("在线", "Online"),
}
for _n in range(1, 5):
    _LABELS[f"temperature_{_n}"] = (f"温度{_n}", f"Temperature {_n}")
for _p in "abc":
    _P = _p.upper()
    _LABELS[f"voltage_{_p}"] = (f"{_P}相电压", f"Voltage {_P}")
    _LABELS[f"current_{_p}"] = (f"{_P}相电流", f"Current {_P}")
    _LABELS[f"voltage_thd_{_p}"] = (f"{_P}相电压谐波", f"Voltage THD {_P}")
    _LABELS[f"current_thd_{_p}"] = (f"{_P}相电流谐波", f"Current THD {_P}")

_EXCEPTION_WORDS: dict[int, tuple[str, str]] = {
    1: ("非法功能码", "illegal function"),
    2: ("非法数据地址", "illegal data address"),
    3: ("非法数据值", "illegal data value"),
    4: ("从站设备故障", "server device failure"),
    6: ("从站设备忙", "server device busy"),
    10: ("网关路径不可用", "gateway path unavailable"),
    11: ("网关目标设备无响应", "gateway target did not respond"),
}


def label(name: str, language: str) -> str:
    zh, en = _LABELS.get(name, (name, name.replace("_", " ").capitalize()))
    return en if language.lower().startswith("en") else zh


class ArcmDevice:
    """A detector on a link; created by the plugin from a validated device config."""

    def __init__(self, hub: Any, config: dict[str, Any], profile: Profile, link: Any,
                 clock: Callable[[], float] | None = None) -> None:
        self.hub = hub
        self.config = config
        self.id: str = config["id"]
        self.name: str = config.get("name") or self.id
        self.profile = profile
        self.link = link
        self.unit: int = int(config.get("link", {}).get("unit", 1))
        self.poll_interval = float(config.get("poll_interval", 1.0))
        # Monotonic seconds for the tier schedule; tests inject a fake one.
        self._clock: Callable[[], float] = clock or time.monotonic
        self._setup_polling(config)
        self.comm_loss_after = int(config.get("failed_polls_for_comm_loss", 3))
        self.obj = slugify(self.id)
        language = getattr(hub, "language", "zh-CN")
        self.language = language

        # entity_id and constant attributes per register, decided once.
        self._sensors: list[tuple[Register, str, dict[str, Any]]] = []
        for reg in profile.registers:
            if reg.entity != "sensor":
                continue
            entity_id = f"sensor.{self.obj}_{reg.name}"
            attrs = {"unit_of_measurement": reg.unit, "friendly_name":
                     f"{self.name} {label(reg.name, language)}", "device_id": self.id}
            if reg.device_class:
                attrs["device_class"] = reg.device_class
            self._sensors.append((reg, entity_id, attrs))
        self._entity_of = {reg.name: entity_id for reg, entity_id, _ in self._sensors}
        self._attrs = {entity_id: attrs for _reg, entity_id, attrs in self._sensors}
        # Per block read: what its words mean for this device and what they last said.
        self._plans: dict[int, BlockPlan] = {}
        self._unit_of = {reg.name: reg.unit for reg in profile.registers}
        self.breaker_entity = f"switch.{self.obj}_breaker" if profile.breaker_bit else None
        self._breaker_attrs = {"friendly_name": f"{self.name} {label('breaker', language)}",
                               "device_id": self.id, "device_class": "switch"}
        self._breaker_field = profile.relay_bits[profile.breaker_bit][0] \
            if profile.breaker_bit in profile.relay_bits else None
        self._breaker_text = STATE_UNKNOWN
        # The States last written for the breaker and online entities (see async_report).
        self._breaker_state: State | None = None
        self._online_state: State | None = None
        self.online_entity = f"binary_sensor.{self.obj}_online"
        self._online_attrs: dict[str, Any] = {
            "friendly_name": f"{self.name} {label('online', language)}", "device_id": self.id,
            "device_class": "connectivity"}
        self._update_polling_attrs()

        self.values: dict[str, float | None] = {}
        self.relay: dict[str, int] = {}
        self.setpoints: dict[str, float] = {}
        self.info: dict[str, float] = {}
        self.active: dict[str, Condition] = {}
        self.failures = 0
        self.polls = 0
        self.good_polls = 0
        self.online: bool | None = None
        self.last_error: str | None = None
        self._job: PollJob | None = None
        self._info_read = False
        # While a control call runs, relay changes the poller sees are that call's doing.
        self._command_context: Context | None = None
        self._poll_done: list[Callable[[ArcmDevice], None]] = []
        # Conditions the last read of each register / bitfield asked for, by its name: a
        # status-only poll must not clear a sentinel fault only a measurement read can see.
        self._sentinel_wanted: dict[str, tuple[str, str | None]] = {}
        self._bits_wanted: dict[str, dict[str, Any]] = {}
        # Last word of each bitfield (alarm/fault and relay), to skip unchanged ones.
        self._bit_words: dict[str, int] = {}
        self._relay_words: dict[str, int] = {}
        # Bumped whenever `active` changes; conditions are recomputed when it moved.
        self._active_version = 0
        self._reconciled_version = -1
        # Tier bookkeeping (tiered polling only).
        self._next_status: float | None = None
        self._last_measure: float | None = None
        # After a failed cycle, no tier is retried before this (monotonic): a measurement (or
        # setpoint) read that failed would otherwise fall due again at once, and a line that
        # refuses instantly ("not connected") would burn the whole comm-loss debounce in one
        # burst of polls instead of over `failed_polls_for_comm_loss` status intervals.
        self._retry_floor: float | None = None
        self._next_setpoints: float | None = None
        self._setpoints_due = True
        self._info_due = True
        self.tier_reads: dict[str, int] = {"status": 0, "measure": 0, "alarm_measure": 0,
                                           "setpoints": 0, "info": 0}
        self._withdraw: Callable[[], None] | None = None

    # -- schedule -------------------------------------------------------------------------
    def _setup_polling(self, config: dict[str, Any]) -> None:
        """Pick flat or tiered polling and the tier intervals (precedence: docs/plugins/arcm.md).

        Device keys win, then what the link was configured with (a DTU, the gsm section), then
        the profile's suggestion, then the built-in defaults. A LAN device stays flat unless it
        asks for tiers, so nothing changes for sites that never pay per byte.
        """
        metered = isinstance(self.link, MeteredLink)
        link_defaults: dict[str, float] = {}
        if metered:
            try:
                link_defaults = dict(self.link.polling_defaults() or {})
            except Exception:  # a link's hint must never stop a detector
                _LOGGER.exception("%s: link polling defaults failed", self.id)
        mode = config.get("polling", "auto")
        asked = any(config.get(key) is not None for key in ("status_interval", "measure_interval"))
        self.tiered = mode == "tiered" or (mode == "auto" and (metered or asked))
        self.metered = metered

        def pick(key: str, profile_value: float | None, default: float) -> tuple[float, str]:
            if config.get(key) is not None:
                return float(config[key]), "device"
            if link_defaults.get(key) is not None:
                return float(link_defaults[key]), "link"
            if profile_value is not None:
                return float(profile_value), "profile"
            return default, "default"

        self.status_interval, self.status_interval_source = pick(
            "status_interval", self.profile.status_interval, DEFAULT_STATUS_INTERVAL)
        self.measure_interval, self.measure_interval_source = pick(
            "measure_interval", self.profile.measure_interval, DEFAULT_MEASURE_INTERVAL)
        setpoint_interval = config.get("setpoint_interval")
        self.setpoint_interval: float | None = float(setpoint_interval) \
            if setpoint_interval else None
        self.schedule = PollSchedule(
            device_id=self.id, unit=self.unit,
            status_reads=[(b.start, b.count) for b in self.profile.status_blocks],
            status_interval=self.status_interval,
            measure_reads=[(b.start, b.count) for b in self.profile.measure_blocks],
            measure_interval=self.measure_interval,
        )
        self.schedule.on_change.append(self._schedule_changed)

    def _schedule_changed(self) -> None:
        """The link stretched (or relaxed) the measurement tier: reschedule without waiting."""
        _LOGGER.info("%s: measurement interval now %.0fs (%s)", self.id,
                     self.schedule.effective_measure_interval, self.schedule.reason or "budget")
        self._update_polling_attrs()
        self._online_state = None  # new attributes: the next write must be a full one
        if self.online is not None:
            self._set_online(self.online, time.time())
        job = self._job
        if job is not None:
            job.reschedule(asyncio.get_running_loop().time()
                           + max(0.0, self.next_wake() - self._clock()))

    def _update_polling_attrs(self) -> None:
        """The online entity says how the device is polled, so its page can show why."""
        if not self.tiered:
            return
        self._online_attrs["status_interval"] = self.status_interval
        self._online_attrs["measure_interval"] = self.effective_measure_interval
        self._online_attrs["polling_reason"] = self.schedule.reason

    @property
    def effective_measure_interval(self) -> float:
        return self.schedule.effective_measure_interval

    def polling_info(self) -> dict[str, Any]:
        """How this device is polled and why (for the admin: a stretched interval says so)."""
        if not self.tiered:
            return {"mode": "flat", "poll_interval": self.poll_interval}
        return {
            "mode": "tiered",
            "metered_link": self.metered,
            "status_interval": self.status_interval,
            "status_interval_from": self.status_interval_source,
            "measure_interval": self.measure_interval,
            "measure_interval_from": self.measure_interval_source,
            "effective_measure_interval": self.effective_measure_interval,
            "measure_scale": self.schedule.measure_scale,
            "reason": self.schedule.reason,
            "setpoint_interval": self.setpoint_interval,
            "reads": dict(self.tier_reads),
        }

    def next_wake(self) -> float:
        """Monotonic time of the next tier that falls due (tiered polling)."""
        wake = self._next_status if self._next_status is not None else self._clock()
        if self._last_measure is not None:
            wake = min(wake, self._last_measure + self.effective_measure_interval)
        if self._next_setpoints is not None:
            wake = min(wake, self._next_setpoints)
        if self._retry_floor is not None:
            wake = max(wake, self._retry_floor)
        return wake

    # -- entities -------------------------------------------------------------------------
    async def async_register_entities(self) -> None:
        entities = self.hub.entities
        for reg, entity_id, attrs in self._sensors:
            await entities.async_register(
                entity_id, PLATFORM, device_id=self.id, unique_id=f"{self.id}:{reg.name}",
                name=attrs["friendly_name"], unit=reg.unit, device_class=reg.device_class,
            )
            if self.hub.states.get(entity_id) is None:
                self.hub.states.async_set(entity_id, STATE_UNKNOWN, attrs)
        if self.breaker_entity:
            await entities.async_register(
                self.breaker_entity, PLATFORM, device_id=self.id,
                unique_id=f"{self.id}:breaker", name=self._breaker_attrs["friendly_name"],
                device_class="switch",
            )
            if self.hub.states.get(self.breaker_entity) is None:
                self.hub.states.async_set(self.breaker_entity, STATE_UNKNOWN, self._breaker_attrs)
        await entities.async_register(
            self.online_entity, PLATFORM, device_id=self.id, unique_id=f"{self.id}:online",
            name=self._online_attrs["friendly_name"], device_class="connectivity",
        )
        if self.hub.states.get(self.online_entity) is None:
            self.hub.states.async_set(self.online_entity, STATE_OFF, self._online_attrs)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Join the link's poll scheduler (one task per line walks its units; hub.core.polling)."""
        if self.tiered and self.metered:
            try:
                self._withdraw = self.link.declare_schedule(self.schedule)
            except Exception:  # accounting must never stop a detector
                _LOGGER.exception("%s: declaring the poll schedule to the link failed", self.id)
        scheduler = self.hub.links.scheduler(self.link)
        if self.tiered:
            # Spread the first polls so a thousand detectors do not all ask in the same tick.
            first = asyncio.get_running_loop().time() + random.uniform(
                0, min(self.status_interval, 5.0))
            self._job = scheduler.add(f"arcm {self.id}", self._poll_tiered, first,
                                      retry_after=self.status_interval)
        else:
            self._job = scheduler.add_periodic(f"arcm {self.id}", self._poll_flat,
                                               self.poll_interval, min(self.poll_interval, 5.0))

    async def stop(self) -> None:
        """Stop polling (a poll in flight is cancelled; the link's other units go on)."""
        withdraw, self._withdraw = self._withdraw, None
        if withdraw is not None:
            withdraw()
        job, self._job = self._job, None
        if job is not None:
            await job.cancel()

    async def _poll_tiered(self) -> float:
        """One scheduler turn (tiered): the tiers that are due; returns the next loop time."""
        await self.poll_once()
        return asyncio.get_running_loop().time() + max(0.0, self.next_wake() - self._clock())

    async def _poll_flat(self) -> None:
        """One scheduler turn (flat): model and firmware the first time, then every block."""
        if not self._info_read:
            self._info_read = True
            try:
                await self._read_info()
            except LinkError as err:
                _LOGGER.debug("%s: cannot read model/firmware yet: %s", self.id, err)
        await self.poll_once(defer_apply=True)

    def add_poll_listener(self, listener: Callable[[ArcmDevice], None]) -> Callable[[], None]:
        """Called after every poll (tests and the benchmark await polls instead of sleeping)."""
        self._poll_done.append(listener)
        return lambda: self._poll_done.remove(listener) if listener in self._poll_done else None

    # -- reading --------------------------------------------------------------------------
    async def _read_blocks(self, blocks: list[Any]) -> list[tuple[Any, list[int]]]:
        out = []
        for block in blocks:
            words = await self.link.read_holding_registers(self.unit, block.start, block.count)
            out.append((block, words))
        return out

    async def _read_info(self) -> None:
        for block, words in await self._read_blocks(self.profile.info_blocks):
            for reg in block.registers:
                _raw, value = self.profile.decode(reg, words, reg.address - block.start)
                self.info[reg.name] = value

    async def read_setpoints(self) -> dict[str, float]:
        for block, words in await self._read_blocks(self.profile.setpoint_blocks):
            for reg in block.registers:
                _raw, value = self.profile.decode(reg, words, reg.address - block.start)
                self.setpoints[reg.name] = value
        return dict(self.setpoints)

    async def poll_once(self, defer_apply: bool = False) -> bool:
        """One poll: read, decode, publish. Returns True when the unit answered properly.

        `defer_apply` (the link scheduler's flat polls): the answer is published from the
        event loop's next turn instead of before returning, so the scheduler sends the next
        unit's request first and the line (and the device or simulator at its far end) works
        while this process decodes — the way a raw client that reads and never publishes
        keeps its line busy. Poll listeners still run after the states are published.
        """
        if self.tiered:
            return await self._poll_tiers(self._clock())
        self.polls += 1
        try:
            blocks = await self._read_blocks(self.profile.poll_blocks)
            if self.good_polls % self.profile.setpoint_refresh == 0 and self.profile.setpoints:
                await self.read_setpoints()
        except LinkError as err:
            self._failed(err)
        else:
            if defer_apply:
                asyncio.get_running_loop().call_soon(self._apply_deferred, blocks)
                return True
            self._apply(blocks)
            self._notify_poll_done()
            return True
        self._notify_poll_done()
        return False

    def _apply_deferred(self, blocks: list[tuple[Any, list[int]]]) -> None:
        """`_apply` from a loop callback: a failure is logged here, as the scheduler would."""
        if self._job is None:
            return  # stopped since the answer came in
        try:
            self._apply(blocks)
        except Exception:
            _LOGGER.exception("%s: publishing a poll failed", self.id)
        self._notify_poll_done()

    def _notify_poll_done(self) -> None:
        if self._poll_done:
            for listener in list(self._poll_done):
                listener(self)

    async def _poll_tiers(self, now: float) -> bool:
        """Read the tiers that are due at `now` (monotonic), then publish them together.

        Order within one cycle: info (first cycle), setpoints (first cycle, after a write),
        measurement (when due), status (when due), and a measurement read straight after a
        status read that shows a new alarm bit.
        """
        self.polls += 1
        slack = _DUE_SLACK
        status_due = self._next_status is None or now >= self._next_status - slack
        measure_due = self._last_measure is None or \
            now >= self._last_measure + self.effective_measure_interval - slack
        blocks: list[tuple[Any, list[int]]] = []
        try:
            if self._info_due:
                await self._try_info()
            if self._setpoints_due or (self._next_setpoints is not None
                                       and now >= self._next_setpoints - slack):
                await self.read_setpoints()
                self.tier_reads["setpoints"] += 1
                self._setpoints_due = False
                if self.setpoint_interval:
                    self._next_setpoints = now + self.setpoint_interval
            if measure_due:
                blocks += await self._read_blocks(self.profile.measure_blocks)
                self.tier_reads["measure"] += 1
                self._last_measure = now
            if status_due:
                status = await self._read_blocks(self.profile.status_blocks)
                self.tier_reads["status"] += 1
                if not measure_due and self._new_alarm_bits(status):
                    try:
                        blocks += await self._read_blocks(self.profile.measure_blocks)
                        self.tier_reads["alarm_measure"] += 1
                        self._last_measure = now
                    except LinkError as err:
                        # The alarm must not wait: publish it with the last known value.
                        _LOGGER.warning("%s: measurement read after an alarm bit failed: %s",
                                        self.id, err)
                blocks += status
        except LinkError as err:
            self._retry_floor = now + self.status_interval
            self._failed(err)
            ok = False
        else:
            self._retry_floor = None
            if blocks:
                self._apply(blocks)
            ok = True
        if status_due:
            interval = self.status_interval
            base = self._next_status if self._next_status is not None else now
            # Keep the phase, but never burst to catch up after a slow line.
            self._next_status = base + interval if base + interval > now else now + interval
        if self._poll_done:
            for listener in list(self._poll_done):
                listener(self)
        return ok

    async def _try_info(self) -> None:
        """Model and firmware, once; a unit that cannot say is not asked again."""
        try:
            await self._read_info()
        except (LinkTimeout, LinkUnavailable):
            raise
        except LinkError as err:
            _LOGGER.debug("%s: no model/firmware: %s", self.id, err)
        self.tier_reads["info"] += 1
        self._info_due = False

    def _new_alarm_bits(self, blocks: list[tuple[Any, list[int]]]) -> bool:
        """True when a status read shows an alarm (or value-quoting fault) not yet raised."""
        for block, words in blocks:
            for bitfield in block.bitfields:
                if bitfield.kind == "relay":
                    continue
                word = words[bitfield.address - block.start]
                for bit in bitfield.bits:
                    if word >> bit.index & 1 and bit.type and bit.type not in self.active and (
                            bitfield.kind == "alarm" or bit.values):
                        return True
        return False

    def _plan(self, block: Any) -> BlockPlan:
        plan = self._plans.get(id(block))
        if plan is None:
            plan = self._plans[id(block)] = BlockPlan(block, self._entity_of, self._attrs,
                                                          self.profile)
        return plan

    def _apply(self, blocks: list[tuple[Any, list[int]]], context: Context | None = None) -> None:
        """Publish the blocks of one poll: states, then conditions, then relay bits.

        Hot path (every poll of every detector): a register is decoded only when its words
        changed since the last read of its block, and conditions are recomputed only when a
        bit word or a sentinel changed, or a condition was raised or cleared elsewhere.
        """
        now = time.time()
        states = self.hub.states
        set_state = states.async_set
        report = states.async_report
        profile = self.profile
        values = self.values
        sentinel_wanted = self._sentinel_wanted
        relay_words: list[tuple[BitField, int]] = []
        dirty = False
        for block, words in blocks:
            plan = self._plan(block)
            prev = plan.words
            if prev == words and plan.states is not None:
                # The whole block repeats the last read (most polls of a busy line): one
                # report for its entities, and its bit words cannot have changed either.
                if report(plan.states, now):
                    plan.states = None  # someone wrote one of them: the slow path rewrites
                else:
                    relay_words.extend((bf, words[offset]) for bf, offset in plan.relays)
                    continue
            plan.words = list(words)
            unchanged: list[State] = []
            for slot in plan.slots:
                offset = slot.offset
                if prev is not None and words[offset] == prev[offset] and (
                        not slot.wide or words[offset + 1] == prev[offset + 1]):
                    # Unchanged since the last read: reported below in one call.
                    if slot.state is not None:
                        unchanged.append(slot.state)
                        continue
                else:
                    reg = slot.reg
                    value, text = read_slot(profile, slot, words)
                    slot.value = value
                    slot.text = text
                    values[reg.name] = value
                    if reg.sentinel_fault:
                        if value is None:
                            if reg.name not in sentinel_wanted:
                                sentinel_wanted[reg.name] = (reg.sentinel_fault, slot.entity_id)
                                dirty = True
                        elif sentinel_wanted.pop(reg.name, None) is not None:
                            dirty = True
                if slot.entity_id is not None:
                    # The last State's read-only attributes (equal to slot.attrs) spare the
                    # state machine a comparison and a copy per changed reading.
                    last = slot.state
                    slot.state = set_state(slot.entity_id, slot.text,
                                           slot.attrs if last is None else last.attributes,
                                           timestamp=now)
            if unchanged:
                # Someone wrote these entities since (e.g. unavailable after a comms loss).
                for stale in report(unchanged, now):
                    slot = plan.slot_of[stale.entity_id]
                    slot.state = set_state(slot.entity_id, slot.text, stale.attributes,
                                           timestamp=now)
            plan.remember_states()
            bit_words = self._bit_words
            for bitfield, offset in plan.bitfields:
                word = words[offset]
                if bit_words.get(bitfield.name) != word:
                    bit_words[bitfield.name] = word
                    self._bits_wanted[bitfield.name] = {
                        bit.type: bit for bit in bitfield.bits if word >> bit.index & 1 and bit.type}
                    dirty = True
            for bitfield, offset in plan.relays:
                relay_words.append((bitfield, words[offset]))

        # A good poll clears what only a failing poll can raise.
        self.failures = 0
        self.good_polls += 1
        self.last_error = None
        if self._online_attrs.pop("worker", None) is not None:
            self._online_state = None  # polled here again: the attribute must go
        self._set_online(True, now)
        active = self.active
        if active:
            for type_ in ("communication_lost", "device_fault"):
                if type_ in active:
                    self._fire(Condition.create(self.id, type_, False,
                                                entity_id=self.online_entity, timestamp=now))
        if dirty or self._active_version != self._reconciled_version:
            self._reconcile(context, now)
        for bitfield, word in relay_words:
            self._apply_relay(bitfield, word, context, now)

    def _reconcile(self, context: Context | None, now: float) -> None:
        """Raise and clear conditions so `active` matches what bits and sentinels ask for."""
        # What every source last asked for; values are quoted after all blocks are decoded,
        # so an alarm bit read with its measurement quotes the fresh value.
        desired: dict[str, tuple[str | None, float | None, str | None]] = {}
        for type_, entity_id in self._sentinel_wanted.values():
            desired[type_] = (entity_id, None, None)
        for on in self._bits_wanted.values():
            for type_, bit in on.items():
                if type_ not in desired:
                    desired[type_] = (None, None, None)
                    if type_ not in self.active:
                        desired[type_] = self._bit_value(bit.values, bit.pick)
        for type_, (entity_id, value, unit) in desired.items():
            if type_ not in self.active:
                self._fire(Condition.create(self.id, type_, True, entity_id=entity_id,
                                            value=value, unit=unit, timestamp=now), context)
        for type_, old in list(self.active.items()):
            if type_ not in desired and type_ not in ("communication_lost", "device_fault"):
                self._fire(Condition.create(self.id, type_, False, entity_id=old.entity_id,
                                            unit=old.unit, timestamp=now), context)
        self._reconciled_version = self._active_version

    def _bit_value(self, names: tuple[str, ...], pick: str) -> tuple[str | None, float | None,
                                                                      str | None]:
        """(entity_id, value, unit) that a bit's message quotes: "剩余电流过大 550mA"."""
        if not names:
            return None, None, None
        found = [(self.values.get(n), n) for n in names if self.values.get(n) is not None]
        if not found:
            return self._entity_of.get(names[0]), None, None
        if pick == "min":
            value, name = min(found)
        elif pick == "first":
            value, name = found[0]
        else:
            value, name = max(found)
        return self._entity_of.get(name), value, self._unit_of.get(name)

    def _apply_relay(self, bitfield: BitField, word: int, context: Context | None,
                     now: float) -> None:
        """Relay bits: events on transitions, and the breaker switch state (reported always)."""
        context = context or self._command_context
        if self._relay_words.get(bitfield.name) != word:
            self._relay_words[bitfield.name] = word
            breaker_bit = self.profile.breaker_bit
            for bit in bitfield.bits:
                if not bit.name:
                    continue
                new = word >> bit.index & 1
                old = self.relay.get(bit.name)
                self.relay[bit.name] = new
                if old is not None and old != new:
                    event = bit.on_event if new else bit.off_event
                    if event:
                        self._fire(Condition.create(self.id, event, True,
                                                    entity_id=self.breaker_entity
                                                    if bit.name == breaker_bit else None,
                                                    timestamp=now), context)
                if bit.name == breaker_bit:
                    closed = new == self.profile.breaker_closed_when
                    self._breaker_text = STATE_ON if closed else STATE_OFF
        if self.breaker_entity and bitfield is self._breaker_field:
            state = self._breaker_state
            if state is None or state.state != self._breaker_text or \
                    self.hub.states.async_report((state,), now, context):
                self._breaker_state = self.hub.states.async_set(
                    self.breaker_entity, self._breaker_text, self._breaker_attrs,
                    context=context, timestamp=now)

    def _set_online(self, online: bool, now: float) -> None:
        self.online = online
        state = self._online_state
        if state is not None and state.state == (STATE_ON if online else STATE_OFF) and \
                not self.hub.states.async_report((state,), now):
            return
        self._online_state = self.hub.states.async_set(
            self.online_entity, STATE_ON if online else STATE_OFF, self._online_attrs,
            timestamp=now)

    def _failed(self, err: LinkError) -> None:
        now = time.time()
        if isinstance(err, LinkElsewhere):
            self._elsewhere(err, now)
            return
        self.failures += 1
        self.last_error = str(err)
        if isinstance(err, LinkExceptionResponse):
            zh, en = _EXCEPTION_WORDS.get(err.code, ("异常应答", "exception response"))
            if "device_fault" not in self.active:
                _LOGGER.warning("%s: %s", self.id, err)
                self._fire(Condition.create(
                    self.id, "device_fault", True, entity_id=self.online_entity,
                    detail=f"异常码 {err.code} {zh}", detail_en=f"exception code {err.code} ({en})",
                    timestamp=now))
        elif isinstance(err, LinkProtocolError) and "device_fault" not in self.active:
            _LOGGER.warning("%s: %s", self.id, err)
            reason = str(err).split(": ", 1)[-1]
            self._fire(Condition.create(
                self.id, "device_fault", True, entity_id=self.online_entity,
                detail=f"应答帧错误 {reason}", detail_en=f"malformed response: {reason}",
                timestamp=now))
        if self.failures < self.comm_loss_after:
            return
        if isinstance(err, (LinkTimeout, LinkUnavailable)):
            if "communication_lost" not in self.active:
                _LOGGER.warning("%s: communication lost after %d failed polls: %s", self.id,
                                self.failures, err)
                self._fire(Condition.create(self.id, "communication_lost", True,
                                            entity_id=self.online_entity, timestamp=now))
            self._set_online(False, now)
        if self.failures == self.comm_loss_after:
            # Stale values must not pass for live ones (and are never recorded as readings).
            for _reg, entity_id, attrs in self._sensors:
                self.hub.states.async_set(entity_id, STATE_UNAVAILABLE, attrs, timestamp=now)

    def _fire(self, condition: Condition, context: Context | None = None) -> None:
        if condition.kind != "event":
            if condition.active:
                self.active[condition.type] = condition
            else:
                self.active.pop(condition.type, None)
            self._active_version += 1
        data = condition.as_dict()
        # Named so the alarm engine can tell our view of a fault from the DTU server's: a
        # communication_lost clears only when every source that raised it has cleared it.
        data["source"] = data.get("source") or SOURCE
        self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, data, context=context)

    # -- remote control -------------------------------------------------------------------
    def _elsewhere(self, err: LinkElsewhere, now: float) -> None:
        """Another worker drives the link: it polls and raises; this one only shows it.

        Not a failed poll (no `communication_lost` here, ever: the owner raises it when the
        unit is silent). Shown as online, connected to that worker (`worker` attribute).
        """
        self.failures = 0
        self.last_error = str(err)
        if self._online_attrs.get("worker") != err.owner:
            self._online_attrs["worker"] = err.owner
            self._online_state = None
        self._set_online(True, now)
        if "communication_lost" in self.active:
            self._fire(Condition.create(self.id, "communication_lost", False,
                                        entity_id=self.online_entity, timestamp=now))

    def _link_failure(self, err: LinkError, what: str, sent: bool = False) -> ServiceError:
        """The service error for a link failure; `sent`: part of the call already went out
        (a command written before its read-back), so another worker must not repeat it."""
        if isinstance(err, LinkElsewhere):
            return DeviceElsewhere.for_link(self.id, what, err, sent=sent)
        if isinstance(err, LinkExceptionResponse):
            _zh, en = _EXCEPTION_WORDS.get(err.code, ("异常应答", "exception response"))
            return DeviceRejected(f"{self.id}: device refused {what}: exception code {err.code}"
                                  f" ({en})")
        if isinstance(err, LinkProtocolError):
            return DeviceRejected(f"{self.id}: malformed answer to {what}: {err}")
        return DeviceUnreachable(f"{self.id}: no answer to {what}: {err}")

    async def _read_relay(self, context: Context | None) -> dict[str, int]:
        for bitfield in self.profile.bitfields:
            if bitfield.kind != "relay":
                continue
            try:
                words = await self.link.read_holding_registers(self.unit, bitfield.address, 1)
            except LinkError as err:
                raise self._link_failure(err, "the relay read-back", sent=True) from err
            self._apply_relay(bitfield, words[0], context, time.time())
        return dict(self.relay)

    async def command(self, name: str, context: Context) -> dict[str, Any]:
        """Write a command code, then answer only when the read-back shows its result."""
        command = self.profile.commands.get(name)
        if command is None or self.profile.command_register is None:
            raise ServiceValidationError(f"{self.id}: profile {self.profile.id} has no "
                                         f"command {name!r}")
        _LOGGER.info("arcm.%s on %s (context %s, user %s)", name, self.id, context.id,
                     context.user_id)
        self._command_context = context
        try:
            return await self._command(name, command, context)
        finally:
            self._command_context = None

    async def _command(self, name: str, command: Any, context: Context) -> dict[str, Any]:
        try:
            await self.link.write_register(self.unit, self.profile.command_register, command.code)
        except LinkError as err:
            raise self._link_failure(err, name) from err
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.profile.confirm_timeout
        relay = await self._read_relay(context)
        while command.confirm_bit is not None and relay.get(command.confirm_bit) != \
                command.confirm_equals:
            if loop.time() >= deadline:
                _LOGGER.warning("arcm.%s on %s not confirmed (context %s)", name, self.id,
                                context.id)
                raise CommandNotConfirmed(
                    f"{self.id}: {name} not confirmed within {self.profile.confirm_timeout:g}s "
                    f"({command.confirm_bit}={relay.get(command.confirm_bit)})")
            await asyncio.sleep(0.1)  # the device's own pace; bounded by the deadline above
            relay = await self._read_relay(context)
        if command.event:
            self._fire(Condition.create(self.id, command.event, True,
                                        entity_id=self.breaker_entity), context)
        _LOGGER.info("arcm.%s on %s confirmed (context %s)", name, self.id, context.id)
        result: dict[str, Any] = {"device_id": self.id, "command": name, "confirmed": True,
                                  "relay": relay}
        if self.breaker_entity and self.profile.breaker_bit in relay:
            result["breaker"] = "closed" if relay[self.profile.breaker_bit] == \
                self.profile.breaker_closed_when else "tripped"
        return result

    async def set_parameter(self, name: str, value: Any, context: Context) -> dict[str, Any]:
        """Validate against the profile's range, write, read back, answer the confirmed value."""
        reg = self.profile.setpoints.get(name)
        if reg is None:
            raise ServiceValidationError(
                f"{self.id}: unknown parameter {name!r}; known: "
                f"{', '.join(self.profile.setpoints)}")
        if isinstance(value, str) and reg.options:
            by_word = {word: code for code, word in reg.options.items()}
            if value not in by_word:
                raise ServiceValidationError(
                    f"{name} must be one of {', '.join(by_word)} (got {value!r})")
            value = by_word[value]
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise ServiceValidationError(f"{name} must be a number (got {value!r})") from err
        unit = reg.unit or ""
        if reg.minimum is not None and reg.maximum is not None and not (
                reg.minimum <= number <= reg.maximum):
            raise ServiceValidationError(
                f"{name} must be {reg.minimum:g}–{reg.maximum:g}{unit} (got {number:g}{unit})")
        words = self.profile.encode(reg, number)
        _LOGGER.info("arcm.set_parameter %s=%s on %s (context %s, user %s)", name, number,
                     self.id, context.id, context.user_id)
        written = False
        try:
            before = await self.link.read_holding_registers(self.unit, reg.address, len(words))
            previous = self.profile.decode(reg, before, 0)[1]
            if len(words) == 1:
                await self.link.write_register(self.unit, reg.address, words[0])
            else:
                await self.link.write_registers(self.unit, reg.address, words)
            written = True
            back = await self.link.read_holding_registers(self.unit, reg.address, len(words))
        except LinkError as err:
            raise self._link_failure(err, f"set_parameter {name}", sent=written) from err
        _raw, confirmed = self.profile.decode(reg, back, 0)
        self.setpoints[name] = confirmed
        # A device may adjust related setpoints itself: tiered polling re-reads the block.
        self._setpoints_due = True
        if back != words:
            raise DeviceRejected(f"{self.id}: wrote {name}={number:g}{unit} but the device "
                                 f"keeps {confirmed:g}{unit}")
        _LOGGER.info("arcm.set_parameter %s=%s on %s confirmed (context %s)", name, confirmed,
                     self.id, context.id)
        return {"device_id": self.id, "name": name, "value": confirmed, "unit": reg.unit,
                "previous": previous, "confirmed": True}
