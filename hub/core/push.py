"""Push devices: detectors that send on their own (MQTT, NB-IoT bridges) instead of being polled.

A transport plugin (mqtt) receives a message for a device id, looks the device up in the
registry and hands the message to the handler of the device's platform (smoke, …), which a
device-type plugin provides through the `voltwatch_push_handlers` hook. So the transport knows
nothing about smoke detectors, and a smoke plugin knows nothing about MQTT topics.

Commands travel the other way through a link: `hub.links.acquire(device["link"])` returns an
object satisfying `CommandLink` for push transports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .registries import DeviceEntry

PushKind = Literal["telemetry", "event", "status", "ack"]


@dataclass(slots=True)
class PushMessage:
    """One decoded message from a push device (CONTRACTS §6 payload shapes)."""

    device_id: str
    kind: PushKind
    payload: dict[str, Any]
    ts: float  # the device's timestamp when it sent one, else the time of arrival
    source: str = ""  # where it came from, for logs (an MQTT topic, a peer address)
    extra: dict[str, Any] = field(default_factory=dict)


PushHandler = Callable[["DeviceEntry", PushMessage], Awaitable[None] | None]


class CommandError(Exception):
    """A command was not confirmed by the device (timeout, refused, transport down)."""


@runtime_checkable
class CommandLink(Protocol):
    """What a push device plugin needs to command its device.

    A link may also say `partial_delivery = True` (read it with `getattr(link,
    "partial_delivery", False)`): this hub then gets only a share of each device's telemetry
    (several workers on an MQTT shared subscription), so silence on it proves nothing and a
    silence watchdog must not raise `communication_lost` from it.

    A link may also say `intake_lag` (seconds, read it with `getattr(link, "intake_lag",
    0.0)`): how far behind real time this hub is handling the link's readings (its own
    backlog, measured by the transport). A silence watchdog adds it to its limit: a report
    still waiting in the hub's queue is not the detector's silence.
    """

    key: str

    async def command(
        self, device_id: str, command: str, params: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send and wait for the device's ack; returns the ack payload or raises CommandError."""
        ...

    async def close(self) -> None: ...
