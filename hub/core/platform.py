"""A polled-detector plugin's life inside one hub: which devices run, and how they fail.

Every detector plugin that polls through a link (arcm, arc_fault, and the next Modbus
detector an integrator writes) needs the same bookkeeping, and getting it subtly wrong is how
a hub ends up polling a device a site admin just deleted:

* devices from `configuration.yaml` start first; then those created through the API (registry
  entries of this platform, plugin settings in their `options`) that the file does not name;
* the registry's create / update / remove events start, restart and stop devices while the
  hub runs; an entry deleted while its device is still registering its entities leaves no
  entity behind and never starts polling;
* a device whose settings or link are wrong does not start, is remembered with its reason
  (`failed`, named by a service call to it) and raises a `device_fault` condition
  ("配置错误 …"); the others go on;
* its services answer with the errors below, which the HTTP layer maps to status codes.

A plugin subclasses `DevicePlatform`, sets `platform`, and implements `build(raw)` (validate,
acquire the link, construct the device: raise one of `config_errors` for a bad device) and
`_register_services()`; the device object needs `async_register_entities()`, `start()` and
`await stop()`.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Generic, TypeVar

import voluptuous as vol

from .conditions import EVENT_DEVICE_CONDITION, Condition
from .events import EVENT_DEVICE_REGISTRY_UPDATED, Event, callback
from .links import LinkElsewhere, LinkError
from .services import CallElsewhere, ServiceError

_LOGGER = logging.getLogger(__name__)


# -- service failures a detector's services answer with ----------------------------------
class DeviceNotFound(ServiceError):
    status = 404


class DeviceUnreachable(ServiceError):
    """The request got no answer (timeout, link down): the result is unknown."""

    status = 504


class DeviceElsewhere(CallElsewhere):
    """Another worker (`owner`) holds the link (e.g. the DTU's socket).

    The service registry forwards the call there (hub/core/peers.py) unless `forwardable` is
    False: the command was already sent from here before ownership moved, and running it
    again on the owner could run it twice. Then the caller gets this 409.
    """

    @classmethod
    def for_link(cls, device_id: str, what: str, err: LinkElsewhere, *,
                 sent: bool = False) -> DeviceElsewhere:
        """The error a detector's service raises when its link answers `LinkElsewhere`;
        `sent`: part of the call already went out from this worker."""
        if sent:
            return cls(f"{device_id}: {what} not sent: {err}; the device moved to worker "
                       f"{err.owner} during the call, which was not repeated there: check the "
                       "device's state before calling again", err.owner, forwardable=False)
        return cls(f"{device_id}: {what} not sent: {err}; call it on worker {err.owner}",
                   err.owner)


class DeviceRejected(ServiceError):
    """The device answered but refused (exception code) or kept another value."""

    status = 502


class CommandNotConfirmed(ServiceError):
    """The command was accepted but the read-back never showed its result."""

    status = 504


D = TypeVar("D")


class DevicePlatform(Generic[D]):
    """The running devices of one platform in one hub (see the module docstring)."""

    platform: ClassVar[str]
    #: What `build` raises for a device that cannot start (reported, not fatal).
    config_errors: ClassVar[tuple[type[Exception], ...]] = (vol.Invalid, LinkError)
    #: `source` of the configuration-error condition ("" leaves it to the alarm manager).
    fault_source: ClassVar[str] = ""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.devices: dict[str, D] = {}
        self.failed: dict[str, str] = {}
        self._unsub: Any = None

    # -- what a plugin provides ---------------------------------------------------------
    def build(self, raw: dict[str, Any]) -> D:
        """Validate `raw`, acquire its link and construct the device (not started)."""
        raise NotImplementedError

    def _register_services(self) -> None:
        """Register the platform's services (called once, by `async_setup`)."""

    def _from_entry(self, entry: Any) -> dict[str, Any]:
        """A device created through the API keeps plugin settings in `options`."""
        return {**entry.options, "id": entry.id, "name": entry.name, "platform": entry.platform,
                "project": entry.project, "area": entry.area, "location": entry.location,
                "link": entry.link}

    # -- life -----------------------------------------------------------------------------
    async def async_setup(self, config: dict[str, Any]) -> None:
        self._register_services()
        seen: set[str] = set()
        for device in config.get("devices", []) or []:
            if device.get("platform") == self.platform:
                seen.add(device["id"])
                await self.add_device(device)
        registry = getattr(self.hub, "devices", None)
        for entry in list(registry or []):
            if entry.platform == self.platform and entry.id not in seen:
                await self.add_device(self._from_entry(entry))
        if registry is not None:
            self._unsub = self.hub.bus.listen(EVENT_DEVICE_REGISTRY_UPDATED,
                                              self._registry_updated)

    @callback
    def _registry_updated(self, event: Event) -> None:
        device_id = event.data.get("device_id")
        action = event.data.get("action")
        entry = self.hub.devices.get(device_id) if device_id else None
        known = device_id in self.devices or device_id in self.failed
        if action == "remove" and known:
            self.hub.create_task(self.remove_device(device_id),
                                 name=f"{self.platform} remove {device_id}")
        elif entry is not None and entry.platform == self.platform and (
                action == "create" or (action == "update" and known)):
            self.hub.create_task(self.add_device(self._from_entry(entry), registered=True),
                                 name=f"{self.platform} add {device_id}")

    async def add_device(self, raw: dict[str, Any], registered: bool = False) -> D | None:
        """(Re)start one detector; a bad device is reported as a fault, the rest go on.

        `registered`: started for a registry entry (an API add or edit). Registering the
        entities yields to the loop, and the entry may be deleted meanwhile; such a device must
        not start polling, nor leave its entities behind.
        """
        device_id = raw["id"]
        if device_id in self.devices:
            await self.remove_device(device_id)
        try:
            device = self.build(raw)
        except self.config_errors as err:
            reason = str(err)
            _LOGGER.error("%s device %s cannot start: %s", self.platform, device_id, reason)
            self.failed[device_id] = reason
            condition = Condition.create(device_id, "device_fault", True,
                                         detail=f"配置错误 {reason}",
                                         detail_en=f"configuration error: {reason}",
                                         source=self.fault_source)
            self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
            return None
        self.failed.pop(device_id, None)
        await device.async_register_entities()  # type: ignore[attr-defined]
        if registered and self.hub.devices.get(device_id) is None:
            for entity in self.hub.entities.for_device(device_id):
                await self.hub.entities.async_remove(entity.entity_id)
                self.hub.states.async_remove(entity.entity_id)
            return None
        self.devices[device_id] = device
        device.start()  # type: ignore[attr-defined]
        return device

    async def remove_device(self, device_id: str) -> None:
        device = self.devices.pop(device_id, None)
        self.failed.pop(device_id, None)
        if device is not None:
            await device.stop()  # type: ignore[attr-defined]

    async def async_shutdown(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        for device_id in list(self.devices):
            await self.remove_device(device_id)

    def device(self, device_id: str) -> D:
        """The running device, or DeviceNotFound naming why it is not running."""
        device = self.devices.get(device_id)
        if device is None:
            reason = self.failed.get(device_id)
            raise DeviceNotFound(f"No {self.platform} device {device_id!r}" +
                                 (f" is running ({reason})" if reason else ""))
        return device
