"""The modbus transport on its own: shared links, serialisation, timeouts, backoff, errors."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
import voltwatch_modbus
import voluptuous as vol
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from voltwatch_modbus import LINK_SCHEMAS, PymodbusLink

from hub.core.links import (
    LinkExceptionResponse,
    LinkRegistry,
    LinkTimeout,
    LinkUnavailable,
    ModbusLink,
)

WAIT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tcp(port: int, **extra: Any) -> dict[str, Any]:
    return LINK_SCHEMAS["modbus_tcp"]({"transport": "modbus_tcp", "host": "127.0.0.1",
                                       "port": port, "timeout": 0.3, "retries": 0, **extra})


@pytest.fixture
async def server() -> Any:
    port = free_port()
    devices = [SimDevice(id=unit, simdata=SimData(0, values=list(range(unit * 100, unit * 100 + 20)),
                                                  datatype=DataType.REGISTERS))
               for unit in (1, 2, 3)]
    srv = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await srv.serve_forever(background=True)
    yield port
    await srv.shutdown()


def test_schemas() -> None:
    conf = LINK_SCHEMAS["modbus_rtu"]({"transport": "modbus_rtu", "port": "/dev/ttyUSB0",
                                       "parity": "e", "unit": 3})
    assert (conf["baudrate"], conf["parity"], conf["stopbits"], conf["retries"]) == (9600, "E", 1, 1)
    assert LINK_SCHEMAS["modbus_tcp"]({"transport": "modbus_tcp", "host": "h"})["port"] == 502
    with pytest.raises(vol.Invalid):
        LINK_SCHEMAS["modbus_rtu"]({"transport": "modbus_rtu", "port": "/dev/x", "baudrate": 1234})
    with pytest.raises(vol.Invalid):
        LINK_SCHEMAS["modbus_tcp"]({"transport": "modbus_tcp", "host": "h", "unit": 300})


async def test_one_link_per_endpoint() -> None:
    registry = LinkRegistry()
    registry.factories.update(voltwatch_modbus.voltwatch_link_factories(None))
    a = registry.acquire({"transport": "modbus_tcp", "host": "10.0.0.5", "port": 502, "unit": 1})
    b = registry.acquire({"transport": "modbus_tcp", "host": "10.0.0.5", "port": 502, "unit": 7})
    c = registry.acquire({"transport": "rtu_over_tcp", "host": "10.0.0.5", "port": 502})
    d = registry.acquire({"transport": "modbus_rtu", "port": "/dev/ttyUSB0", "unit": 2})
    assert a is b and a is not c and isinstance(a, ModbusLink)
    assert d.key == "modbus_rtu:///dev/ttyUSB0"
    await registry.async_close_all()


async def test_read_write_and_exception(server: int) -> None:
    link = PymodbusLink(tcp(server))
    assert await link.read_holding_registers(2, 0, 5) == [200, 201, 202, 203, 204]
    await link.write_register(3, 4, 4242)
    await link.write_registers(3, 5, [1, 2])
    assert await link.read_holding_registers(3, 3, 4) == [303, 4242, 1, 2]
    with pytest.raises(LinkExceptionResponse) as info:
        await link.read_holding_registers(1, 15, 10)
    assert info.value.code == 2 and "illegal data address" in str(info.value)
    assert link.stats.exceptions == 1
    await link.close()


async def test_concurrent_requests_are_serialised_in_order() -> None:
    """A line carries one request at a time, in the order they were asked."""
    port = free_port()
    in_flight = 0
    most = 0
    order: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, most
        while True:
            try:
                head = await reader.readexactly(12)
            except asyncio.IncompleteReadError:
                return
            tid, _proto, _length, unit, _fc, _address, count = struct.unpack(">HHHBBHH", head)
            in_flight += 1
            most = max(most, in_flight)
            order.append(unit)
            await asyncio.sleep(0)  # let any second request arrive if the client sent one
            body = bytes([unit, 3, 2 * count]) + b"\x00\x07" * count
            writer.write(struct.pack(">HHH", tid, 0, len(body)) + body)
            in_flight -= 1
            await writer.drain()

    srv = await asyncio.start_server(handle, "127.0.0.1", port)
    link = PymodbusLink(tcp(port))
    results = await asyncio.gather(*(link.read_holding_registers(u, 0, 2) for u in range(1, 41)))
    assert results == [[7, 7]] * 40
    assert most == 1
    assert order == list(range(1, 41))
    await link.close()
    srv.close()
    await srv.wait_closed()


async def test_silent_unit_times_out() -> None:
    port = free_port()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hears everything, answers nothing

    srv = await asyncio.start_server(handle, "127.0.0.1", port)
    link = PymodbusLink(tcp(port, retries=1))
    with pytest.raises(LinkTimeout, match="unit 4"):
        await link.read_holding_registers(4, 0, 2)
    assert link.stats.timeouts == 2  # the request and its retry
    await link.close()
    srv.close()
    await srv.wait_closed()


async def test_backoff_then_reconnect() -> None:
    port = free_port()
    link = PymodbusLink(tcp(port, reconnect_min=0.05, reconnect_max=0.2))
    with pytest.raises(LinkUnavailable, match="cannot connect"):
        await link.read_holding_registers(1, 0, 1)
    # While backing off, requests fail at once without another connect attempt.
    with pytest.raises(LinkUnavailable, match="next attempt"):
        await link.read_holding_registers(1, 0, 1)
    assert link.stats.connect_failures == 1
    srv = ModbusTcpServer([SimDevice(id=1, simdata=SimData(0, values=[9, 8],
                                                           datatype=DataType.REGISTERS))],
                          address=("127.0.0.1", port))
    await srv.serve_forever(background=True)

    async def until_connected() -> list[int]:
        while True:
            try:
                return await link.read_holding_registers(1, 0, 2)
            except LinkUnavailable:
                await asyncio.sleep(0.02)  # the backoff is the link's; this only re-asks

    assert await asyncio.wait_for(until_connected(), WAIT) == [9, 8]
    assert link.stats.connects == 1
    await link.close()
    await srv.shutdown()


async def test_backoff_doubles_up_to_the_maximum() -> None:
    link = PymodbusLink(tcp(free_port(), reconnect_min=0.5, reconnect_max=2.0))
    delays = []
    for _ in range(4):
        link._next_connect = 0.0
        with pytest.raises(LinkUnavailable):
            await link.read_holding_registers(1, 0, 1)
        delays.append(link._backoff)
    assert delays == [1.0, 2.0, 2.0, 2.0]
    await link.close()


def test_the_fast_holding_register_decoder_matches_pymodbus() -> None:
    """The link's function-3 decoder gives pymodbus's registers and pymodbus's error."""
    from pymodbus.exceptions import ModbusIOException
    from pymodbus.pdu.register_message import ReadHoldingRegistersResponse
    from voltwatch_modbus.link import _HoldingRegistersResponse

    for count in (0, 1, 35, 125):
        words = [(n * 7919) & 0xFFFF for n in range(count)]
        frame = ReadHoldingRegistersResponse(registers=words).encode()
        ours, theirs = _HoldingRegistersResponse(), ReadHoldingRegistersResponse()
        ours.decode(frame)
        theirs.decode(frame)
        assert ours.registers == theirs.registers == words
    with pytest.raises(ModbusIOException, match="byte_count 70 > length of packet 5"):
        _HoldingRegistersResponse().decode(bytes([70, 0, 1, 0, 2]))
