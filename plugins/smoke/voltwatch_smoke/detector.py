"""Smoke detectors that push (CONTRACTS §6): their entities, conditions, watchdog and commands.

The mqtt transport hands every message of a `smoke` device to `SmokeRuntime.handle` (the push
handler) inline in its message loop, so the handler only sets states and fires conditions; it
never waits for anything. Commands (`smoke.mute`, `smoke.self_test`, `smoke.reset`) go through
the device's link and answer only after the device's ack, so they run in service calls, never in
the handler.

Who holds what (the alarm engine clears a record when every source that raised it let go):
* `smoke`, `tamper`, `device_fault`, `low_battery` from the detector's events: source `smoke`;
* `low_battery` from the battery percentage in telemetry (below `low_battery_level`): source
  `smoke_battery`, so a detector that never sends the event is still caught, and one that does
  is not reported twice;
* `device_fault` from a failed self-test: source `smoke_self_test`, cleared by a passing one;
* `communication_lost` from silence longer than `silence_factor` x `reporting_interval`:
  source `smoke` (the retained `offline` status is the mqtt plugin's, source `mqtt`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any

import voluptuous as vol

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.config import duration
from hub.core.context import Context
from hub.core.events import EVENT_DEVICE_REGISTRY_UPDATED, EVENT_HUB_STARTED, Event, callback
from hub.core.platform import DeviceNotFound
from hub.core.push import CommandError, PushMessage
from hub.core.registries import DeviceEntry
from hub.core.services import ServiceCall, ServiceError, ServiceValidationError
from hub.core.states import STATE_OFF, STATE_ON, STATE_UNKNOWN, format_state, slugify

_LOGGER = logging.getLogger(__name__)

PLATFORM = "smoke"
SOURCE = "smoke"
SOURCE_BATTERY = "smoke_battery"
SOURCE_SELF_TEST = "smoke_self_test"

DEFAULT_REPORTING_INTERVAL = 60.0
DEFAULT_SILENCE_FACTOR = 2.5
DEFAULT_LOW_BATTERY = 20.0
BATTERY_HYSTERESIS = 5.0  # percentage points: a battery hovering at 20 % is one fault
COMMANDS = ("mute", "self_test", "reset")

DEVICE_SCHEMA: dict[Any, Any] = {
    vol.Optional("reporting_interval", default=DEFAULT_REPORTING_INTERVAL):
        vol.All(duration, vol.Range(min=0.1, max=7 * 86400)),
    vol.Optional("silence_factor", default=DEFAULT_SILENCE_FACTOR):
        vol.All(vol.Coerce(float), vol.Range(min=1.0, max=100.0)),
    vol.Optional("low_battery_level", default=DEFAULT_LOW_BATTERY):
        vol.All(vol.Coerce(float), vol.Range(min=0, max=100)),
    vol.Optional("command_timeout"): vol.All(duration, vol.Range(min=0.1, max=600)),
}
_OPTIONS = vol.Schema(DEVICE_SCHEMA, extra=vol.ALLOW_EXTRA)

SERVICE_SCHEMA = vol.Schema({vol.Required("device_id"): str})

# telemetry key -> (entity suffix, unit, device_class, zh label, en label)
SENSORS: dict[str, tuple[str, str | None, str | None, str, str]] = {
    "smoke_level": ("smoke_level", None, None, "烟雾浓度", "Smoke level"),
    "temperature": ("temperature", "°C", "temperature", "温度", "Temperature"),
    "battery": ("battery", "%", "battery", "电池电量", "Battery"),
}
# binary entity suffix -> (device_class, zh label, en label)
BINARIES: dict[str, tuple[str, str, str]] = {
    "smoke": ("smoke", "烟雾", "Smoke"),
    "tamper": ("tamper", "防拆", "Tamper"),
    "fault": ("problem", "故障", "Fault"),
    "muted": ("sound", "消音", "Muted"),
}
# event name -> (condition type, binary entity suffix)
EVENTS: dict[str, tuple[str, str]] = {
    "smoke_alarm": ("smoke", "smoke"),
    "tamper": ("tamper", "tamper"),
    "fault": ("device_fault", "fault"),
    "low_battery": ("low_battery", ""),
}
_EXTRA_KEY = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class SmokeServiceError(ServiceError):
    """The device did not confirm a command (refused, no ack, offline, broker down)."""

    status = 504


class SmokeDetector:
    """One detector: what it last said, its silence timer, and the conditions it holds."""

    def __init__(self, runtime: SmokeRuntime, entry: DeviceEntry) -> None:
        self.runtime = runtime
        self.hub = runtime.hub
        self.id = entry.id
        self.name = entry.display_name
        self.obj = slugify(entry.id)
        options = _OPTIONS({key: value for key, value in entry.options.items()
                            if key in ("reporting_interval", "silence_factor",
                                       "low_battery_level", "command_timeout")})
        self.reporting_interval = float(options["reporting_interval"])
        self.silence_limit = self.reporting_interval * float(options["silence_factor"])
        self.low_battery_level = float(options["low_battery_level"])
        self.command_timeout: float | None = options.get("command_timeout")
        self.link_config = dict(entry.link or {})
        self._partial: bool | None = None
        self._link: Any = None  # the transport's link, asked for its intake lag
        self.online_entity = f"binary_sensor.{self.obj}_online"
        self.self_test_entity = f"sensor.{self.obj}_self_test"
        self.messages = 0
        self.last_seen: float | None = None  # loop time of the last message
        self.silent = False
        self.active: set[tuple[str, str]] = set()  # (type, source) this plugin holds
        self.extra_entities: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        language = getattr(self.hub, "language", "zh-CN")
        english = language.lower().startswith("en")

        def words(zh: str, en: str) -> str:
            return f"{self.name} {en if english else zh}"

        self.sensor_attrs: dict[str, dict[str, Any]] = {}
        for suffix, unit, device_class, zh, en in SENSORS.values():
            attrs: dict[str, Any] = {"friendly_name": words(zh, en), "device_id": self.id}
            if unit:
                attrs["unit_of_measurement"] = unit
            if device_class:
                attrs["device_class"] = device_class
            self.sensor_attrs[f"sensor.{self.obj}_{suffix}"] = attrs
        self.binary_attrs = {
            f"binary_sensor.{self.obj}_{suffix}": {"friendly_name": words(zh, en),
                                                   "device_id": self.id,
                                                   "device_class": device_class}
            for suffix, (device_class, zh, en) in BINARIES.items()
        }
        self.self_test_attrs = {"friendly_name": words("自检结果", "Self-test result"),
                                "device_id": self.id}

    # -- entities -------------------------------------------------------------------------
    async def async_register_entities(self) -> None:
        await self.hub.entities.async_register_many(self.entity_specs())
        self.initial_states()

    def entity_specs(self) -> list[dict[str, Any]]:
        """The registry entries of this detector's entities (`async_register_many` keywords)."""
        return [{"entity_id": entity_id, "platform": PLATFORM, "device_id": self.id,
                 "unique_id": f"{self.id}:{entity_id.split('.', 1)[1]}",
                 "name": attrs["friendly_name"], "unit": attrs.get("unit_of_measurement"),
                 "device_class": attrs.get("device_class")}
                for entity_id, attrs in [*self.sensor_attrs.items(), *self.binary_attrs.items(),
                                         (self.self_test_entity, self.self_test_attrs)]]

    def initial_states(self) -> None:
        """A state for every entity that has none yet (unknown; off for the binary ones)."""
        states = self.hub.states
        for entity_id, attrs in [*self.sensor_attrs.items(), *self.binary_attrs.items(),
                                 (self.self_test_entity, self.self_test_attrs)]:
            if states.get(entity_id) is None:
                initial = STATE_OFF if entity_id.startswith("binary_sensor.") and \
                    not entity_id.endswith("_smoke") else STATE_UNKNOWN
                states.async_set(entity_id, initial, attrs)

    # -- silence watchdog -------------------------------------------------------------------
    def arm(self) -> None:
        """Start watching from now: a detector that never speaks is lost after the limit too.

        Not on a link that delivers only a share of the telemetry (several workers): there the
        other workers got the reports, and the detector's status will tells it is gone.
        """
        if self.partial_delivery():
            return
        loop = asyncio.get_running_loop()
        if self.last_seen is None:
            self.last_seen = loop.time()
        self._schedule(loop, self.last_seen + self.silence_limit)

    def partial_delivery(self) -> bool:
        """Asked once (`heard` calls `arm` on every message while no timer runs)."""
        if self._partial is None:
            try:
                self._link = self.hub.links.acquire(self.link_config)
            except Exception:  # noqa: BLE001 - no link: the watchdog is all there is
                self._link = None
            self._partial = bool(getattr(self._link, "partial_delivery", False))
        return self._partial

    def intake_lag(self) -> float:
        """Seconds the hub itself is behind on this link's readings (hub/core/push.py)."""
        return float(getattr(self._link, "intake_lag", 0.0) or 0.0)

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._check_silence)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @callback
    def _check_silence(self) -> None:
        # One timer per detector, re-armed from here rather than on every message: a detector
        # reporting every second costs a float store per message, not a timer reschedule.
        self._timer = None
        loop = asyncio.get_running_loop()
        # The hub's own backlog is not the detector's silence: a hub behind on its readings
        # would otherwise declare thousands of detectors lost, and fall further behind.
        lag = self.intake_lag()
        due = (self.last_seen or loop.time()) + self.silence_limit + lag
        if loop.time() < due:
            self._schedule(loop, due)
            return
        if not self.silent:
            self.silent = True
            _LOGGER.warning("smoke detector %s silent for %.0fs (limit %.0fs = %.1f x %.0fs%s)",
                            self.id, loop.time() - (self.last_seen or 0), self.silence_limit,
                            self.silence_limit / self.reporting_interval, self.reporting_interval,
                            f", plus {lag:.0f}s the hub is behind" if lag >= 1 else "")
            now = time.time()
            seconds = f"{self.silence_limit:g}"
            self.fire(Condition.create(
                self.id, "communication_lost", True, entity_id=self.online_entity,
                detail=f"超过{seconds}秒未上报", detail_en=f"no report for {seconds}s",
                timestamp=now, source=SOURCE))
            self.hub.states.async_set(self.online_entity, STATE_OFF,
                                      {"device_id": self.id, "device_class": "connectivity",
                                       "friendly_name": f"{self.name} online",
                                       "reason": "silence"}, timestamp=now)

    def heard(self, ts: float) -> None:
        """Any message proves the detector is alive: lets go of a silence fault."""
        self.messages += 1
        self.last_seen = asyncio.get_running_loop().time()
        if self._timer is None:
            self.arm()
        if self.silent:
            self.silent = False
            _LOGGER.info("smoke detector %s reports again", self.id)
            self.fire(Condition.create(self.id, "communication_lost", False,
                                       entity_id=self.online_entity, timestamp=ts,
                                       source=SOURCE))
            self.hub.states.async_set(self.online_entity, STATE_ON,
                                      {"device_id": self.id, "device_class": "connectivity",
                                       "friendly_name": f"{self.name} online"}, timestamp=ts)

    # -- conditions -----------------------------------------------------------------------
    def fire(self, condition: Condition, context: Context | None = None) -> None:
        key = (condition.type, condition.source)
        if condition.kind != "event":
            if condition.active:
                self.active.add(key)
            else:
                self.active.discard(key)
        self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict(), context=context)

    def set_condition(self, type_: str, active: bool, ts: float, *, source: str = SOURCE,
                      entity_id: str | None = None, value: float | None = None,
                      unit: str | None = None, detail: str | None = None,
                      detail_en: str | None = None) -> None:
        """Fire only on a transition of (type, source): a repeated event is not a new alarm."""
        if ((type_, source) in self.active) is active:
            return
        self.fire(Condition.create(self.id, type_, active, entity_id=entity_id, value=value,
                                   unit=unit, detail=detail, detail_en=detail_en, timestamp=ts,
                                   source=source))

    # -- messages -------------------------------------------------------------------------
    def handle(self, message: PushMessage) -> None:
        kind = message.kind
        if kind == "telemetry":
            self.heard(message.ts)
            self._telemetry(message.payload["values"], message.ts)
        elif kind == "event":
            self.heard(message.ts)
            self._event(message.payload, message.ts, message.source)
        elif kind == "status":
            if message.payload.get("status") == "online":
                self.heard(message.ts)
            # `offline` is the mqtt plugin's communication_lost (source mqtt); the silence
            # timer keeps running, so a detector that never comes back is reported by us too.
        elif kind == "ack":
            self.heard(message.ts)

    def _telemetry(self, values: dict[str, Any], ts: float) -> None:
        states = self.hub.states
        for key, value in values.items():
            known = SENSORS.get(key)
            if known is not None:
                entity_id = f"sensor.{self.obj}_{known[0]}"
                number = _number(value)
                states.async_set(entity_id, format_state(number) if number is not None
                                 else "unavailable", self.sensor_attrs[entity_id], timestamp=ts)
                if key == "battery" and number is not None:
                    self._battery(number, ts, entity_id)
                continue
            if not _EXTRA_KEY.match(key) or not isinstance(value, int | float | str | bool):
                self.runtime.ignored_values += 1
                continue
            # A model's own reading (humidity, co_ppm): shown as it is, never an alarm input.
            entity_id = f"sensor.{self.obj}_{key}"
            if entity_id not in self.extra_entities:
                self.extra_entities.add(entity_id)
                self.hub.create_task(self.hub.entities.async_register(
                    entity_id, PLATFORM, device_id=self.id, unique_id=f"{self.id}:{key}",
                    name=f"{self.name} {key}"), name=f"smoke entity {entity_id}")
            states.async_set(entity_id, format_state(value),
                             {"friendly_name": f"{self.name} {key}", "device_id": self.id},
                             timestamp=ts)

    def _battery(self, percent: float, ts: float, entity_id: str) -> None:
        low = (("low_battery", SOURCE_BATTERY) in self.active)
        if not low and percent < self.low_battery_level:
            self.set_condition("low_battery", True, ts, source=SOURCE_BATTERY,
                               entity_id=entity_id, value=percent, unit="%")
        elif low and percent >= self.low_battery_level + BATTERY_HYSTERESIS:
            self.set_condition("low_battery", False, ts, source=SOURCE_BATTERY,
                               entity_id=entity_id, value=percent, unit="%")

    def _event(self, payload: dict[str, Any], ts: float, topic: str) -> None:
        name = payload["event"]
        active = payload.get("state", "active") == "active"
        states = self.hub.states
        if name in EVENTS:
            type_, suffix = EVENTS[name]
            entity_id = f"binary_sensor.{self.obj}_{suffix}" if suffix else \
                f"sensor.{self.obj}_battery"
            if suffix:
                states.async_set(entity_id, STATE_ON if active else STATE_OFF,
                                 self.binary_attrs[entity_id], timestamp=ts)
            value = unit = None
            detail = detail_en = None
            if name == "low_battery":
                battery = _number(getattr(states.get(entity_id), "state", None))
                value, unit = (battery, "%") if battery is not None else (None, None)
            elif name == "fault" and payload.get("code") is not None:
                detail, detail_en = f"故障码 {payload['code']}", f"code {payload['code']}"
            if name == "smoke_alarm" and active:
                # A new alarm ends a mute, as GB 50166 wants: "mute holds until a new alarm".
                states.async_set(f"binary_sensor.{self.obj}_muted", STATE_OFF,
                                 self.binary_attrs[f"binary_sensor.{self.obj}_muted"],
                                 timestamp=ts)
            self.set_condition(type_, active, ts, entity_id=entity_id, value=value, unit=unit,
                               detail=detail, detail_en=detail_en)
        elif name in ("mute", "muted"):
            # The state only: the `muted` record comes from smoke.mute, which knows who did it.
            entity_id = f"binary_sensor.{self.obj}_muted"
            states.async_set(entity_id, STATE_ON if active else STATE_OFF,
                             self.binary_attrs[entity_id], timestamp=ts)
        elif name == "self_test":
            self._self_test(payload, ts)
        else:
            self.runtime.unknown_events += 1
            if (self.id, name) not in self.runtime.unknown_logged:
                self.runtime.unknown_logged.add((self.id, name))
                _LOGGER.warning("smoke detector %s sent unknown event %r on %s (logged once)",
                                self.id, name, topic)

    def _self_test(self, payload: dict[str, Any], ts: float) -> None:
        """A self-test is an event (自检); a failed one is also a device fault until one passes."""
        result = payload.get("result")
        if result is None and "ok" in payload:
            result = "pass" if payload["ok"] else "fail"
        result = str(result).lower() if result is not None else "pass"
        passed = result in ("pass", "passed", "ok", "true")
        self.hub.states.async_set(self.self_test_entity, "pass" if passed else "fail",
                                  self.self_test_attrs, timestamp=ts)
        self.fire(Condition.create(
            self.id, "self_test", True, entity_id=self.self_test_entity,
            detail="通过" if passed else "失败", detail_en="passed" if passed else "failed",
            timestamp=ts, source=SOURCE))
        self.set_condition("device_fault", not passed, ts, source=SOURCE_SELF_TEST,
                           entity_id=self.self_test_entity,
                           detail="自检失败", detail_en="self-test failed")

    # -- commands -------------------------------------------------------------------------
    async def command(self, name: str, context: Context) -> dict[str, Any]:
        device = self.hub.devices.get(self.id)
        if device is None:
            raise DeviceNotFound(f"No smoke detector {self.id!r}")
        link = self.hub.links.acquire(device.link)
        _LOGGER.info("smoke.%s on %s (context %s, user %s)", name, self.id, context.id,
                     context.user_id)
        try:
            ack = await link.command(self.id, name, {}, timeout=self.command_timeout)
        except CommandError as err:
            _LOGGER.warning("smoke.%s on %s failed: %s", name, self.id, err)
            raise SmokeServiceError(str(err)) from err
        if name == "mute":
            entity_id = f"binary_sensor.{self.obj}_muted"
            self.hub.states.async_set(entity_id, STATE_ON, self.binary_attrs[entity_id],
                                      context=context)
            self.fire(Condition.create(self.id, "muted", True, entity_id=entity_id,
                                       source=SOURCE), context)
        _LOGGER.info("smoke.%s on %s acknowledged (context %s)", name, self.id, context.id)
        return {"device_id": self.id, "command": name, "confirmed": True, "ack": ack}


class SmokeRuntime:
    """The plugin inside one hub: its detectors (configured or created through the API)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.detectors: dict[str, SmokeDetector] = {}
        self.ignored_values = 0
        self.unknown_events = 0
        self.unknown_logged: set[tuple[str, str]] = set()
        self._unsub: Any = None
        self._unsub_started: Any = None
        self._started = False

    async def async_setup(self) -> None:
        self._register_services()
        # All detectors at once: one registry batch (one transaction) for their entities,
        # instead of one awaited save per entity (about 120 entities/s: 100,000 detectors
        # took over an hour to start).
        created: list[SmokeDetector] = []
        for entry in list(self.hub.devices):
            if entry.platform == PLATFORM:
                created.append(self._replace(entry))
        await self.hub.entities.async_register_many(
            [spec for detector in created for spec in detector.entity_specs()])
        for detector in created:
            detector.initial_states()
        # Silence watchdogs from the moment the hub serves, not from this plugin's set-up:
        # a long start (other plugins, 100,000 devices) must not count as every detector's
        # silence. A detector heard before that arms itself (`heard`).
        if getattr(getattr(self.hub, "state", None), "value", None) == "running":
            self._arm_all()
        else:
            self._unsub_started = self.hub.bus.listen_once(EVENT_HUB_STARTED, self._started_hub)
        self._unsub = self.hub.bus.listen(EVENT_DEVICE_REGISTRY_UPDATED, self._registry_updated)
        self._started = True

    async def add(self, entry: DeviceEntry) -> SmokeDetector:
        detector = self._replace(entry)
        await detector.async_register_entities()
        detector.arm()
        return detector

    def _replace(self, entry: DeviceEntry) -> SmokeDetector:
        old = self.detectors.pop(entry.id, None)
        if old is not None:
            old.stop()
        detector = SmokeDetector(self, entry)
        if old is not None:  # an edited device keeps what it held
            detector.active, detector.silent = old.active, old.silent
            detector.last_seen = old.last_seen
        self.detectors[entry.id] = detector
        return detector

    @callback
    def _started_hub(self, event: Event) -> None:
        self._unsub_started = None
        self._arm_all()

    def _arm_all(self) -> None:
        for detector in self.detectors.values():
            if detector._timer is None:
                detector.arm()

    @callback
    def _registry_updated(self, event: Event) -> None:
        device_id = event.data.get("device_id")
        action = event.data.get("action")
        if not device_id:
            return
        if action == "remove":
            detector = self.detectors.pop(device_id, None)
            if detector is not None:
                detector.stop()
            return
        entry = self.hub.devices.get(device_id)
        if entry is not None and entry.platform == PLATFORM:
            self.hub.create_task(self.add(entry), name=f"smoke add {device_id}")

    def detector(self, entry: DeviceEntry) -> SmokeDetector:
        """The detector for a message; one created a moment ago may not be set up yet."""
        detector = self.detectors.get(entry.id)
        if detector is None:
            detector = self.detectors[entry.id] = SmokeDetector(self, entry)
            self.hub.create_task(detector.async_register_entities(),
                                 name=f"smoke entities {entry.id}")
        return detector

    def handle(self, device: DeviceEntry, message: PushMessage) -> None:
        self.detector(device).handle(message)

    async def async_shutdown(self) -> None:
        if self._unsub_started is not None:
            self._unsub_started()
            self._unsub_started = None
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        for detector in self.detectors.values():
            detector.stop()
        for name in COMMANDS:
            self.hub.services.remove(PLATFORM, name)

    def _register_services(self) -> None:
        for name in COMMANDS:
            async def handle(call: ServiceCall, name: str = name) -> dict[str, Any]:
                device_id = call.data["device_id"]
                entry = self.hub.devices.get(device_id)
                if entry is None or entry.platform != PLATFORM:
                    raise ServiceValidationError(f"{device_id!r} is not a smoke detector")
                return await self.detector(entry).command(name, call.context)

            self.hub.services.register(
                PLATFORM, name, handle, schema=SERVICE_SCHEMA, supports_response=True,
                description=f"Send {name} to a smoke detector; answers after the device's ack")

    def stats(self) -> dict[str, float]:
        return {
            "smoke_detectors": len(self.detectors),
            "smoke_detectors_silent": sum(1 for d in self.detectors.values() if d.silent),
            "smoke_messages_total": sum(d.messages for d in self.detectors.values()),
            "smoke_ignored_values_total": self.ignored_values,
            "smoke_unknown_events_total": self.unknown_events,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number  # NaN is not a reading
