"""`voltwatch simulate arc_fault`: arc-fault detectors speaking afd-ref (CONTRACTS §9).

A unit counts arc half-cycles per one-second window (register 0) and latches its own arc alarm
bit (register 16 b0) when a window reaches its threshold (register 32, default 14), as a real
detector does; only a reset (command 3) lets go of it. An `--arcs` scenario gives the counts of
consecutive windows (`9,14,0` : a quiet-ish second, an arcing one, then calm), so the GB 50166
boundary can be shown on purpose.

Two ways onto the wire, as the arcm simulator: Modbus TCP through pymodbus's server, and Modbus
RTU (CRC-16) on a pty, a serial port or any byte stream (a DTU) through a small responder; both
come from `hub.simkit.SimulatedBus`, shared with the arcm simulator.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Iterable

from pymodbus.constants import ExcCodes

# Re-exported: tests and the RTU tools take them from here.
from hub.simkit import RtuResponder, SimulatedBus, crc16, open_pty, parse_units

__all__ = ["ArcFaultSimulator", "RtuResponder", "crc16", "open_pty", "parse_arcs",
           "parse_units"]

_LOGGER = logging.getLogger(__name__)

REG_COUNT = 72
ARC_COUNT, ARC_TOTAL, CURRENT, TEMPERATURE = 0, 1, 3, 4
STATUS, THRESHOLD, COMMAND = 16, 32, 64
B_ARC, B_SENSOR_FAULT, B_TRIPPED, B_MUTED, B_SELF_TEST = 1, 2, 4, 8, 16
THRESHOLD_RANGE = (1, 100)
DEFAULT_THRESHOLD = 14
SELF_TEST_SECONDS = 3.0



def parse_arcs(text: str) -> list[int]:
    """`9,14,0` -> [9, 14, 0]: the arc counts of consecutive one-second windows."""
    counts = [int(x) for x in text.split(",") if x.strip()]
    if any(not 0 <= c <= 0xFFFF for c in counts):
        raise ValueError("arc counts must be 0..65535")
    return counts


class ArcFaultUnit:
    """One detector's registers and behaviour; time is passed in so tests control it."""

    def __init__(self, unit: int, rng: random.Random, wander: bool = True) -> None:
        self.unit = unit
        self.rng = rng
        self.wander = wander
        self.regs = [0] * REG_COUNT
        self.regs[THRESHOLD] = DEFAULT_THRESHOLD
        self.regs[CURRENT] = 1250
        self.regs[TEMPERATURE] = 265
        self.total = 0
        self.scenario: list[int] = []  # counts of the coming windows, consumed one per second
        self.arc_count = 0  # the count shown for the current window
        self.sensor_fault = False
        self._window: int | None = None
        self._self_test_until = 0.0

    def set_arc_count(self, count: int) -> None:
        """The count of the window now (tests); the detector's own bit follows it at once."""
        self.arc_count = count
        self.total += count
        self._logic(time.time())

    def update(self, now: float) -> None:
        window = int(now)
        if window != self._window:
            self._window = window
            if self.scenario:
                self.arc_count = self.scenario.pop(0)
                self.total += self.arc_count
            if self.wander:
                self.regs[CURRENT] = max(0, 1250 + int(self.rng.gauss(0, 60)))
                self.regs[TEMPERATURE] = (265 + int(self.rng.gauss(0, 4))) & 0xFFFF
        self._logic(now)

    def _logic(self, now: float) -> None:
        regs = self.regs
        regs[ARC_COUNT] = self.arc_count & 0xFFFF
        regs[ARC_TOTAL], regs[ARC_TOTAL + 1] = (self.total >> 16) & 0xFFFF, self.total & 0xFFFF
        status = regs[STATUS]
        if self.arc_count >= regs[THRESHOLD] and not status & B_ARC:
            status = (status | B_ARC) & ~B_MUTED  # a new alarm ends a mute
        status = status | B_SENSOR_FAULT if self.sensor_fault else status & ~B_SENSOR_FAULT
        status = status | B_SELF_TEST if now < self._self_test_until else status & ~B_SELF_TEST
        regs[STATUS] = status

    def write(self, address: int, values: list[int], now: float | None = None) -> ExcCodes | None:
        now = time.time() if now is None else now
        for offset, value in enumerate(values):
            target = address + offset
            if target == THRESHOLD:
                if not THRESHOLD_RANGE[0] <= value <= THRESHOLD_RANGE[1]:
                    return ExcCodes.ILLEGAL_VALUE
            elif target == COMMAND:
                if value not in (1, 3, 4, 5):
                    return ExcCodes.ILLEGAL_VALUE
            else:
                return ExcCodes.ILLEGAL_ADDRESS
        for offset, value in enumerate(values):
            if address + offset == THRESHOLD:
                self.regs[THRESHOLD] = value
            else:
                self._command(value, now)
        self._logic(now)
        return None

    def _command(self, code: int, now: float) -> None:
        regs = self.regs
        if code == 1:
            regs[STATUS] |= B_TRIPPED
        elif code == 3:  # reset: lets go of the arc latch and the mute, re-closes the breaker
            regs[STATUS] &= ~(B_ARC | B_MUTED | B_TRIPPED | B_SELF_TEST)
            self._self_test_until = 0.0
            self.arc_count = 0
        elif code == 4:
            regs[STATUS] |= B_MUTED
        elif code == 5:
            self._self_test_until = now + SELF_TEST_SECONDS
        _LOGGER.info("arc_fault unit %d: command %d", self.unit, code)


class ArcFaultSimulator(SimulatedBus):
    """A bus of simulated arc-fault detectors, servable over TCP, a pty or a serial port."""

    name = "arc_fault"
    register_count = REG_COUNT
    default_port = 5021
    # As it always did: pymodbus's exception 04 for a unit id not on the bus over TCP.
    silent_unknown_over_tcp = False

    def __init__(self, units: Iterable[int], wander: bool = True, seed: int | None = None,
                 arcs: list[int] | None = None, arcs_every: float | None = None) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.units = {u: ArcFaultUnit(u, random.Random(self.rng.random()), wander)
                      for u in units}
        self.arcs = list(arcs or [])
        self.arcs_every = arcs_every
        self._next_arcs = time.time() + (arcs_every or 0) / 2
        if self.arcs and not arcs_every:
            for model in self.units.values():
                model.scenario = list(self.arcs)

    def tick(self, now: float) -> None:
        """Scenario clock: every `arcs_every` seconds one unit plays the `arcs` counts."""
        if self.arcs and self.arcs_every and now >= self._next_arcs and self.units:
            self._next_arcs = now + self.arcs_every
            model = self.units[self.rng.choice(list(self.units))]
            model.scenario = list(self.arcs)
            _LOGGER.info("arc_fault unit %d plays arc counts %s", model.unit, self.arcs)

    def read(self, unit: int, address: int, count: int) -> list[int] | ExcCodes:
        if address < 0 or count < 1 or address + count > REG_COUNT:
            return ExcCodes.ILLEGAL_ADDRESS
        now = time.time()
        self.tick(now)
        model = self.units[unit]
        model.update(now)
        self.requests += 1
        return model.regs[address:address + count]

    def write(self, unit: int, address: int, values: list[int]) -> ExcCodes | None:
        self.requests += 1
        return self.units[unit].write(address, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to listen on")
    parser.add_argument("--port", type=int, default=5021, help="Modbus TCP port")
    parser.add_argument("--units", default="1-4", help="unit ids, e.g. 1-4 or 1,3")
    parser.add_argument("--arcs", default="",
                        help="arc counts of consecutive 1-s windows, e.g. 9,14,0 (GB 50166: "
                             "<= 9 no alarm, >= 14 alarm)")
    parser.add_argument("--arcs-every", type=float, default=0.0,
                        help="replay --arcs on a random unit every N seconds (0: once, on "
                             "every unit, from the start)")
    parser.add_argument("--serial", default=None, help="serve Modbus RTU on this serial port")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--pty", action="store_true", help="serve Modbus RTU on a new pty")
    parser.add_argument("--static", action="store_true", help="fixed current and temperature")
    parser.add_argument("--seed", type=int, default=None)


async def run(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sim = ArcFaultSimulator(parse_units(args.units), wander=not args.static, seed=args.seed,
                            arcs=parse_arcs(args.arcs), arcs_every=args.arcs_every or None)
    if args.pty:
        master, _slave, name = open_pty()
        print(f"arc_fault simulator: Modbus RTU on {name} (units {args.units})", flush=True)
        await sim.serve_fd(master)
    elif args.serial:
        await sim.serve_serial(args.serial, args.baudrate)
    else:
        print(f"arc_fault simulator: Modbus TCP on {args.host}:{args.port} "
              f"(units {args.units})", flush=True)
        await sim.serve_tcp(args.host, args.port)
