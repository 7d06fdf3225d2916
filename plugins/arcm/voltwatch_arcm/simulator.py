"""`voltwatch simulate arcm`: detectors that speak arcm-ref (CONTRACTS §8) like real ones.

Values wander around a daily-looking load curve; every so often one unit leaks (residual current
above its setpoint) so the demo shows an alarm that sets after the configured delay (register
49) and clears when the leak ends. Commands move the relay bits, self-test sets then clears its
bit, setpoints are range-checked (exception 03 when out of range, as devices do) and persist to
a JSON file with `--state FILE`.

Modbus TCP through pymodbus's own server and Modbus RTU (CRC-16) on a serial port or a pty:
both come from `hub.simkit.SimulatedBus`, shared with the arc_fault simulator.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pymodbus.constants import ExcCodes

# Re-exported: tests and the RTU tools take them from here.
from hub.simkit import RtuResponder, SimulatedBus, crc16, open_pty, parse_units

__all__ = ["ArcmSimulator", "RtuResponder", "SimOptions", "crc16", "open_pty", "parse_units"]

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


class ArcmSimulator(SimulatedBus):
    """A bus of simulated detectors, servable over TCP, a pty or a serial port."""

    name = "arcm"
    register_count = REG_COUNT
    default_port = 5020

    def __init__(self, units: Iterable[int], options: SimOptions | None = None,
                 state_file: str | Path | None = None) -> None:
        super().__init__()
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
        self._next_leak = time.time() + (self.options.leak_every or 0) / 3

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
