"""Links: how a device plugin reaches its detector, whatever carries the bytes.

A detector plugin (arcm, arc_fault) speaks Modbus register reads and writes; whether those go
over Modbus TCP, an RS485 serial line, a serial device server or a GSM DTU socket is the
transport plugin's business. Transport plugins provide factories through the
`voltwatch_link_factories` hook; device plugins call `hub.links.acquire(link_config)` and get
an object that satisfies `ModbusLink`. One physical link (a host:port, a serial port, a DTU)
is shared by every unit on it: `acquire` returns the same object for the same key.

A link whose bytes are paid for (a GSM DTU on a SIM plan) may also satisfy `MeteredLink`: a
poller that finds it polls in tiers, declares its regular reads as a `PollSchedule`, and
honours the `measure_scale` the link sets to stay inside its data budget. Poller and link
cooperate through these two small types only; neither imports the other's plugin.

Pollers do not run a task per unit: `LinkRegistry.scheduler(link)` gives the one
`hub.core.polling.LinkScheduler` of that link, which walks its units in order of due time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .polling import LinkScheduler

_LOGGER = logging.getLogger(__name__)


class LinkError(Exception):
    """A request could not be completed; the message names the link and the reason."""


class LinkTimeout(LinkError):
    """The unit did not answer within the request timeout (after retries)."""


class LinkUnavailable(LinkError):
    """The link itself is down (not connected, or waiting out its reconnect backoff).

    Separate from a timeout so a poller can tell "this unit is silent" from "the whole line
    is gone" and does not spend a request timeout per unit while the line is down.
    """


class LinkElsewhere(LinkError):
    """The link is driven by another worker (e.g. a GSM DTU connected to worker b).

    Not a failure of the unit: a poller skips it (no `communication_lost`: the owning worker
    polls and raises), and a control call answers a clear failure naming `owner`.
    """

    def __init__(self, message: str, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


class LinkProtocolError(LinkError):
    """The unit answered, but with something unusable (a short or malformed frame)."""


class LinkExceptionResponse(LinkError):
    """The unit answered with a Modbus exception code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@runtime_checkable
class ModbusLink(Protocol):
    """What a Modbus-speaking device plugin needs from its link. Addresses are 0-based."""

    key: str

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]: ...

    async def write_register(self, unit: int, address: int, value: int) -> None: ...

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True, eq=False)  # identity: two detectors may declare the same reads
class PollSchedule:
    """A poller's regular reads, declared to a metered link so it can project its traffic.

    Reads are `(address, count)` holding-register requests per poll of each tier. The status
    tier (alarm, fault, relay bits) is what makes an alarm reach people, so a link never
    stretches it; it may raise `measure_scale` (>= 1) to lengthen the measurement tier, and it
    says why in `reason` (shown to the admin by the poller and the link's own API).
    """

    device_id: str
    unit: int
    status_reads: list[tuple[int, int]]
    status_interval: float
    measure_reads: list[tuple[int, int]]
    measure_interval: float
    measure_scale: float = 1.0
    reason: str | None = None
    #: Called by the link after it changed `measure_scale`, so the poller reschedules at once.
    on_change: list[Callable[[], None]] = field(default_factory=list)

    @property
    def effective_measure_interval(self) -> float:
        return self.measure_interval * max(1.0, self.measure_scale)


@runtime_checkable
class MeteredLink(Protocol):
    """Optional extension of a link whose bytes cost money (see `PollSchedule`).

    `polling_defaults()` gives the tier intervals configured for this link (keys
    `status_interval`, `measure_interval`; absent when not configured there), which rank below a
    device's own keys and above its profile's. `declare_schedule()` registers a poller's reads
    and returns the call that withdraws them (when the device stops).
    """

    def polling_defaults(self) -> dict[str, float]: ...

    def declare_schedule(self, schedule: PollSchedule) -> Callable[[], None]: ...


LinkFactory = Callable[[dict[str, Any]], Any]


class LinkRegistry:
    """Hands out shared link objects by transport; closes them all at shutdown."""

    def __init__(self) -> None:
        self.factories: dict[str, LinkFactory] = {}
        self._links: dict[str, Any] = {}
        self._schedulers: dict[str, LinkScheduler] = {}

    def transports(self) -> list[str]:
        return sorted(self.factories)

    def acquire(self, link_config: dict[str, Any]) -> Any:
        transport = link_config.get("transport")
        factory = self.factories.get(transport) if isinstance(transport, str) else None
        if factory is None:
            raise LinkError(
                f"No transport {transport!r} is installed (known: {', '.join(self.transports()) or 'none'})"
            )
        link = factory(link_config)
        existing = self._links.get(link.key)
        if existing is not None:
            return existing
        self._links[link.key] = link
        return link

    def links(self) -> list[Any]:
        return list(self._links.values())

    def scheduler(self, link: Any) -> LinkScheduler:
        """The poll scheduler of `link` (by its key): every unit on one line, one task."""
        key = link.key
        scheduler = self._schedulers.get(key)
        if scheduler is None:
            scheduler = self._schedulers[key] = LinkScheduler(key)
        return scheduler

    async def async_close_all(self) -> None:
        for scheduler in list(self._schedulers.values()):
            await scheduler.close()
        self._schedulers.clear()
        for link in list(self._links.values()):
            try:
                await link.close()
            except Exception:
                _LOGGER.exception("Closing link %s failed", getattr(link, "key", link))
        self._links.clear()
