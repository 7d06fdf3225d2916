"""The `gsm` link transport: a `hub.core.links.ModbusLink` that polls through a DTU's socket.

Keyed by the DTU's id, so every unit on the RS485 bus behind one DTU shares one link and one
request lock, exactly like units on one serial line. Device plugins never see this class; they
call `hub.links.acquire({transport: gsm, imei: ..., unit: ...})`.

It is also a `hub.core.links.MeteredLink`: a SIM plan bills every byte, so detectors behind it
poll in tiers, declare their reads, and let the DTU's budget stretch their measurement tier.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from hub.core.links import LinkElsewhere, LinkError, LinkProtocolError, PollSchedule

from . import rtu

if TYPE_CHECKING:
    from .server import Dtu, GsmServer


class GsmLink:
    """Modbus-RTU requests over the socket the DTU opened to the hub."""

    def __init__(self, server: GsmServer, dtu_id: str) -> None:
        self.server = server
        self.imei = dtu_id
        self.key = f"gsm://{dtu_id}"

    @property
    def dtu(self) -> Dtu:
        """The DTU, for a request: refused at once when another worker holds its socket."""
        owner = self.server.ownership.owner_elsewhere(self.imei)
        if owner is not None:
            raise LinkElsewhere(f"DTU {self.imei} is connected to worker {owner}", owner)
        return self.server.dtu(self.imei)

    @property
    def owner(self) -> str | None:
        """Another worker that holds the DTU's socket, or None (this worker or nobody)."""
        return self.server.ownership.owner_elsewhere(self.imei)

    @property
    def available(self) -> bool:
        """Connected and not silent: a poller may skip its units while this is False."""
        dtu = self.server.dtus.get(self.imei)
        return dtu is not None and dtu.connected and not dtu.communication_lost

    def polling_defaults(self) -> dict[str, float]:
        """Tier intervals configured for this DTU (`gsm.dtus.<id>`), else for every DTU."""
        settings = self.server.settings
        out: dict[str, float] = {}
        for key in ("status_interval", "measure_interval"):
            value = settings.for_dtu(self.imei, key)
            if value is not None:
                out[key] = float(value)
        return out

    def declare_schedule(self, schedule: PollSchedule) -> Callable[[], None]:
        """A detector's regular reads, for the traffic projection and the budget."""
        return self.server.traffic.declare(self.imei, schedule)

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        if not 1 <= count <= rtu.MAX_READ:
            raise LinkError(f"DTU {self.imei}: cannot read {count} registers in one request")
        reply = await self.dtu.request(unit, rtu.read_request(unit, address, count),
                                       rtu.READ_HOLDING)
        if reply[2] != 2 * count:
            raise LinkProtocolError(
                f"DTU {self.imei} unit {unit}: asked for {count} registers, got {reply[2] // 2}"
            )
        return rtu.decode_registers(reply)

    async def write_register(self, unit: int, address: int, value: int) -> None:
        request = rtu.write_single_request(unit, address, value)
        reply = await self.dtu.request(unit, request, rtu.WRITE_SINGLE)
        if reply != request:
            raise LinkProtocolError(
                f"DTU {self.imei} unit {unit}: write of register {address} not echoed"
            )

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        if not 1 <= len(values) <= rtu.MAX_WRITE:
            raise LinkError(f"DTU {self.imei}: cannot write {len(values)} registers at once")
        reply = await self.dtu.request(
            unit, rtu.write_multiple_request(unit, address, values), rtu.WRITE_MULTIPLE
        )
        got_address, got_count = struct.unpack_from(">HH", reply, 2)
        if (got_address, got_count) != (address, len(values)):
            raise LinkProtocolError(
                f"DTU {self.imei} unit {unit}: write of {len(values)} registers at {address} "
                f"answered for {got_count} at {got_address}"
            )

    async def close(self) -> None:
        """Drop the DTU's current socket; it will dial in again (used at hub shutdown)."""
        dtu = self.server.dtus.get(self.imei)
        if dtu is not None and dtu.connection is not None:
            dtu.connection.close()
