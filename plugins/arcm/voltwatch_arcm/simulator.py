"""`voltwatch simulate arcm`: detectors that speak arcm-ref (CONTRACTS §8) like real ones.

Values wander around a daily-looking load curve; every so often one unit leaks (residual current
above its setpoint) so the demo shows an alarm that sets after the configured delay (register
49) and clears when the leak ends. Commands move the relay bits, self-test sets then clears its
bit, setpoints are range-checked (exception 03 when out of range, as devices do) and persist to
a JSON file with `--state FILE`.

Two ways onto the wire:
* Modbus TCP through pymodbus's own server (`SimDevice` with an action callback that keeps the
  registers in step with the model), one server for a whole bus of unit ids;
* Modbus RTU (CRC-16) on a serial port or a pty, through a small responder of our own, because
  tests need what pymodbus's server will not do: stay silent for unknown units like a real
  RS485 slave, and put CRC garbage or short frames on the line on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import time
import tty
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

_LOGGER = logging.getLogger(__name__)

REG_COUNT = 96  # 0..95 readable; gaps read as 0 (the profile reads across them)

# Setpoint address -> (min raw, max raw, default raw), in register units.
SETPOINTS: dict[int, tuple[int, int, int]] = {
    48: (20, 1000, 300),
    49: (0, 600, 50),
    50: (45, 140, 80), 51: (45, 140, 80), 52: (45, 140, 80), 53: (45, 140, 80),
    54: (2200, 3000, 2640),
    55: (1500, 2200, 1870),
    56: (100, 63000, 6300),
    57: (0, 2, 1),
}
COMMAND_REGISTER = 64
MODEL_CODE, FIRMWARE = 0x0A01, 0x0103
RESIDUAL_OPEN, PROBE_OPEN = 0xFFFF, 0x7FFF
SELF_TEST_SECONDS = 3.0

# Names the overrides accept -> address.
ADDRESSES: dict[str, int] = {
    "residual_current": 0,
    **{f"temperature_{n}": n for n in range(1, 5)},
    **{f"voltage_{p}": 5 + i for i, p in enumerate("abc")},
    **{f"current_{p}": 8 + i for i, p in enumerate("abc")},
}


def parse_units(text: str) -> list[int]:
    """`1-8` or `1,3,10-12` -> unit ids (1..247)."""
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


@dataclass
class SimOptions:
    wander: bool = True
    leak_every: float | None = 120.0  # seconds between leaks on some unit (None: never)
    leak_duration: float = 25.0
    seed: int | None = None


class ArcmUnitModel:
    """One detector's registers and behaviour; time is passed in so tests control it."""

    def __init__(self, unit: int, options: SimOptions, rng: random.Random,
                 saved: dict[str, int] | None = None,
                 on_persist: Callable[[], None] | None = None) -> None:
        self.unit = unit
        self.options = options
        self.rng = rng
        self.regs = [0] * REG_COUNT
        for address, (_low, _high, default) in SETPOINTS.items():
            self.regs[address] = default
        for key, value in (saved or {}).items():
            address = int(key)
            if address in SETPOINTS or address == 34:
                self.regs[address] = int(value)
        self.regs[80], self.regs[81] = MODEL_CODE, FIRMWARE
        self.on_persist = on_persist
        self.overrides: dict[int, int] = {}
        # Fixed readings for `--static` and tests: 30 mA, 25.1 °C, 220.0 V, 10.00 A, 22 kW, ...
        power = 22000
        self.static = [30, 251, 262, 248, 239, 2200, 2205, 2198, 1000, 1100, 900,
                       (power >> 16) & 0xFFFF, power & 0xFFFF, 0, 12345, 5000,
                       21, 22, 23, 81, 82, 83]
        self.residual_short = False
        self.leak_until = 0.0
        self.leak_value = 0
        self._phase = rng.uniform(0, 2 * math.pi)
        self._rated = rng.choice([16.0, 25.0, 32.0, 40.0])
        self._residual = rng.uniform(8, 45)
        self._energy = rng.uniform(100, 5000)  # kWh
        self._since: dict[int, float] = {}
        self._self_test_until = 0.0
        self._last_wander = 0.0
        self._last_update: float | None = None
        self._values(time.time())

    # -- behaviour ------------------------------------------------------------------------
    def _values(self, now: float) -> None:
        """Set the measured registers from the load model (or static values)."""
        regs = self.regs
        if not self.options.wander:
            regs[0:22] = self.static
            return
        rng = self.rng
        dt = 0.0 if self._last_update is None else max(0.0, now - self._last_update)
        load = 0.55 + 0.35 * math.sin(2 * math.pi * now / 900.0 + self._phase)
        currents = [max(0.0, self._rated * load * (1 + rng.gauss(0, 0.03)) * k)
                    for k in (1.0, 0.93, 1.05)]
        volts = [220.0 + 3.0 * math.sin(now / 97.0 + self._phase + i) + rng.gauss(0, 0.4)
                 for i in range(3)]
        self._residual = min(90.0, max(3.0, self._residual + rng.gauss(0, 1.5)))
        residual = self._residual
        if now < self.leak_until:
            residual = self.leak_value + rng.gauss(0, 8)
        regs[0] = int(max(0, residual))
        for n in range(4):
            heat = 22.0 + 38.0 * load**2 * (1.0 if n < 3 else 0.3)
            regs[1 + n] = round((heat + rng.gauss(0, 0.2)) * 10) & 0xFFFF
        for i in range(3):
            regs[5 + i] = round(volts[i] * 10)
            regs[8 + i] = round(currents[i] * 100)
        power_w = int(sum(v * c for v, c in zip(volts, currents, strict=True)) * 0.92)
        regs[11], regs[12] = (power_w >> 16) & 0xFFFF, power_w & 0xFFFF
        self._energy += power_w / 1000.0 * dt / 3600.0
        energy = int(self._energy * 100)
        regs[13], regs[14] = (energy >> 16) & 0xFFFF, energy & 0xFFFF
        regs[15] = round((50.0 + rng.gauss(0, 0.01)) * 100)
        for i in range(3):
            regs[16 + i] = round((2.5 + rng.gauss(0, 0.2)) * 10)
            regs[19 + i] = round((9.0 + 4 * load + rng.gauss(0, 0.5)) * 10)

    def start_leak(self, now: float, value: int | None = None,
                   duration: float | None = None) -> None:
        self.leak_value = value if value is not None else self.rng.randint(350, 650)
        self.leak_until = now + (duration if duration is not None else self.options.leak_duration)

    def set_override(self, name: str, raw: int | None) -> None:
        """Pin a measured register to a raw value (None releases it); for scenarios and tests."""
        address = ADDRESSES[name]
        if raw is None:
            self.overrides.pop(address, None)
        else:
            self.overrides[address] = raw & 0xFFFF

    def update(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not self.options.wander or now - self._last_wander >= 0.5:
            self._values(now)
            self._last_wander = now
        self._last_update = now
        regs = self.regs
        for address, raw in self.overrides.items():
            regs[address] = raw
        self._logic(now)

    def _logic(self, now: float) -> None:
        regs = self.regs
        residual = regs[0]
        temps = [regs[1 + n] for n in range(4)]
        volts = [regs[5 + i] for i in range(3)]
        amps = [regs[8 + i] for i in range(3)]
        exceeded = {
            0: residual != RESIDUAL_OPEN and residual > regs[48],
            **{1 + n: temps[n] != PROBE_OPEN and _s16(temps[n]) > regs[50 + n] * 10
               for n in range(4)},
            5: max(volts) > regs[54],
            6: 500 < min(volts) < regs[55],
            7: max(amps) > regs[56],
            8: max(amps) > regs[56] * 10,
            9: min(volts) <= 500,
        }
        delay = regs[49] / 10.0
        alarm = 0
        for bit, over in exceeded.items():
            if over:
                since = self._since.setdefault(bit, now)
                if now - since >= delay:
                    alarm |= 1 << bit
            else:
                self._since.pop(bit, None)
        old_alarm = regs[32]
        regs[32] = alarm
        fault = 0
        if residual == RESIDUAL_OPEN:
            fault |= 1
        for n in range(4):
            if temps[n] == PROBE_OPEN:
                fault |= 1 << (1 + n)
        if self.residual_short:
            fault |= 1 << 5
        regs[33] = fault
        relay = regs[34]
        rising = alarm & ~old_alarm
        if rising:
            relay &= ~0b100  # mute holds only until a new alarm arrives
            if regs[57] == 2:
                relay |= 0b1
                self._persist()
        testing = now < self._self_test_until
        relay = relay | 0b1000 if testing else relay & ~0b1000
        relay = relay | 0b10 if (alarm or testing) else relay & ~0b10
        regs[34] = relay

    def _persist(self) -> None:
        if self.on_persist is not None:
            self.on_persist()

    def saved(self) -> dict[str, int]:
        out = {str(address): self.regs[address] for address in SETPOINTS}
        out["34"] = self.regs[34] & 0b1  # the breaker position survives a restart
        return out

    def write(self, address: int, values: list[int], now: float | None = None) -> ExcCodes | None:
        """Apply a write as the device would; an ExcCodes is the device refusing it."""
        now = time.time() if now is None else now
        for offset, value in enumerate(values):
            target = address + offset
            if target in SETPOINTS:
                low, high, _default = SETPOINTS[target]
                if not low <= value <= high:
                    return ExcCodes.ILLEGAL_VALUE
            elif target == COMMAND_REGISTER:
                if value not in (1, 2, 3, 4, 5):
                    return ExcCodes.ILLEGAL_VALUE
            else:
                return ExcCodes.ILLEGAL_ADDRESS
        changed = False
        for offset, value in enumerate(values):
            target = address + offset
            if target == COMMAND_REGISTER:
                changed |= self._command(value, now)
            else:
                changed |= self.regs[target] != value
                self.regs[target] = value
        self._logic(now)
        if changed:
            self._persist()
        return None

    def _command(self, code: int, now: float) -> bool:
        regs = self.regs
        if code == 1:
            regs[34] |= 0b1
        elif code == 2:
            regs[34] &= ~0b1
        elif code == 3:
            regs[32] = 0
            regs[34] &= ~0b110
            self._since = {bit: now for bit in self._since}  # the delay starts again
            self._self_test_until = 0.0
        elif code == 4:
            regs[34] |= 0b100
        elif code == 5:
            self._self_test_until = now + SELF_TEST_SECONDS
        _LOGGER.info("unit %d: command %d", self.unit, code)
        return code in (1, 2)


def _s16(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


class ArcmSimulator:
    """A bus of simulated detectors, servable over TCP, a pty or a serial port."""

    def __init__(self, units: Iterable[int], options: SimOptions | None = None,
                 state_file: str | Path | None = None) -> None:
        self.options = options or SimOptions()
        self.rng = random.Random(self.options.seed)
        self.state_file = Path(state_file) if state_file else None
        saved: dict[str, dict[str, int]] = {}
        if self.state_file is not None and self.state_file.is_file():
            try:
                saved = json.loads(self.state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                _LOGGER.warning("Ignoring unreadable state file %s: %s", self.state_file, err)
        self.units: dict[int, ArcmUnitModel] = {
            unit: ArcmUnitModel(unit, self.options, random.Random(self.rng.random()),
                                saved.get(str(unit)), self.save)
            for unit in units
        }
        self.silent_units: set[int] = set()
        self._next_leak = time.time() + (self.options.leak_every or 0) / 3
        self.requests = 0

    def save(self) -> None:
        if self.state_file is None:
            return
        data = {str(unit): model.saved() for unit, model in self.units.items()}
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def tick(self, now: float) -> None:
        """Scenario clock: start the periodic leak on a random unit."""
        every = self.options.leak_every
        if every and self.options.wander and now >= self._next_leak and self.units:
            self._next_leak = now + every
            model = self.units[self.rng.choice(list(self.units))]
            model.start_leak(now)
            _LOGGER.info("unit %d starts leaking %d mA for %.0fs", model.unit, model.leak_value,
                         self.options.leak_duration)

    def read(self, unit: int, address: int, count: int) -> list[int] | ExcCodes:
        model = self.units[unit]
        if address < 0 or count < 1 or address + count > REG_COUNT:
            return ExcCodes.ILLEGAL_ADDRESS
        now = time.time()
        self.tick(now)
        model.update(now)
        self.requests += 1
        return model.regs[address:address + count]

    def write(self, unit: int, address: int, values: list[int]) -> ExcCodes | None:
        self.requests += 1
        return self.units[unit].write(address, values)

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
                simdata=SimData(0, count=REG_COUNT, values=0, datatype=DataType.REGISTERS),
                action=action,
            ))
        return devices

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> ModbusTcpServer:
        """Start listening and return the server (stop it with `await server.shutdown()`)."""
        server = ModbusTcpServer(self.sim_devices(), address=(host, port),
                                 ignore_missing_devices=True)
        server.context = _SilentCore(self, server.context)
        await server.serve_forever(background=True)
        _LOGGER.info("arcm simulator: Modbus TCP on %s:%d, units %s", host, port,
                     _units_text(self.units))
        return server

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> None:
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
        _LOGGER.info("arcm simulator: Modbus RTU on %s, units %s", port, _units_text(self.units))
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                for frame in responder.feed(data):
                    writer.write(frame)
                await writer.drain()
        finally:
            writer.close()


class _SilentCore(SimCore):
    """pymodbus answers unknown unit ids with exception 04; a real RS485 unit stays silent."""

    def __init__(self, simulator: ArcmSimulator, inner: SimCore) -> None:
        self.simulator = simulator
        self.devices = inner.devices
        self._inner = inner

    def _check(self, device_id: int) -> None:
        if device_id not in self.devices or device_id in self.simulator.silent_units:
            raise NoSuchIdException(f"unit {device_id} is not on this bus")

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> Any:
        self._check(device_id)
        return await self._inner.async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Any) -> Any:
        self._check(device_id)
        return await self._inner.async_setValues(device_id, func_code, address, values)


def crc16(frame: bytes) -> bytes:
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


class RtuResponder:
    """Frames RTU requests out of a byte stream and answers them (fc 03, 06, 16).

    `mangle` lets a test replace an outgoing frame (CRC garbage, a short frame, silence).
    """

    def __init__(self, simulator: ArcmSimulator) -> None:
        self.simulator = simulator
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
        body: bytes
        if function == 3:
            address = int.from_bytes(frame[2:4], "big")
            count = int.from_bytes(frame[4:6], "big")
            result = sim.read(unit, address, count) if 1 <= count <= 125 else \
                ExcCodes.ILLEGAL_VALUE
            if isinstance(result, ExcCodes):
                body = bytes([function | 0x80, int(result)])
            else:
                body = bytes([3, 2 * count]) + b"".join(v.to_bytes(2, "big") for v in result)
        elif function == 6:
            address = int.from_bytes(frame[2:4], "big")
            value = int.from_bytes(frame[4:6], "big")
            result = sim.write(unit, address, [value])
            body = bytes([function | 0x80, int(result)]) if result else frame[1:6]
        elif function == 16:
            address = int.from_bytes(frame[2:4], "big")
            count = int.from_bytes(frame[4:6], "big")
            values = [int.from_bytes(frame[7 + 2 * i:9 + 2 * i], "big") for i in range(count)]
            result = sim.write(unit, address, values)
            body = bytes([function | 0x80, int(result)]) if result else frame[1:6]
        else:
            body = bytes([function | 0x80, int(ExcCodes.ILLEGAL_FUNCTION)])
        reply = bytes([unit]) + body
        return reply + crc16(reply)


def open_pty() -> tuple[int, int, str]:
    """A raw pty pair: (master fd, slave fd, slave name); keep the slave fd open while in use."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def _units_text(units: Iterable[int]) -> str:
    ids = sorted(units)
    return f"{ids[0]}-{ids[-1]}" if ids and ids == list(range(ids[0], ids[-1] + 1)) else \
        ",".join(map(str, ids))


# -- command line -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to listen on")
    parser.add_argument("--port", type=int, default=5020, help="Modbus TCP port")
    parser.add_argument("--units", default="1-8", help="unit ids, e.g. 1-8 or 1,3,5-7")
    parser.add_argument("--state", default=None, help="JSON file keeping setpoints and breakers")
    parser.add_argument("--serial", default=None,
                        help="serve Modbus RTU on this serial port instead of TCP")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--pty", action="store_true",
                        help="serve Modbus RTU on a new pty and print its name")
    parser.add_argument("--leak-every", type=float, default=120.0,
                        help="seconds between simulated leaks on a random unit (0: never)")
    parser.add_argument("--leak-duration", type=float, default=25.0)
    parser.add_argument("--static", action="store_true", help="fixed values (no wandering)")
    parser.add_argument("--seed", type=int, default=None)


async def run(args: argparse.Namespace) -> None:
    options = SimOptions(wander=not args.static, leak_every=args.leak_every or None,
                         leak_duration=args.leak_duration, seed=args.seed)
    sim = ArcmSimulator(parse_units(args.units), options, args.state)
    if args.pty:
        master, _slave, name = open_pty()
        print(f"arcm simulator: Modbus RTU on {name} (units {args.units})", flush=True)
        await sim.serve_fd(master)
    elif args.serial:
        await sim.serve_serial(args.serial, args.baudrate)
    else:
        print(f"arcm simulator: Modbus TCP on {args.host}:{args.port} (units {args.units})",
              flush=True)
        await sim.serve_tcp(args.host, args.port)
