"""Voltwatch device plugin `arcm`: residual-current and temperature detectors (电气火灾监控探测器).

Driven by profile files (`profiles/*.yaml`, and `<config dir>/profiles/*.yaml` for models an
integrator adds). Talks to detectors through whatever link the device's `link:` names
(`hub.links.acquire`), so it works over Modbus TCP, RS485 or a GSM DTU alike.

Hooks: device schema `arcm`, setup/shutdown (pollers, entities, services `arcm.*`), the
simulator `voltwatch simulate arcm`, and the demo site's detectors.
"""

from __future__ import annotations

import logging
import re
import weakref
from pathlib import Path
from typing import Any

import voluptuous as vol

from hub import hookimpl
from hub.core.links import LinkError
from hub.core.platform import DevicePlatform
from hub.core.services import ServiceCall

from . import simulator
from .device import PLATFORM, ArcmDevice
from .profile import PROFILE_DIRS, ProfileError, find_profile

_LOGGER = logging.getLogger(__name__)

__all__ = ["DEVICE_SCHEMA", "ArcmDevice", "ArcmRuntime", "runtime_for"]

COMMANDS = ("trip", "close", "reset", "mute", "self_test")


def _profile_name(value: Any) -> str:
    """Check at config time that the profile exists and is valid (errors carry file:line)."""
    if not isinstance(value, str) or not value:
        raise vol.Invalid("profile must be a profile name such as arcm-ref")
    try:
        find_profile(value)
    except ProfileError as err:
        raise vol.Invalid("; ".join(err.errors)) from err
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration_between(name: str, low: float, high: float, words: str) -> Any:
    def check(value: Any) -> float:
        """`1s`, `500ms`, `2m` or a number: the core converts durations, but a device created
        through the API (or a config module that has not) reaches us with the text."""
        if isinstance(value, bool):
            raise vol.Invalid("expected a duration such as 1s or a number of seconds")
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value))
            if not match:
                raise vol.Invalid(f"expected a duration such as 1s or 500ms, got {value!r}")
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if not low <= seconds <= high:
            raise vol.Invalid(f"{name} must be between {words}")
        return seconds

    return check


_seconds = _duration_between("poll_interval", 0.01, 3600, "10ms and 1h")
_SECONDS = _seconds

POLLING_MODES = ("auto", "tiered", "flat")

DEVICE_SCHEMA = vol.Schema(
    {
        vol.Optional("profile", default="arcm-ref"): _profile_name,
        vol.Optional("poll_interval", default=1.0): _SECONDS,
        vol.Optional("failed_polls_for_comm_loss", default=3):
            vol.All(vol.Coerce(int), vol.Range(min=1, max=1000)),
        # Tiered polling (docs/plugins/arcm.md): `auto` is tiered behind a metered link (a GSM
        # DTU) or when a tier interval is given here, flat otherwise.
        vol.Optional("polling", default="auto"): vol.In(POLLING_MODES),
        vol.Optional("status_interval"):
            _duration_between("status_interval", 0.01, 3600, "10ms and 1h"),
        vol.Optional("measure_interval"):
            _duration_between("measure_interval", 0.01, 86400, "10ms and 24h"),
        vol.Optional("setpoint_interval"):
            _duration_between("setpoint_interval", 0.01, 30 * 86400, "10ms and 30 days"),
    },
    extra=vol.ALLOW_EXTRA,
)

SERVICE_SCHEMA = vol.Schema({vol.Required("device_id"): str})
SET_PARAMETER_SCHEMA = vol.Schema({
    vol.Required("device_id"): str,
    vol.Required("name"): str,
    vol.Required("value"): vol.Any(int, float, str),
})


class ArcmRuntime(DevicePlatform[ArcmDevice]):
    """The plugin's state inside one hub: its devices and the services that reach them
    (device life and failures: hub.core.platform.DevicePlatform)."""

    platform = PLATFORM
    config_errors = (vol.Invalid, ProfileError, LinkError)

    def __init__(self, hub: Any) -> None:
        super().__init__(hub)
        config_dir = getattr(hub, "config_dir", None)
        self.profile_dirs: tuple[Path, ...] = (Path(config_dir) / "profiles",) if config_dir \
            else ()

    def _from_entry(self, entry: Any) -> dict[str, Any]:
        return {**super()._from_entry(entry),
                "profile": entry.profile or entry.options.get("profile") or "arcm-ref"}

    def build(self, raw: dict[str, Any]) -> ArcmDevice:
        token = PROFILE_DIRS.set(self.profile_dirs)
        try:
            config = DEVICE_SCHEMA(dict(raw))
            profile = find_profile(config["profile"], self.profile_dirs)
            link = self.hub.links.acquire(config.get("link") or {})
        finally:
            PROFILE_DIRS.reset(token)
        return ArcmDevice(self.hub, config, profile, link)

    # -- services -------------------------------------------------------------------------
    def _register_services(self) -> None:
        services = self.hub.services
        for name in COMMANDS:
            async def handle(call: ServiceCall, name: str = name) -> dict[str, Any]:
                return await self.device(call.data["device_id"]).command(name, call.context)

            services.register(PLATFORM, name, handle, schema=SERVICE_SCHEMA,
                              supports_response=True,
                              description=f"Send {name} to a detector; answers after read-back")

        async def set_parameter(call: ServiceCall) -> dict[str, Any]:
            return await self.device(call.data["device_id"]).set_parameter(
                call.data["name"], call.data["value"], call.context)

        services.register(PLATFORM, "set_parameter", set_parameter, schema=SET_PARAMETER_SCHEMA,
                          supports_response=True,
                          description="Write a setpoint within the profile's range; answers "
                                      "with the value read back")

        async def read_parameters(call: ServiceCall) -> dict[str, Any]:
            device = self.device(call.data["device_id"])
            try:
                values = await device.read_setpoints()
            except LinkError as err:
                raise device._link_failure(err, "read_parameters") from err
            profile = device.profile
            return {"device_id": device.id, "profile": profile.id, "parameters": {
                name: {"value": values.get(name), "unit": reg.unit, "min": reg.minimum,
                       "max": reg.maximum, "default": reg.default}
                for name, reg in profile.setpoints.items()}}

        services.register(PLATFORM, "read_parameters", read_parameters, schema=SERVICE_SCHEMA,
                          supports_response=True,
                          description="Read every setpoint with its range and default")


_RUNTIMES: weakref.WeakKeyDictionary[Any, ArcmRuntime] = weakref.WeakKeyDictionary()


def runtime_for(hub: Any) -> ArcmRuntime | None:
    return _RUNTIMES.get(hub)


# -- hooks --------------------------------------------------------------------------------
@hookimpl
def voltwatch_device_schemas() -> dict[str, vol.Schema]:
    return {PLATFORM: DEVICE_SCHEMA}


@hookimpl
def voltwatch_setup(hub: Any, config: dict[str, Any]) -> Any:
    runtime = ArcmRuntime(hub)
    _RUNTIMES[hub] = runtime
    return runtime.async_setup(config)


@hookimpl
def voltwatch_shutdown(hub: Any) -> Any:
    runtime = _RUNTIMES.pop(hub, None)
    if runtime is None:
        return None
    return runtime.async_shutdown()


@hookimpl
def voltwatch_simulators() -> dict[str, Any]:
    return {"arcm": (simulator.add_arguments, simulator.run)}


DEMO_UNITS = 6


@hookimpl
def voltwatch_demo_site(demo: Any) -> None:
    """Six detectors on one simulated RS485-over-TCP bus; one of them leaks now and then."""
    port = demo.free_port()
    sim = simulator.ArcmSimulator(
        range(1, DEMO_UNITS + 1),
        simulator.SimOptions(leak_every=90.0, leak_duration=30.0),
        state_file=Path(demo.data_dir) / "arcm-simulator.json",
    )
    demo.start(sim.serve_tcp("127.0.0.1", port), name="arcm simulator")
    # The school of the core's demo tree (hub/demo.py DEMO_PROJECTS); added only when a
    # stripped-down demo lacks it, under the same id, so 第一中学 is never listed twice.
    if not demo.has_project("school-1-a"):
        demo.add_project(id="school-1", name="第一中学", lat=40.77, lon=114.88,
                         children=[{"id": "school-1-a", "name": "教学楼A"},
                                   {"id": "school-1-b", "name": "食堂"}])
    places = [("school-1-a", "一层", "配电室"), ("school-1-a", "二层", "弱电间"),
              ("school-1-a", "三层", "楼梯间"), ("school-1-b", "一层", "后厨"),
              ("school-1-b", "一层", "餐厅"), ("school-1-b", "二层", "仓库")]
    for unit in range(1, DEMO_UNITS + 1):
        project, area, location = places[(unit - 1) % len(places)]
        demo.add_device(id=f"arcm-{unit}", name=f"配电箱{unit}", platform=PLATFORM,
                        profile="arcm-ref", project=project, area=area, location=location,
                        poll_interval=1.0,
                        link={"transport": "modbus_tcp", "host": "127.0.0.1", "port": port,
                              "unit": unit})
