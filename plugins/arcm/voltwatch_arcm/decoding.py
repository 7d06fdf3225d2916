"""A device's view of one register block: what each word means for it, and what it last said.

Why this exists: a detector repeats most of its registers from one poll to the next (a
temperature moves a tenth of a degree now and then; leakage sits at the same milliamps). The
poller keeps the words of the last read of each block and decodes, formats and range-checks a
register only when its words changed; an unchanged register is reported again through
`StateMachine.async_report` (only `last_reported` moves, as for an identical write, without
formatting or comparing anything) as long as the State it wrote is still the current one. Entity ids and attributes
are resolved once, here, not per poll.
"""

from __future__ import annotations

from typing import Any

from hub.core.states import STATE_UNKNOWN, State

from .profile import BitField, Block, Register


class Slot:
    """One register of a block as one device publishes it, with its last decoded value."""

    __slots__ = ("attrs", "entity_id", "offset", "reg", "state", "text", "value", "wide")

    def __init__(self, reg: Register, offset: int, entity_id: str | None,
                 attrs: dict[str, Any] | None) -> None:
        self.reg = reg
        self.offset = offset
        self.wide = reg.size == 2
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
                 attrs_of: dict[str, dict[str, Any]]) -> None:
        start = block.start
        self.slots: list[Slot] = []
        for reg in block.registers:
            entity_id = entity_of.get(reg.name)
            self.slots.append(Slot(reg, reg.address - start, entity_id,
                                   attrs_of.get(entity_id) if entity_id else None))
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
