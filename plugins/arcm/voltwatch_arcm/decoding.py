"""A device's view of one register block: what each word means for it, and what it last said.

Why this exists: a detector repeats most of its registers from one poll to the next (a
temperature moves a tenth of a degree now and then; leakage sits at the same milliamps). The
poller keeps the words of the last read of each block and decodes, formats and range-checks a
register only when its words changed; an unchanged register is reported again through
`StateMachine.async_report` (only `last_reported` moves, as for an identical write, without
formatting or comparing anything) as long as the State it wrote is still the current one. Entity ids and attributes
are resolved once, here, not per poll.

A register whose words did change is looked up in its profile's table of readings (raw words ->
value and state text), shared by every device on the profile: decoding, scaling, rounding and
formatting a float cost ~4 µs, and a detector's registers wander over a few hundred raw
values, so most changed readings were formatted before (by this unit or a neighbour). The
table of a register is emptied when it reaches READINGS_MAX entries (a counter such as energy
never repeats), which bounds its memory.
"""

from __future__ import annotations

from typing import Any

from hub.core.states import STATE_UNAVAILABLE, STATE_UNKNOWN, State, format_state

from .profile import BitField, Block, Profile, Register

READINGS_MAX = 4096


class Slot:
    """One register of a block as one device publishes it, with its last decoded value."""

    __slots__ = ("attrs", "entity_id", "offset", "readings", "reg", "state", "text", "value",
                 "wide")

    def __init__(self, reg: Register, offset: int, entity_id: str | None,
                 attrs: dict[str, Any] | None,
                 readings: dict[int, tuple[float | None, str]] | None = None) -> None:
        self.reg = reg
        self.offset = offset
        self.wide = reg.size == 2
        #: raw words (two words as one int) -> (value, text); shared per profile register.
        self.readings: dict[int, tuple[float | None, str]] = {} if readings is None else readings
        self.entity_id = entity_id
        self.attrs = attrs
        self.value: float | None = None
        self.text: str = STATE_UNKNOWN
        #: The State this device last wrote for the entity: while it is still the current
        #: one and the words did not change, a poll only reports it (`StateMachine.async_report`).
        self.state: State | None = None


class BlockPlan:
    """The slots and bitfields of one block for one device, and the words last read."""

    __slots__ = ("bitfields", "entity_slots", "relays", "slot_of", "slots", "states", "words")

    def __init__(self, block: Block, entity_of: dict[str, str],
                 attrs_of: dict[str, dict[str, Any]], profile: Profile | None = None) -> None:
        start = block.start
        self.slots: list[Slot] = []
        for reg in block.registers:
            entity_id = entity_of.get(reg.name)
            readings = None if profile is None else profile.readings.setdefault(reg.name, {})
            self.slots.append(Slot(reg, reg.address - start, entity_id,
                                   attrs_of.get(entity_id) if entity_id else None, readings))
        self.bitfields: list[tuple[BitField, int]] = [
            (bf, bf.address - start) for bf in block.bitfields if bf.kind != "relay"]
        self.relays: list[tuple[BitField, int]] = [
            (bf, bf.address - start) for bf in block.bitfields if bf.kind == "relay"]
        self.entity_slots = [slot for slot in self.slots if slot.entity_id is not None]
        self.slot_of: dict[str, Slot] = {}
        for slot in self.entity_slots:
            self.slot_of[str(slot.entity_id)] = slot
        #: The words of the last read of this block (None before the first).
        self.words: list[int] | None = None
        #: The States of every entity slot after the last read (None while one is missing),
        #: so that a block whose words all repeat is reported with one call.
        self.states: list[State] | None = None

    def remember_states(self) -> None:
        states: list[State] = []
        for slot in self.entity_slots:
            if slot.state is None:
                self.states = None
                return
            states.append(slot.state)
        self.states = states


def read_slot(profile: Profile, slot: Slot, words: list[int]) -> tuple[float | None, str]:
    """(value, state text) of a slot's register in `words`; None / unavailable for a sentinel.

    Through the profile's table of readings, so each raw value is decoded and formatted once.
    """
    offset = slot.offset
    key = words[offset] << 16 | words[offset + 1] if slot.wide else words[offset]
    readings = slot.readings
    found = readings.get(key)
    if found is None:
        reg = slot.reg
        raw, value = profile.decode(reg, words, offset)
        if raw == reg.sentinel:
            found = (None, STATE_UNAVAILABLE)
        else:
            found = (value, format_state(value))
        if len(readings) >= READINGS_MAX:
            readings.clear()
        readings[key] = found
    return found
