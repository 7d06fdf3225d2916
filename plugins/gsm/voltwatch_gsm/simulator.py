"""`voltwatch simulate dtu`: DTUs that dial in, register, heartbeat and answer Modbus-RTU.

Behind each simulated DTU sit arcm-ref detectors (CONTRACTS §8) with plausible values: about
12 mA residual current, 25 °C, 220 V, a few amperes. The register model is deliberately small
and lives here, not in the arcm plugin, so the transport can be tested and benchmarked on its
own. One process runs thousands of DTUs: each is an `asyncio.Protocol` plus a couple of timer
handles, no task per DTU while it is connected.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from . import rtu

_LOGGER = logging.getLogger(__name__)

REGISTERS = 128
PARAM_RANGES: dict[int, tuple[int, int]] = {
    48: (20, 1000), 49: (0, 600), 50: (45, 140), 51: (45, 140), 52: (45, 140), 53: (45, 140),
    54: (0, 65535), 55: (0, 65535), 56: (0, 65535), 57: (0, 2),
}
PARAM_DEFAULTS: dict[int, int] = {
    48: 300, 49: 50, 50: 80, 51: 80, 52: 80, 53: 80, 54: 2640, 55: 1870, 56: 6300, 57: 2,
}
COMMAND = 64


class ArcmRefUnit:
    """One arcm-ref detector: readings drift a little on every read, commands change bits."""

    def __init__(self, unit: int, rng: random.Random) -> None:
        self.unit = unit
        self.rng = rng
        self.regs = [0] * REGISTERS
        for address, value in PARAM_DEFAULTS.items():
            self.regs[address] = value
        self.regs[80] = 0x0A01  # model code
        self.regs[81] = 0x0102  # firmware 1.2
        self.energy = rng.randint(10_000, 500_000)  # 0.01 kWh
        self.base_current = [rng.uniform(1.0, 5.0) for _ in range(3)]
        self.alarm_until = 0.0
        self.self_test_reads = 0
        self._refresh()

    def _refresh(self) -> None:
        rng = self.rng
        regs = self.regs
        alarm = time.monotonic() < self.alarm_until
        regs[0] = rng.randint(420, 600) if alarm else rng.randint(9, 15)
        for n in range(1, 5):
            regs[n] = (rng.randint(235, 265)) & 0xFFFF
        volts = [rng.uniform(2180, 2230) for _ in range(3)]
        amps = [max(0.0, c + rng.uniform(-0.2, 0.2)) for c in self.base_current]
        for n in range(3):
            regs[5 + n] = int(volts[n])
            regs[8 + n] = int(amps[n] * 100)
        power = int(sum(v / 10 * a for v, a in zip(volts, amps, strict=True)) * 0.95)
        regs[11], regs[12] = struct.unpack(">HH", struct.pack(">i", power))
        self.energy = (self.energy + max(1, power // 3600)) & 0xFFFFFFFF
        regs[13], regs[14] = divmod(self.energy, 0x10000)
        regs[15] = rng.randint(4995, 5005)
        for n in range(3):
            regs[16 + n] = rng.randint(15, 35)
            regs[19 + n] = rng.randint(30, 80)
        bits = 0
        if regs[0] > regs[48]:
            bits |= 1
        for n in range(4):
            if regs[1 + n] / 10 > regs[50 + n]:
                bits |= 1 << (1 + n)
        regs[32] = bits
        relay = regs[34] & 0b111
        if bits and regs[57] == 2:
            relay |= 0b011
        elif bits and regs[57] == 1:
            relay |= 0b010
        if self.self_test_reads > 0:
            self.self_test_reads -= 1
            relay |= 0b1000
        regs[34] = relay

    def read(self, address: int, count: int) -> list[int] | int:
        """Values, or a Modbus exception code."""
        if count < 1 or count > rtu.MAX_READ or address + count > REGISTERS:
            return 2
        self._refresh()
        return self.regs[address : address + count]

    def write(self, address: int, value: int) -> int | None:
        """None when accepted, else a Modbus exception code."""
        if address == COMMAND:
            if value == 1:
                self.regs[34] |= 0b001
            elif value == 2:
                self.regs[34] &= ~0b001
            elif value == 3:
                self.regs[34] &= ~0b111
                self.alarm_until = 0.0
            elif value == 4:
                self.regs[34] |= 0b100
            elif value == 5:
                self.self_test_reads = 2
            else:
                return 3
            return None
        limits = PARAM_RANGES.get(address)
        if limits is None:
            return 2
        if not limits[0] <= value <= limits[1]:
            return 3
        self.regs[address] = value
        return None

    def raise_alarm(self, seconds: float) -> None:
        self.alarm_until = time.monotonic() + seconds


def answer(units: dict[int, ArcmRefUnit], frame: bytes) -> bytes | None:
    """The reply to one complete request, or None (unit not on this bus: RS485 stays silent)."""
    unit_id, function = frame[0], frame[1]
    unit = units.get(unit_id)
    if unit is None:
        return None

    def error(code: int) -> bytes:
        return rtu.with_crc(bytes((unit_id, function | rtu.EXCEPTION_FLAG, code)))

    if function == rtu.READ_HOLDING:
        address, count = struct.unpack_from(">HH", frame, 2)
        values = unit.read(address, count)
        if isinstance(values, int):
            return error(values)
        body = struct.pack(f">BBB{len(values)}H", unit_id, function, 2 * len(values), *values)
        return rtu.with_crc(body)
    if function == rtu.WRITE_SINGLE:
        address, value = struct.unpack_from(">HH", frame, 2)
        code = unit.write(address, value)
        return error(code) if code is not None else frame
    if function == rtu.WRITE_MULTIPLE:
        address, count = struct.unpack_from(">HH", frame, 2)
        values = struct.unpack_from(f">{count}H", frame, 7)
        for offset, value in enumerate(values):
            code = unit.write(address + offset, value)
            if code is not None:
                return error(code)
        return rtu.with_crc(frame[:6])
    return error(1)


def request_length(buf: bytes | bytearray) -> int | None:
    """Length of the request at the front of `buf`; None while unknown; -1 for junk."""
    if len(buf) < 2:
        return None
    function = buf[1]
    if function in (rtu.READ_HOLDING, rtu.WRITE_SINGLE):
        return 8
    if function == rtu.WRITE_MULTIPLE:
        if len(buf) < 7:
            return None
        return 9 + buf[6]
    return -1


@dataclass
class SimOptions:
    host: str
    port: int
    registration: str = "link"
    heartbeat: bytes = b"ping"
    heartbeat_interval: float = 60.0
    registration_prefix: bytes = b""
    #: Sent right after the IMEI (gsm.dtus.<imei>.key on the hub); the same for every DTU.
    registration_key: bytes = b""
    drop_every: float = 0.0
    alarm_every: float = 0.0
    reconnect_delay: float = 1.0
    latency: float = 0.0


@dataclass
class SimStats:
    """Counts as the DTU sees them: what it would be billed for, before TCP/IP overhead."""

    connects: int = 0
    requests: int = 0
    replies: int = 0
    bad_crc: int = 0
    refused: int = 0
    heartbeats: int = 0
    bytes_sent: int = 0  # registration, heartbeats, replies (data-mode id prefixes included)
    bytes_received: int = 0  # requests from the hub
    counters: dict[str, int] = field(default_factory=dict)


class SimulatedDtu(asyncio.Protocol):
    """One DTU: dials in, keeps dialling in, answers for the units on its RS485 bus."""

    def __init__(self, imei: str, units: list[int], options: SimOptions, stats: SimStats,
                 seed: int | None = None) -> None:
        rng = random.Random(seed if seed is not None else imei)
        self.imei = imei
        self.options = options
        self.stats = stats
        self.units = {unit: ArcmRefUnit(unit, rng) for unit in units}
        self.rng = rng
        self.transport: asyncio.Transport | None = None
        self.registration = (options.registration_prefix + imei.encode("ascii")
                             + options.registration_key)
        self._buf = bytearray()
        self._timers: list[asyncio.TimerHandle] = []
        self._closed = asyncio.Event()
        self.connected = asyncio.Event()
        self.running = True
        # This DTU's own byte counts (the shared `stats` sums every DTU of a run).
        self.own = SimStats()

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._closed.clear()
        self.stats.connects += 1
        self.own.connects += 1
        if self.options.registration == "link":
            self._write(self.registration)
        else:
            # Data mode: the id rides in front of every packet, heartbeats included, so the
            # first heartbeat (sent now) is what identifies the connection.
            self._write(self.registration + self.options.heartbeat)
            self._count("heartbeats")
        loop = asyncio.get_running_loop()
        interval = self.options.heartbeat_interval
        self._timers = [loop.call_later(self.rng.uniform(0.5, 1.0) * interval, self._heartbeat)]
        if self.options.drop_every > 0:
            self._timers.append(loop.call_later(
                self.rng.uniform(0.75, 1.25) * self.options.drop_every, self._drop))
        if self.options.alarm_every > 0:
            self._timers.append(loop.call_later(
                self.rng.uniform(0.5, 1.5) * self.options.alarm_every, self._alarm))
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        self._count("bytes_received", len(data))
        buf = self._buf
        buf += data
        while buf:
            length = request_length(buf)
            if length is not None and length < 0:
                buf.clear()  # not a request this bus understands: a real line resyncs too
                return
            if length is None or len(buf) < length:
                return
            frame = bytes(buf[:length])
            del buf[:length]
            self._count("requests")
            if not rtu.crc_ok(frame):
                self._count("bad_crc")
                continue
            reply = answer(self.units, frame)
            if reply is None:
                continue
            self._count("replies")
            if self.options.latency > 0:
                asyncio.get_running_loop().call_later(self.options.latency, self._send, reply)
            else:
                self._send(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        self.transport = None
        self._buf.clear()
        self.connected.clear()
        self._closed.set()

    # -- behaviour ------------------------------------------------------------------------
    def _count(self, name: str, amount: int = 1) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + amount)
        setattr(self.own, name, getattr(self.own, name) + amount)

    def _write(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(payload)
        self._count("bytes_sent", len(payload))

    def _send(self, payload: bytes) -> bool:
        if self.transport is not None and not self.transport.is_closing():
            if self.options.registration == "data":
                payload = self.registration + payload
            self._write(payload)
            return True
        return False

    def _heartbeat(self) -> None:
        if self._send(self.options.heartbeat):
            self._count("heartbeats")
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.options.heartbeat_interval, self._heartbeat))

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _alarm(self) -> None:
        for unit in self.units.values():
            if self.rng.random() < 0.5:
                unit.raise_alarm(10.0)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.options.alarm_every, self._alarm))

    async def run(self) -> None:
        """Dial in, and dial in again whenever the connection drops, until cancelled."""
        loop = asyncio.get_running_loop()
        delay = self.options.reconnect_delay
        while self.running:
            try:
                await loop.create_connection(lambda: self, self.options.host, self.options.port)
            except OSError as err:
                _LOGGER.debug("DTU %s: connect failed: %s", self.imei, err)
                await asyncio.sleep(delay * self.rng.uniform(0.5, 1.5))
                continue
            await self._closed.wait()
            await asyncio.sleep(delay * self.rng.uniform(0.5, 1.5))

    def close(self) -> None:
        self.running = False
        if self.transport is not None:
            self.transport.close()


def parse_units(text: str) -> list[int]:
    """`1-4`, `1,3,5` or `2` -> unit ids."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = (int(x) for x in part.split("-", 1))
            units.extend(range(low, high + 1))
        elif part:
            units.append(int(part))
    if not units or any(not 1 <= u <= 247 for u in units):
        raise argparse.ArgumentTypeError(f"units must be 1..247, got {text!r}")
    return units


def consecutive_imeis(first: str, count: int) -> list[str]:
    width = len(first)
    start = int(first)
    return [str(start + n).zfill(width) for n in range(count)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the hub's gsm.host")
    parser.add_argument("--port", type=int, default=9502, help="the hub's gsm.port")
    parser.add_argument("--imei", default="860000000000001", help="first IMEI (15 digits)")
    parser.add_argument("--units", type=parse_units, default=[1], help="RS485 units, e.g. 1-4")
    parser.add_argument("--count", type=int, default=1, help="DTUs, with consecutive IMEIs")
    parser.add_argument("--registration", choices=("link", "data"), default="link")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="heartbeat interval, s")
    parser.add_argument("--heartbeat-payload", default="ping", help="ASCII heartbeat bytes")
    parser.add_argument("--heartbeat-hex", default=None, help="heartbeat bytes as hex")
    parser.add_argument("--registration-prefix", default="", help="hex bytes before the IMEI")
    parser.add_argument("--registration-key", default="",
                        help="ASCII key sent after the IMEI (the hub's gsm.dtus.<imei>.key)")
    parser.add_argument("--drop-every", type=float, default=0.0,
                        help="close the socket about every S seconds and dial in again")
    parser.add_argument("--alarm-every", type=float, default=0.0,
                        help="about every S seconds, a residual-current alarm for 10 s")
    parser.add_argument("--latency", type=float, default=0.0, help="reply delay, s")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    heartbeat = (bytes.fromhex(args.heartbeat_hex) if args.heartbeat_hex
                 else args.heartbeat_payload.encode("ascii"))
    return SimOptions(
        host=args.host, port=args.port, registration=args.registration, heartbeat=heartbeat,
        heartbeat_interval=args.heartbeat,
        registration_prefix=bytes.fromhex(args.registration_prefix),
        registration_key=args.registration_key.encode("ascii"),
        drop_every=args.drop_every, alarm_every=args.alarm_every, latency=args.latency,
    )


async def run_dtus(imeis: list[str], units: list[int], options: SimOptions,
                   stats: SimStats | None = None, ready: asyncio.Event | None = None) -> None:
    """Run DTUs until cancelled; connects are staggered so thousands do not SYN-flood."""
    stats = stats or SimStats()
    dtus = [SimulatedDtu(imei, units, options, stats) for imei in imeis]
    tasks: list[asyncio.Task[Any]] = []
    try:
        for index, dtu in enumerate(dtus):
            tasks.append(asyncio.get_running_loop().create_task(dtu.run(), name=f"dtu {dtu.imei}"))
            if index % 200 == 199:
                await asyncio.sleep(0)  # let the connects just started make progress
        if ready is not None:
            await asyncio.gather(*(dtu.connected.wait() for dtu in dtus))
            ready.set()
        await asyncio.gather(*tasks)
    finally:
        for dtu in dtus:
            dtu.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def simulate(args: argparse.Namespace) -> None:
    imeis = consecutive_imeis(args.imei, args.count)
    options = options_from_args(args)
    print(f"Simulating {len(imeis)} DTU(s) {imeis[0]}…{imeis[-1]} with units {args.units} "
          f"-> {options.host}:{options.port} ({options.registration} registration)", flush=True)
    await run_dtus(imeis, args.units, options)
