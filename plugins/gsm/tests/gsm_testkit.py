"""Shared pieces of the gsm tests: a real (unstarted) Hub with the gsm server on a loopback port.

The Hub object is real (bus, state machine, registries, link registry); only storage and the
HTTP server are not started, because the DTU server needs neither. DTUs are either the
plugin's own simulator or a raw socket the test drives byte by byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import voltwatch_gsm
from voltwatch_gsm import rtu
from voltwatch_gsm.server import GsmServer
from voltwatch_gsm.simulator import SimOptions, SimStats, SimulatedDtu

from hub.core.conditions import EVENT_DEVICE_CONDITION
from hub.core.events import Event, callback
from hub.hub import Hub

IMEI_A = "860000000000001"
IMEI_B = "860000000000002"


@dataclass
class Harness:
    hub: Hub
    server: GsmServer
    conditions: list[dict[str, Any]] = field(default_factory=list)
    sims: list[SimulatedDtu] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    raws: list[RawDtu] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def link(self, imei: str, unit: int = 1) -> Any:
        return self.hub.links.acquire({"transport": "gsm", "imei": imei, "unit": unit})

    async def start_sim(self, imei: str, units: list[int], **options: Any) -> SimulatedDtu:
        """A simulated DTU, returned once the server has attached it."""
        opts = SimOptions(host="127.0.0.1", port=self.port, **options)
        sim = SimulatedDtu(imei, units, opts, SimStats())
        self.sims.append(sim)
        self.tasks.append(asyncio.get_running_loop().create_task(sim.run()))
        await self.server.wait_until(lambda: imei in self.server.dtus
                                     and self.server.dtus[imei].connected)
        return sim

    async def raw(self, registration: bytes | None = None) -> RawDtu:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        raw = RawDtu(reader, writer)
        self.raws.append(raw)
        if registration is not None:
            writer.write(registration)
            await writer.drain()
        return raw

    async def condition(self, device_id: str, type_: str, active: bool,
                        timeout: float = 10.0) -> dict[str, Any]:
        """Wait for a matching device_condition event (already recorded or still to come)."""
        found = asyncio.get_running_loop().create_future()

        def match(data: dict[str, Any]) -> bool:
            return (data["device_id"] == device_id and data["type"] == type_
                    and data["active"] is active)

        for data in self.conditions:
            if match(data):
                return data

        @callback
        def listener(event: Event) -> None:
            if match(event.data) and not found.done():
                found.set_result(event.data)

        remove = self.hub.bus.listen(EVENT_DEVICE_CONDITION, listener)
        try:
            async with asyncio.timeout(timeout):
                return await found
        finally:
            remove()


class RawDtu:
    """A DTU the test drives by hand: exact bytes out, exact bytes in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_request(self, timeout: float = 10.0) -> bytes:
        """One complete request from the hub (03/06 are 8 bytes, 16 is 9 + byte count)."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readexactly(7)
            if head[1] == rtu.WRITE_MULTIPLE:
                rest = await self.reader.readexactly(2 + head[6])
            else:
                rest = await self.reader.readexactly(1)
        return head + rest

    async def closed_by_hub(self, timeout: float = 10.0) -> bool:
        """True once the hub closed the connection (EOF or reset)."""
        async with asyncio.timeout(timeout):
            try:
                data = await self.reader.read(4096)
            except ConnectionError:
                return True
        return data == b""

    def close(self) -> None:
        self.writer.close()


def read_reply(request: bytes, values: list[int]) -> bytes:
    """A correct 03 reply to `request`."""
    body = bytes((request[0], request[1], 2 * len(values)))
    body += b"".join(v.to_bytes(2, "big") for v in values)
    return rtu.with_crc(body)


async def make_harness(tmp_path: Path, gsm: dict[str, Any] | None = None,
                       devices: list[dict[str, Any]] | None = None) -> Harness:
    section = {"port": 0, "request_timeout": 0.5, **(gsm or {})}
    hub = Hub(tmp_path, config={"gsm": section, "devices": devices or []})
    hub.bus.bind_loop(asyncio.get_running_loop())
    for device in devices or []:
        await hub.devices.async_upsert(**device, source="config")
    hub.links.factories.update(voltwatch_gsm.voltwatch_link_factories(hub))
    server = voltwatch_gsm.get_server(hub)
    harness = Harness(hub, server)

    @callback
    def record(event: Event) -> None:
        harness.conditions.append(event.data)

    hub.bus.listen(EVENT_DEVICE_CONDITION, record)
    await server.async_start()
    return harness


async def close_harness(harness: Harness) -> None:
    for sim in harness.sims:
        sim.close()
    for raw in harness.raws:
        raw.close()
    for task in harness.tasks:
        task.cancel()
    await asyncio.gather(*harness.tasks, return_exceptions=True)
    await harness.server.async_stop()
    await harness.hub.bus.async_drain()


def device(device_id: str, imei: str, unit: int) -> dict[str, Any]:
    return {"id": device_id, "platform": "arcm", "project": "market-1",
            "link": {"transport": "gsm", "imei": imei, "unit": unit}}


@contextlib.asynccontextmanager
async def default_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """Two configured DTUs: A with units 1 and 2, B with unit 1."""
    h = await make_harness(tmp_path, devices=[device("arcm-a1", IMEI_A, 1),
                                              device("arcm-a2", IMEI_A, 2),
                                              device("arcm-b1", IMEI_B, 1)])
    try:
        yield h
    finally:
        await close_harness(h)
