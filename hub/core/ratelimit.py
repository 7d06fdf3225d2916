"""Token buckets: how often a peer may connect, a DTU may send, a client may try to sign in.

Why hand-written rather than the `limits` package: the per-DTU check runs for every packet a
DTU sends (the transport's hot path), so it must be a few float operations with no locks, no
storage object and no expiry thread; the per-key table must be bounded so that a flood of
made-up keys (spoofed addresses, random user names) cannot grow it without end.

`rate("30/min")` parses the configuration form; a bucket holds `burst` tokens and refills at
`per_second`. `take()` answers 0.0 when a token was available, else the seconds until one is.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import voluptuous as vol

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` events per `period` seconds; `burst` events may come at once (default: count)."""

    count: float
    period: float
    burst: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.count:g}/{self.period:g}s"


def rate(value: Any) -> Rate:
    """`30/min`, `5/s`, `100/10s`, `1000/h` (a voluptuous validator; a Rate passes through)."""
    if isinstance(value, Rate):
        return value
    match = _RATE.match(str(value))
    if not match:
        raise vol.Invalid(f"expected a rate such as 30/min, 5/s or 100/10s, got {value!r}")
    count = float(match.group(1))
    period = float(match.group(2) or 1) * _PERIODS[match.group(3)]
    if count <= 0 or period <= 0:
        raise vol.Invalid(f"a rate must be positive, got {value!r}")
    return Rate(count, period, count)


class TokenBucket:
    """One bucket: `burst` tokens, refilled at `per_second`; plain attributes for speed."""

    __slots__ = ("burst", "per_second", "stamp", "tokens")

    def __init__(self, limit: Rate, now: float | None = None) -> None:
        self.burst = limit.burst
        self.per_second = limit.per_second
        self.tokens = limit.burst
        self.stamp = time.monotonic() if now is None else now

    def take(self, amount: float = 1.0, now: float | None = None) -> float:
        """0.0 and the tokens taken, or the seconds until `amount` would be available."""
        if now is None:
            now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if tokens >= amount:
            self.tokens = tokens - amount
            return 0.0
        self.tokens = tokens
        return (amount - tokens) / self.per_second


class KeyedLimiter:
    """A bucket per key (client address, DTU id), the least recently used forgotten first.

    Forgetting a key only ever gives that key a fresh, full bucket: with `max_keys` above the
    number of honest peers a flood of made-up keys costs memory, never an honest peer's turn.
    """

    def __init__(self, limit: Rate, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0

    def take(self, key: str, amount: float = 1.0) -> float:
        """0.0 when allowed, else the seconds the caller should wait (and is refused for now)."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.limit, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        wait = bucket.take(amount, now)
        if wait:
            self.refused += 1
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class LogThrottle:
    """At most `per_window` log lines per key and window, then one "N more" summary line.

    A peer sending garbage (or a flood of refused connections) must not be able to fill the
    disk or drown the one line an admin needs; counters always count everything, the log
    shows enough to know what is going on.
    """

    def __init__(self, logger: logging.Logger, per_window: int = 20, window: float = 60.0) -> None:
        self.logger = logger
        self.per_window = per_window
        self.window = window
        self._windows: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        state = self._windows.get(key)
        if state is None or now - state[0] >= self.window:
            if state is not None and state[2]:
                self.logger.warning("%d more %s message(s) not logged in the last %gs",
                                    int(state[2]), key, self.window)
            self._windows[key] = [now, 1, 0]
            return True
        if state[1] < self.per_window:
            state[1] += 1
            return True
        state[2] += 1
        return False
