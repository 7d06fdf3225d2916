"""Multi-part incoming SMS put back together before anyone reads them.

A reply longer than one SMS arrives as parts, each an SMS-DELIVER whose user-data header
names the set (a reference of 8 or 16 bits, TS 23.040 §9.2.3.24.1 / .8), how many parts it
has and which one this is. The network does not keep them in order, and a part can be lost.
Matching a reply against the acknowledgement words must see the whole text, so parts wait
here, keyed by (sender, reference, total): the same reference from two senders, or reused
for another set, are different sets.

A set that is still incomplete `timeout` seconds after its first part is dropped: counted,
logged with the sender and the parts that did arrive, and never handed on as if it were
whole. Sets live in memory only: a restart in the middle of a set loses its earlier parts
(they were already deleted from the modem's storage), which is the same outcome as a lost
part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_LOGGER = logging.getLogger(__name__)

Key = tuple[str, int, int]


@dataclass(slots=True)
class _Set:
    first_seen: float
    parts: dict[int, str] = field(default_factory=dict)


class Reassembler:
    """Collects parts; `add` returns the whole text once the last missing part arrives."""

    def __init__(self, timeout: float = 600.0, clock: Callable[[], float] = time.monotonic,
                 on_drop: Callable[[str, str], None] | None = None) -> None:
        self.timeout = timeout
        self.clock = clock
        self.on_drop = on_drop
        self.dropped = 0
        self._sets: dict[Key, _Set] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def add(self, sender: str, concat: tuple[int, int, int], text: str) -> str | None:
        """Take one part; the reassembled text when the set is complete, else None."""
        self.expire()
        reference, total, seq = concat
        if total <= 1:
            return text
        if not 1 <= seq <= total:
            _LOGGER.warning("SMS part from %s: sequence %d of %d is out of range; ignored",
                            sender, seq, total)
            return None
        key = (sender, reference, total)
        entry = self._sets.setdefault(key, _Set(self.clock()))
        entry.parts[seq] = text  # a repeated part replaces the earlier copy
        if len(entry.parts) < total:
            return None
        del self._sets[key]
        return "".join(entry.parts[i] for i in range(1, total + 1))

    def next_expiry(self) -> float | None:
        """Clock time when the oldest incomplete set expires, or None when none waits."""
        if not self._sets:
            return None
        return min(s.first_seen for s in self._sets.values()) + self.timeout

    def expire(self) -> int:
        """Drop every set older than `timeout`; how many were dropped."""
        now = self.clock()
        old = [key for key, entry in self._sets.items() if now - entry.first_seen >= self.timeout]
        for key in old:
            entry = self._sets.pop(key)
            sender, reference, total = key
            got = sorted(entry.parts)
            self.dropped += 1
            _LOGGER.warning("Incomplete SMS from %s dropped: reference %d, parts %s of %d "
                            "arrived within %g s", sender, reference,
                            ",".join(map(str, got)), total, self.timeout)
            if self.on_drop is not None:
                self.on_drop(sender, f"reference {reference}: {len(got)} of {total} parts")
        return len(old)
