"""Links: how a device plugin reaches its detector, whatever carries the bytes.

A detector plugin (arcm, arc_fault) speaks Modbus register reads and writes; whether those go
over Modbus TCP, an RS485 serial line, a serial device server or a GSM DTU socket is the
transport plugin's business. Transport plugins provide factories through the
`voltwatch_link_factories` hook; device plugins call `hub.links.acquire(link_config)` and get
an object that satisfies `ModbusLink`. One physical link (a host:port, a serial port, a DTU)
is shared by every unit on it: `acquire` returns the same object for the same key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

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


LinkFactory = Callable[[dict[str, Any]], Any]


class LinkRegistry:
    """Hands out shared link objects by transport; closes them all at shutdown."""

    def __init__(self) -> None:
        self.factories: dict[str, LinkFactory] = {}
        self._links: dict[str, Any] = {}

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

    async def async_close_all(self) -> None:
        for link in list(self._links.values()):
            try:
                await link.close()
            except Exception:
                _LOGGER.exception("Closing link %s failed", getattr(link, "key", link))
        self._links.clear()
