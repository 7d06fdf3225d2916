"""What device simulators share: a Modbus bus (TCP through pymodbus, RTU on a pty) and an
MQTT device's connection life.

Device plugins ship simulators (`voltwatch simulate arcm`, `… arc_fault`) that the demo, the
tests and the benchmarks talk to over real bytes. The register models differ per detector;
the wire does not. A plugin's simulator subclasses `SimulatedBus`, keeps its unit models in
`units` and implements `read` and `write`; this module serves them:

* Modbus TCP through pymodbus's own server (a `SimDevice` per unit whose action callback keeps
  the registers in step with the model), one server for a whole bus of unit ids;
* Modbus RTU (CRC-16) on a pty, a serial port or any byte stream, through `RtuResponder`,
  because tests need what pymodbus's server will not do: stay silent for unknown units like a
  real RS485 slave, and put CRC garbage or short frames on the line on purpose (`mangle`).

MQTT device simulators (the mqtt plugin's generic device, the smoke detector) share
`MqttSimulatedDevice`: the connection's life through a real broker, with a will, reconnects and
a clean `offline` on stop.

Plugins never import each other; this lives in the hub package so both detector plugins can
use it (it imports no plugin and nothing of the running hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tty
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import aiomqtt
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from hub.core.tasks import cancel_and_wait, cancel_requested

_LOGGER = logging.getLogger(__name__)


def parse_units(text: str) -> list[int]:
    """`1-8` or `1,3,10-12` -> unit ids (1..247), sorted, without repeats."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = (int(x) for x in part.split("-", 1))
            units.extend(range(low, high + 1))
        else:
            units.append(int(part))
    bad = [u for u in units if not 1 <= u <= 247]
    if bad:
        raise ValueError(f"unit ids must be 1..247: {bad}")
    return sorted(set(units))


def units_text(units: Iterable[int]) -> str:
    """[1, 2, 3] -> `1-3`; [1, 3] -> `1,3` (for log lines)."""
    ids = sorted(units)
    return f"{ids[0]}-{ids[-1]}" if ids and ids == list(range(ids[0], ids[-1] + 1)) else \
        ",".join(map(str, ids))


def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC of `frame`, as the two bytes that follow it on the line."""
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def open_pty() -> tuple[int, int, str]:
    """A raw pty pair: (master fd, slave fd, slave name); keep the slave fd open while in use."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


class SimulatedBus:
    """A bus of simulated units, servable over Modbus TCP, a pty or a serial port.

    Subclasses set `name`, `register_count` and `default_port`, fill `units` (unit id ->
    model) and implement `read` (registers or an exception code) and `write` (None or an
    exception code). `silent_units` stay silent on every transport, as an unplugged unit.
    """

    name: ClassVar[str] = "modbus"
    register_count: ClassVar[int] = 100
    default_port: ClassVar[int] = 502
    #: Over TCP, pymodbus answers an unknown unit id with exception 04; a real RS485 unit
    #: behind a gateway stays silent. True: silent, as on the serial line.
    silent_unknown_over_tcp: ClassVar[bool] = True

    def __init__(self) -> None:
        self.units: dict[int, Any] = {}
        self.silent_units: set[int] = set()
        self.requests = 0

    def read(self, unit: int, address: int, count: int) -> list[int] | ExcCodes:
        raise NotImplementedError

    def write(self, unit: int, address: int, values: list[int]) -> ExcCodes | None:
        raise NotImplementedError

    # -- Modbus TCP via pymodbus ----------------------------------------------------------
    async def _action(self, unit: int, function_code: int, start_address: int, address: int,
                      count: int, registers: list[int], set_values: Any) -> ExcCodes | None:
        if set_values is None and function_code not in (3, 4):
            return None  # pymodbus reading back what was just written, for the echo
        if set_values is None:
            result = self.read(unit, address, count)
            if isinstance(result, ExcCodes):
                return result
            registers[address - start_address:address - start_address + count] = result
            return None
        # The echo of a write is what was written (fc 06 / 16 per spec); the next read copies
        # the model's registers again, so a command register reads back 0 as the device's does.
        return self.write(unit, address, [int(v) for v in set_values])

    def sim_devices(self) -> list[SimDevice]:
        devices = []
        for unit in self.units:
            async def action(fc: int, start: int, address: int, count: int, regs: list[int],
                             values: Any, unit: int = unit) -> ExcCodes | None:
                return await self._action(unit, fc, start, address, count, regs, values)

            devices.append(SimDevice(
                id=unit,
                simdata=SimData(0, count=self.register_count, values=0,
                                datatype=DataType.REGISTERS),
                action=action,
            ))
        return devices

    async def start_tcp(self, host: str = "127.0.0.1",
                        port: int | None = None) -> ModbusTcpServer:
        """Start listening and return the server (stop it with `await server.shutdown()`)."""
        port = self.default_port if port is None else port
        server = ModbusTcpServer(self.sim_devices(), address=(host, port),
                                 ignore_missing_devices=True)
        if self.silent_unknown_over_tcp:
            server.context = _SilentCore(self, server.context)
        await server.serve_forever(background=True)
        _LOGGER.info("%s simulator: Modbus TCP on %s:%d, units %s", self.name, host, port,
                     units_text(self.units))
        return server

    async def serve_tcp(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        server = await self.start_tcp(host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await server.shutdown()

    # -- Modbus RTU on a pty or serial port -----------------------------------------------
    def responder(self) -> RtuResponder:
        return RtuResponder(self)

    async def serve_fd(self, fd: int, responder: RtuResponder | None = None) -> None:
        """Answer RTU requests on a file descriptor (the master side of a pty)."""
        responder = responder or self.responder()
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                closed.set()
                return
            for frame in responder.feed(data):
                os.write(fd, frame)

        loop.add_reader(fd, readable)
        try:
            await closed.wait()
        finally:
            loop.remove_reader(fd)

    async def serve_serial(self, port: str, baudrate: int = 9600) -> None:
        import serial_asyncio

        reader, writer = await serial_asyncio.open_serial_connection(url=port, baudrate=baudrate)
        responder = self.responder()
        _LOGGER.info("%s simulator: Modbus RTU on %s, units %s", self.name, port,
                     units_text(self.units))
        try:
            while data := await reader.read(4096):
                for frame in responder.feed(data):
                    writer.write(frame)
                await writer.drain()
        finally:
            writer.close()


class _SilentCore(SimCore):
    """pymodbus answers unknown unit ids with exception 04; a real RS485 unit stays silent."""

    def __init__(self, bus: SimulatedBus, inner: SimCore) -> None:
        self.bus = bus
        self.devices = inner.devices
        self._inner = inner

    def _check(self, device_id: int) -> None:
        if device_id not in self.devices or device_id in self.bus.silent_units:
            raise NoSuchIdException(f"unit {device_id} is not on this bus")

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> Any:
        self._check(device_id)
        return await self._inner.async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Any) -> Any:
        self._check(device_id)
        return await self._inner.async_setValues(device_id, func_code, address, values)


class RtuResponder:
    """Frames RTU requests out of a byte stream and answers them (fc 03, 06, 16).

    `mangle` lets a test replace an outgoing frame (CRC garbage, a short frame, silence).
    """

    def __init__(self, bus: SimulatedBus) -> None:
        self.simulator = bus
        self.buffer = b""
        self.crc_errors = 0
        self.mangle: Callable[[int, bytes], bytes | None] | None = None

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out: list[bytes] = []
        while len(self.buffer) >= 4:
            buf = self.buffer
            function = buf[1]
            if function in (3, 6):
                size = 8
            elif function == 16:
                if len(buf) < 7:
                    break
                size = 9 + buf[6]
            else:
                size = 4
            if len(buf) < size:
                break
            frame, rest = buf[:size], buf[size:]
            if crc16(frame[:-2]) != frame[-2:]:
                self.crc_errors += 1
                self.buffer = buf[1:]  # hunt for the next frame start
                continue
            self.buffer = rest
            response = self._answer(frame)
            if response is not None and self.mangle is not None:
                response = self.mangle(frame[0], response)
            if response:
                out.append(response)
        return out

    def _answer(self, frame: bytes) -> bytes | None:
        unit, function = frame[0], frame[1]
        sim = self.simulator
        if unit not in sim.units or unit in sim.silent_units:
            return None  # not ours: a slave on a shared line says nothing
        address = int.from_bytes(frame[2:4], "big")
        body: bytes
        if function == 3:
            count = int.from_bytes(frame[4:6], "big")
            result = sim.read(unit, address, count) if 1 <= count <= 125 else \
                ExcCodes.ILLEGAL_VALUE
            if isinstance(result, ExcCodes):
                body = bytes([function | 0x80, int(result)])
            else:
                body = bytes([3, 2 * count]) + b"".join(v.to_bytes(2, "big") for v in result)
        elif function in (6, 16):
            if function == 6:
                values = [int.from_bytes(frame[4:6], "big")]
            else:
                count = int.from_bytes(frame[4:6], "big")
                values = [int.from_bytes(frame[7 + 2 * i:9 + 2 * i], "big")
                          for i in range(count)]
            error = sim.write(unit, address, values)
            body = bytes([function | 0x80, int(error)]) if error else frame[1:6]
        else:
            body = bytes([function | 0x80, int(ExcCodes.ILLEGAL_FUNCTION)])
        reply = bytes([unit]) + body
        return reply + crc16(reply)


# -- MQTT devices -------------------------------------------------------------------------
def device_ids(first: str, count: int) -> list[str]:
    """`smoke-1` x 3 -> smoke-1, smoke-2, smoke-3; `kitchen` x 2 -> kitchen-1, kitchen-2."""
    if count <= 1:
        return [first]
    match = re.match(r"^(.*?)(\d+)$", first)
    if match:
        stem, start = match.group(1), int(match.group(2))
        return [f"{stem}{start + n}" for n in range(count)]
    return [f"{first}-{n + 1}" for n in range(count)]


class MqttSimulatedDevice:
    """The connection life of a simulated MQTT device: connect with a will, subscribe to its
    command topic, say `online` (retained), publish on a timer, answer commands, reconnect
    after a broker outage, and say `offline` itself on a clean stop.

    A subclass sets `device_id`, `options` (with `host`, `port`, `interval`,
    `publish_on_connect`, `reconnect_interval`), `topics["status"]`, `command_topic`,
    `stats.connects`, a `connected` asyncio.Event and `client` (None), and implements
    `tick()` (one reading) and `answer(payload)` (one command). `identifier()` and
    `credentials()` say how it logs in.
    """

    device_id: str
    options: Any
    topics: dict[str, str]
    command_topic: str
    stats: Any
    connected: asyncio.Event
    client: Any

    def identifier(self) -> str:
        return f"sim-{self.device_id}"

    def credentials(self) -> tuple[str | None, str | None]:
        return None, None

    async def tick(self) -> None:
        raise NotImplementedError

    async def answer(self, payload: Any) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        opts = self.options
        status = self.topics["status"]
        username, password = self.credentials()
        client = aiomqtt.Client(
            opts.host, opts.port, identifier=self.identifier(), clean_session=True,
            will=aiomqtt.Will(status, b"offline", qos=1, retain=True), keepalive=30,
            username=username, password=password,
        )
        while True:
            try:
                async with client:
                    self.client = client
                    self.stats.connects += 1
                    await client.subscribe(self.command_topic, qos=1)
                    await client.publish(status, b"online", qos=1, retain=True)
                    self.connected.set()
                    ticker = asyncio.create_task(self._ticks())
                    try:
                        async for message in client.messages:
                            await self.answer(message.payload)
                            if cancel_requested():  # a cancel lost in aiomqtt's wait_for
                                raise asyncio.CancelledError
                    finally:
                        await cancel_and_wait(ticker)  # our own cancel still propagates
                        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                            # A clean stop: say offline ourselves (a clean DISCONNECT has no will).
                            with contextlib.suppress(aiomqtt.MqttError):
                                await client.publish(status, b"offline", qos=1, retain=True,
                                                     timeout=2)
            except aiomqtt.MqttError as err:
                # Stopping inside `async with client`: aiomqtt's disconnect may raise MqttError
                # in place of our CancelledError; without this the loop reconnects forever.
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise asyncio.CancelledError from err
                _LOGGER.info("simulator %s: %s; reconnecting", self.device_id, err)
            finally:
                self.client = None
                self.connected.clear()
            await asyncio.sleep(opts.reconnect_interval)

    async def _ticks(self) -> None:
        if self.options.publish_on_connect:
            await self.tick()
        while not cancel_requested():  # a cancel lost in aiomqtt's wait_for ends it too
            await asyncio.sleep(self.options.interval)
            await self.tick()
