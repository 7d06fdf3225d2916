"""Profiles: arcm-ref as CONTRACTS §8 says, read planning, and errors that name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
import voluptuous as vol
from voltwatch_arcm import DEVICE_SCHEMA, decoding
from voltwatch_arcm.decoding import BlockPlan, read_slot
from voltwatch_arcm.profile import (
    BUILTIN_DIR,
    ProfileError,
    Register,
    find_profile,
    plan_blocks,
)

from hub.core.conditions import CONDITION_TYPES, Condition, format_message
from hub.core.states import STATE_UNAVAILABLE, format_state

REF = (BUILTIN_DIR / "arcm-ref.yaml").read_text(encoding="utf-8")


def test_arcm_ref_matches_the_contract() -> None:
    profile = find_profile("arcm-ref")
    by_name = {r.name: r for r in profile.registers}
    assert by_name["residual_current"].address == 0 and by_name["residual_current"].sentinel == 0xFFFF
    assert [by_name[f"temperature_{n}"].address for n in range(1, 5)] == [1, 2, 3, 4]
    assert by_name["temperature_1"].type == "int16" and by_name["temperature_1"].sentinel == 0x7FFF
    assert by_name["power"].address == 11 and by_name["power"].type == "int32"
    assert by_name["energy"].address == 13 and by_name["energy"].type == "uint32"
    assert by_name["current_thd_c"].address == 21
    assert [(f.name, f.address) for f in profile.bitfields] == [
        ("alarm_bits", 32), ("fault_bits", 33), ("relay_bits", 34)]
    sp = profile.setpoints["residual_current_alarm"]
    assert (sp.address, sp.minimum, sp.maximum, sp.default) == (48, 20, 1000, 300)
    assert profile.setpoints["residual_current_delay"].address == 49
    assert profile.setpoints["protection_mode"].address == 57
    assert {name: c.code for name, c in profile.commands.items()} == {
        "trip": 1, "close": 2, "reset": 3, "mute": 4, "self_test": 5}
    assert profile.command_register == 64
    assert [(r.name, r.address) for r in profile.info] == [("model_code", 80),
                                                            ("firmware_version", 81)]


def test_decoding_signed_and_32_bit() -> None:
    profile = find_profile("arcm-ref")
    by_name = {r.name: r for r in profile.registers}
    assert profile.decode(by_name["temperature_1"], [0xFF9C], 0)[1] == -10.0
    assert profile.decode(by_name["power"], [0xFFFF, 0xFC18], 0)[1] == -1.0  # -1000 W
    assert profile.decode(by_name["energy"], [0x0001, 0x0000], 0)[1] == 655.36
    sp = profile.setpoints["residual_current_delay"]
    assert profile.encode(sp, 2.5) == [25]


def test_plan_merges_across_small_gaps_only() -> None:
    regs = [Register("a", 0), Register("b", 1, type="int32"), Register("c", 10), Register("d", 40)]
    blocks = plan_blocks(regs, [], max_read=100, max_gap=8)
    assert [(b.start, b.count) for b in blocks] == [(0, 11), (40, 1)]
    blocks = plan_blocks(regs, [], max_read=5, max_gap=100)
    assert [(b.start, b.count) for b in blocks] == [(0, 3), (10, 1), (40, 1)]
    assert [(b.start, b.count) for b in plan_blocks(regs, [], 100, 0)] == [
        (0, 3), (10, 1), (40, 1)]


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("old", "new", "needle", "words"), [
    ("name: power, address: 11, type: int32", "name: power, address: 11, type: int33",
     "type: int33", "registers.11.type"),
    ("name: frequency, address: 15", "name: frequency, address: 14", "address: 14",
     "already used by 'energy'"),
    ("6: {type: under_voltage, value: [voltage_a, voltage_b, voltage_c], pick: min}",
     "6: {type: under_voltage, value: [voltage_x], pick: min}", "voltage_x",
     "unknown register 'voltage_x'"),
    ("min: 20, max: 1000, default: 300", "min: 20, max: 1000, default: 3000",
     "default: 3000", "outside 20..1000"),
    ("trip: {code: 1, confirm: {bit: breaker_tripped, equals: 1}}",
     "trip: {code: 1, confirm: {bit: breaker_open, equals: 1}}", "breaker_open",
     "no relay bit is called 'breaker_open'"),
])
def test_errors_name_file_and_line(tmp_path: Path, old: str, new: str, needle: str,
                                   words: str) -> None:
    assert old in REF
    text = REF.replace(old, new)
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        find_profile(str(path))
    line = _line_of(text, needle)
    assert any(e.startswith(f"{path}:{line}:") and words in e for e in info.value.errors), \
        info.value.errors


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nregisters:\n  - {name: a, address: 0\n  - b\n", encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        find_profile(str(path))
    assert info.value.errors[0].startswith(f"{path}:")
    assert int(info.value.errors[0].split(":")[1]) >= 3


def test_device_schema_rejects_a_broken_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    (tmp_path / "profiles").mkdir()
    bad = tmp_path / "profiles" / "vendor-x.yaml"
    bad.write_text(REF.replace("type: int32", "type: int64", 1), encoding="utf-8")
    monkeypatch.setenv("VOLTWATCH_CONFIG", str(tmp_path))
    with pytest.raises(vol.Invalid) as info:
        DEVICE_SCHEMA({"profile": "vendor-x"})
    assert f"{bad}:{_line_of(bad.read_text(), 'int64')}:" in str(info.value)
    with pytest.raises(vol.Invalid, match="not found"):
        DEVICE_SCHEMA({"profile": "no-such-model"})
    assert DEVICE_SCHEMA({})["profile"] == "arcm-ref"


def test_a_new_model_needs_only_a_profile_file(tmp_path: Path) -> None:
    text = REF.replace("id: arcm-ref", "id: vendor-y").replace("max_gap: 12", "max_gap: 0")
    path = tmp_path / "vendor-y.yaml"
    path.write_text(text, encoding="utf-8")
    profile = find_profile("vendor-y", (tmp_path,))
    assert profile.id == "vendor-y"
    assert [(b.start, b.count) for b in profile.poll_blocks] == [(0, 22), (32, 3)]


def test_condition_words() -> None:
    assert format_message("residual_current_high", 550, "mA") == "剩余电流过大 550mA"
    assert format_message("temperature_high_1", 45, "°C") == "温度1过大 45.0°C"
    assert format_message("probe_open_4") == "温度4断线"
    assert format_message("communication_lost", language="en") == "Communication lost"
    assert format_message("temperature_high_2", 81.25, "°C", "en") == "Temperature 2 high 81.2°C"
    for type_ in ("over_voltage", "under_voltage", "overload", "short_circuit", "phase_loss",
                  "arc_fault", "smoke", "residual_transformer_open", "residual_transformer_short",
                  "low_battery", "tamper", "device_fault", "tripped", "closed", "reset", "muted",
                  "self_test", "hazard_warning", "impostor"):
        assert type_ in CONDITION_TYPES
    assert CONDITION_TYPES["tripped"].kind == "event" and CONDITION_TYPES["smoke"].kind == "alarm"
    cond = Condition.create("arcm-1", "device_fault", detail="异常码 2", detail_en="code 2")
    assert (cond.kind, cond.message, cond.message_en) == ("fault", "设备故障：异常码 2",
                                                          "Device fault: code 2")
    assert Condition.from_dict(cond.as_dict()) == cond


def test_changed_readings_come_out_as_decoding_says_from_a_bounded_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller's table of readings (raw -> value, text) must never answer differently
    from decoding the words afresh: sentinels, signs, both words of a 32-bit register."""
    profile = find_profile("arcm-ref")
    block = profile.poll_blocks[0]
    plan = BlockPlan(block, {}, {}, profile)
    monkeypatch.setattr(decoding, "READINGS_MAX", 8)
    samples = [0, 1, 99, 0x7FFF, 0x8000, 0xFC18, 0xFFFF, 12345, 2203, 31, 7, 500]
    for round_ in range(2):  # the second round answers from the table (or a refilled one)
        for first in samples:
            for second in (0, 0xFC18, first):
                words = [first] * block.count
                for slot in plan.slots:
                    if slot.wide:
                        words[slot.offset + 1] = second
                for slot in plan.slots:
                    raw, value = profile.decode(slot.reg, words, slot.offset)
                    expected = (None, STATE_UNAVAILABLE) if raw == slot.reg.sentinel else (
                        value, format_state(value))
                    assert read_slot(profile, slot, words) == expected, (slot.reg.name, words)
                    assert len(slot.readings) <= 8
    assert read_slot(profile, plan.slots[0], [0xFFFF] * block.count) == (None, "unavailable")
