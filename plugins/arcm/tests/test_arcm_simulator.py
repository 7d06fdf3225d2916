"""The simulator as a device: alarm delay, commands, self-test, persistence (its own clock)."""

from __future__ import annotations

from pathlib import Path

from pymodbus.constants import ExcCodes
from voltwatch_arcm.simulator import ArcmSimulator, SimOptions, parse_units


def test_alarm_after_delay_commands_and_self_test(tmp_path: Path) -> None:
    sim = ArcmSimulator([1], SimOptions(wander=False, leak_every=None))
    unit = sim.units[1]
    t = 1000.0
    unit.start_leak(t, value=550, duration=60)
    unit.set_override("residual_current", 550)
    unit.update(t)
    assert unit.regs[32] == 0  # delay 5.0 s (register 49 = 50) not yet elapsed
    unit.update(t + 5.1)
    assert unit.regs[32] & 1 and unit.regs[34] & 0b10
    assert unit.write(64, [4], t + 6) is None  # mute
    assert unit.regs[34] & 0b100
    assert unit.write(64, [3], t + 7) is None  # reset: alarm and mute cleared, delay restarts
    assert unit.regs[32] == 0 and not unit.regs[34] & 0b110
    unit.update(t + 8)
    assert unit.regs[32] == 0
    unit.update(t + 12.5)
    assert unit.regs[32] & 1
    unit.write(64, [5], t + 20)
    assert unit.regs[34] & 0b1000
    unit.update(t + 24)
    assert not unit.regs[34] & 0b1000
    assert unit.write(48, [5], t) == ExcCodes.ILLEGAL_VALUE
    assert unit.write(0, [5], t) == ExcCodes.ILLEGAL_ADDRESS
    assert unit.write(64, [9], t) == ExcCodes.ILLEGAL_VALUE


def test_protection_mode_trips(tmp_path: Path) -> None:
    sim = ArcmSimulator([1], SimOptions(wander=False, leak_every=None))
    unit = sim.units[1]
    unit.write(57, [2], 0.0)
    unit.write(49, [0], 0.0)
    unit.set_override("residual_current", 800)
    unit.update(1.0)
    assert unit.regs[34] & 1


def test_setpoints_and_breaker_persist(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    sim = ArcmSimulator([1, 2], SimOptions(wander=False, leak_every=None), state)
    assert sim.write(2, 48, [450]) is None
    assert sim.write(2, 64, [1]) is None
    again = ArcmSimulator([1, 2], SimOptions(wander=False, leak_every=None), state)
    assert again.units[2].regs[48] == 450 and again.units[2].regs[34] & 1
    assert again.units[1].regs[48] == 300


def test_wandering_values_stay_plausible() -> None:
    sim = ArcmSimulator([1], SimOptions(seed=7, leak_every=None))
    for step in range(50):
        regs = sim.units[1].regs
        sim.units[1].update(1000.0 + step)
        assert 2000 < regs[5] < 2400 and regs[0] < 200 and regs[32] == 0


def test_parse_units() -> None:
    assert parse_units("1-3,7,9-10") == [1, 2, 3, 7, 9, 10]
