"""Voltwatch device plugin `arc_fault`: Modbus arc-fault detectors (故障电弧探测器, afd-ref).

Talks to detectors through whatever link the device's `link:` names (`hub.links.acquire`), so
it works over Modbus TCP, RS485 (modbus_rtu) and GSM DTUs alike; adds the hub-side GB 50166
rule (>= 14 arc half-cycles in one second raises `arc_fault`, <= 9 never does) next to the
detector's own arc bit. See docs/plugins/arc_fault.md.

Hooks: device schema `arc_fault`, setup/shutdown (pollers, entities, services `arc_fault.*`),
metrics, the simulator `voltwatch simulate arc_fault` and the demo site's detectors.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import voluptuous as vol

from hub import hookimpl
from hub.core.config import duration
from hub.core.platform import DevicePlatform
from hub.core.services import ServiceCall

from . import simulator
from .device import COMMANDS, PLATFORM, ArcFaultDevice

__all__ = ["DEVICE_SCHEMA", "ArcFaultDevice", "ArcFaultRuntime", "runtime_for"]

_LOGGER = logging.getLogger(__name__)

DEVICE_SCHEMA: dict[Any, Any] = {
    vol.Optional("poll_interval"): vol.All(duration, vol.Range(min=0.01, max=3600)),
    vol.Optional("failed_polls_for_comm_loss", default=3):
        vol.All(vol.Coerce(int), vol.Range(min=1, max=1000)),
}
_DEVICE = vol.Schema(DEVICE_SCHEMA, extra=vol.ALLOW_EXTRA)
SERVICE_SCHEMA = vol.Schema({vol.Required("device_id"): str})
SET_PARAMETER_SCHEMA = vol.Schema({
    vol.Required("device_id"): str,
    vol.Required("name"): str,
    vol.Required("value"): vol.Any(int, float, str),
})


class ArcFaultRuntime(DevicePlatform[ArcFaultDevice]):
    """The plugin's state inside one hub: its detectors and the services that reach them
    (device life and failures: hub.core.platform.DevicePlatform)."""

    platform = PLATFORM
    fault_source = PLATFORM

    def build(self, raw: dict[str, Any]) -> ArcFaultDevice:
        config = _DEVICE(dict(raw))
        link = self.hub.links.acquire(config.get("link") or {})
        return ArcFaultDevice(self.hub, config, link)

    async def async_shutdown(self) -> None:
        await super().async_shutdown()
        for name in (*COMMANDS, "set_parameter"):
            self.hub.services.remove(PLATFORM, name)

    def _register_services(self) -> None:
        services = self.hub.services
        for name in COMMANDS:
            async def handle(call: ServiceCall, name: str = name) -> dict[str, Any]:
                return await self.device(call.data["device_id"]).command(name, call.context)

            services.register(PLATFORM, name, handle, schema=SERVICE_SCHEMA,
                              supports_response=True,
                              description=f"Send {name} to an arc-fault detector; answers "
                                          "after the status read-back confirms it")

        async def set_parameter(call: ServiceCall) -> dict[str, Any]:
            return await self.device(call.data["device_id"]).set_parameter(
                call.data["name"], call.data["value"], call.context)

        services.register(PLATFORM, "set_parameter", set_parameter,
                          schema=SET_PARAMETER_SCHEMA, supports_response=True,
                          description="Write arc_alarm_threshold (1-100 half-cycles/s); "
                                      "answers with the value read back")

    def stats(self) -> dict[str, float]:
        devices = list(self.devices.values())
        return {
            "arc_fault_devices": len(devices),
            "arc_fault_devices_online": sum(1 for d in devices if d.online),
            "arc_fault_polls_total": sum(d.polls for d in devices),
            "arc_fault_failed_polls_total": sum(d.polls - d.good_polls for d in devices),
        }


_RUNTIMES: weakref.WeakKeyDictionary[Any, ArcFaultRuntime] = weakref.WeakKeyDictionary()


def runtime_for(hub: Any) -> ArcFaultRuntime | None:
    return _RUNTIMES.get(hub)


@hookimpl
def voltwatch_device_schemas() -> dict[str, Any]:
    return {PLATFORM: DEVICE_SCHEMA}


@hookimpl
def voltwatch_setup(hub: Any, config: dict[str, Any]) -> Any:
    runtime = ArcFaultRuntime(hub)
    _RUNTIMES[hub] = runtime
    return runtime.async_setup(config)


@hookimpl
def voltwatch_shutdown(hub: Any) -> Any:
    runtime = _RUNTIMES.pop(hub, None)
    return runtime.async_shutdown() if runtime is not None else None


@hookimpl
def voltwatch_metrics(hub: Any) -> dict[str, float]:
    runtime = _RUNTIMES.get(hub)
    return runtime.stats() if runtime is not None else {}


@hookimpl
def voltwatch_simulators() -> dict[str, Any]:
    return {"arc_fault": (simulator.add_arguments, simulator.run)}


DEMO_UNITS = 2


@hookimpl
def voltwatch_demo_site(demo: Any) -> None:
    """Two detectors on one simulated bus; every ten minutes one of them sees an arcing second
    after a quiet one (9 then 14 half-cycles), so the demo shows the GB 50166 boundary."""
    port = demo.free_port()
    sim = simulator.ArcFaultSimulator(range(1, DEMO_UNITS + 1), arcs=[3, 9, 14, 16, 2, 0],
                                      arcs_every=600.0)
    demo.start(sim.serve_tcp("127.0.0.1", port), name="arc_fault simulator")
    # The school of the core's demo tree (hub/demo.py DEMO_PROJECTS); added only when a
    # stripped-down demo lacks it, under the same id, so 第一中学 is never listed twice.
    if not demo.has_project("school-1-a"):
        demo.add_project(id="school-1", name="第一中学", lat=40.77, lon=114.88,
                         children=[{"id": "school-1-a", "name": "教学楼A"},
                                   {"id": "school-1-b", "name": "食堂"}])
    places = [("school-1-a", "一层", "配电室"), ("school-1-b", "一层", "后厨")]
    for unit in range(1, DEMO_UNITS + 1):
        project, area, location = places[(unit - 1) % len(places)]
        demo.add_device(id=f"afd-{unit}", name=f"电弧探测器{unit}", platform=PLATFORM,
                        project=project, area=area, location=location, poll_interval=1.0,
                        link={"transport": "modbus_tcp", "host": "127.0.0.1", "port": port,
                              "unit": unit})

