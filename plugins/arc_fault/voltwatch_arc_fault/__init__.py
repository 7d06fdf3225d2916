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
from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.config import duration
from hub.core.events import EVENT_DEVICE_REGISTRY_UPDATED, Event, callback
from hub.core.links import LinkError
from hub.core.services import ServiceCall

from . import simulator
from .device import COMMANDS, PLATFORM, ArcFaultDevice, DeviceNotFound

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


class ArcFaultRuntime:
    """The plugin's state inside one hub: its detectors and the services that reach them."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.devices: dict[str, ArcFaultDevice] = {}
        self.failed: dict[str, str] = {}
        self._unsub: Any = None

    async def async_setup(self, config: dict[str, Any]) -> None:
        self._register_services()
        seen: set[str] = set()
        for device in config.get("devices", []) or []:
            if device.get("platform") == PLATFORM:
                seen.add(device["id"])
                await self.add_device(device)
        registry = getattr(self.hub, "devices", None)
        for entry in list(registry or []):
            if entry.platform == PLATFORM and entry.id not in seen:
                await self.add_device(self._from_entry(entry))
        if registry is not None:
            self._unsub = self.hub.bus.listen(EVENT_DEVICE_REGISTRY_UPDATED,
                                              self._registry_updated)

    @staticmethod
    def _from_entry(entry: Any) -> dict[str, Any]:
        """A device created through the API keeps plugin settings in `options`."""
        return {**entry.options, "id": entry.id, "name": entry.name, "platform": entry.platform,
                "project": entry.project, "area": entry.area, "location": entry.location,
                "link": entry.link}

    @callback
    def _registry_updated(self, event: Event) -> None:
        device_id = event.data.get("device_id")
        action = event.data.get("action")
        entry = self.hub.devices.get(device_id) if device_id else None
        known = device_id in self.devices or device_id in self.failed
        if action == "remove" and known:
            self.hub.create_task(self.remove_device(device_id),
                                 name=f"arc_fault remove {device_id}")
        elif entry is not None and entry.platform == PLATFORM and (
                action == "create" or (action == "update" and known)):
            self.hub.create_task(self.add_device(self._from_entry(entry)),
                                 name=f"arc_fault add {device_id}")

    async def add_device(self, raw: dict[str, Any]) -> ArcFaultDevice | None:
        """(Re)start one detector; a bad device is reported as a fault, the rest go on."""
        device_id = raw["id"]
        if device_id in self.devices:
            await self.remove_device(device_id)
        try:
            config = _DEVICE(dict(raw))
            link = self.hub.links.acquire(config.get("link") or {})
        except (vol.Invalid, LinkError) as err:
            reason = str(err)
            _LOGGER.error("arc_fault device %s cannot start: %s", device_id, reason)
            self.failed[device_id] = reason
            condition = Condition.create(device_id, "device_fault", True,
                                         detail=f"配置错误 {reason}",
                                         detail_en=f"configuration error: {reason}",
                                         source=PLATFORM)
            self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
            return None
        self.failed.pop(device_id, None)
        device = ArcFaultDevice(self.hub, config, link)
        await device.async_register_entities()
        self.devices[device_id] = device
        device.start()
        return device

    async def remove_device(self, device_id: str) -> None:
        device = self.devices.pop(device_id, None)
        self.failed.pop(device_id, None)
        if device is not None:
            await device.stop()

    async def async_shutdown(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        for device_id in list(self.devices):
            await self.remove_device(device_id)
        for name in (*COMMANDS, "set_parameter"):
            self.hub.services.remove(PLATFORM, name)

    def device(self, device_id: str) -> ArcFaultDevice:
        device = self.devices.get(device_id)
        if device is None:
            reason = self.failed.get(device_id)
            raise DeviceNotFound(f"No arc_fault device {device_id!r}" +
                                 (f" is running ({reason})" if reason else ""))
        return device

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

