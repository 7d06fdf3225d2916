"""Mosquitto's own refusals, made visible in the hub.

A client with a wrong password never reaches the hub: the broker refuses it. So the hub
listens to what the broker says about it. Mosquitto publishes its log lines (with
`log_dest topic`) to `$SYS/broker/log/<level>`; the hub subscribes to that and turns
"Client … disconnected, not authorised." into a refusal: counted, logged (throttled) and listed
for the admin in `GET /api/mqtt` (`refusals`), as the DTU server does for `gsm.port`.

What Mosquitto 2.0.11 (Debian 12) tells, checked against the real broker:

* a refused CONNECT (wrong password, unknown user, anonymous when not allowed) is logged at
  notice level as `Client <unknown> disconnected, not authorised.` - without the client id
  or user name it claimed. The peer address is in the `New connection from <ip>:<port> on
  port <n>.` line logged when the socket was accepted, so the refusal is matched to the
  oldest connection that is still being set up (accepted, neither connected nor refused).
  With one such connection (the usual case) the peer is exact; with several the refusal says
  how many candidates there were.
* an ACL denial (`Denied PUBLISH from <id> …`) is logged at *debug* level only, and debug lines
  are never published to `$SYS/broker/log`: the hub cannot see them this way (docs/security.md).
* `Reloading config.` (information level) follows a SIGHUP; the broker reloads before it
  serves the next client, so once the hub has read that line, new password/ACL files apply.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

from hub.core.ratelimit import LogThrottle
from hub.core.states import iso

_LOGGER = logging.getLogger(__name__)

LOG_TOPIC_PREFIX = "$SYS/broker/log/"
LOG_SUBSCRIPTION = "$SYS/broker/log/#"
REFUSED_NOT_AUTHORISED = "not_authorised"
REFUSED_REASONS = (REFUSED_NOT_AUTHORISED,)
MAX_REMEMBERED = 50
#: A connection that neither connects nor is refused within this is forgotten (seconds).
PENDING_TTL = 30.0
_MAX_PENDING = 1000

_STAMP = re.compile(r"^(?P<ts>\d+(?:\.\d+)?):\s+")
_ACCEPTED = re.compile(r"^New connection from (?P<peer>\S+) on port (?P<port>\d+)\.")
_CONNECTED = re.compile(r"^New client connected from (?P<peer>\S+) as ")
_NOT_AUTHORISED = re.compile(r"^Client (?P<id>\S+) disconnected, not authorised\.")
_RELOAD = "Reloading config"


class BrokerLog:
    """Reads Mosquitto's log lines; keeps refusals (counted by reason, latest few listed)."""

    def __init__(self) -> None:
        self.lines = 0
        self.reloads = 0
        self.counts: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=MAX_REMEMBERED)
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._throttle = LogThrottle(_LOGGER, 20, 60.0)
        self._waiters: list[asyncio.Future[None]] = []

    def feed(self, payload: bytes | bytearray) -> None:
        """One log line from `$SYS/broker/log/<level>`; anything unrecognised is ignored."""
        self.lines += 1
        line = bytes(payload).decode("utf-8", "replace").strip()
        stamp = _STAMP.match(line)
        at = float(stamp.group("ts")) if stamp else time.time()
        text = line[stamp.end():] if stamp else line
        if (match := _ACCEPTED.match(text)) is not None:
            self._accepted(match.group("peer"), at)
        elif (match := _CONNECTED.match(text)) is not None:
            self._pending.pop(match.group("peer"), None)
        elif (match := _NOT_AUTHORISED.match(text)) is not None:
            claimed = match.group("id")
            self._refused(None if claimed == "<unknown>" else claimed, at, text)
        elif text.startswith(_RELOAD):
            self.reloads += 1
            self._notify()

    def _accepted(self, peer: str, at: float) -> None:
        self._pending[peer] = at
        self._pending.move_to_end(peer)
        while self._pending and (len(self._pending) > _MAX_PENDING
                                 or next(iter(self._pending.values())) < at - PENDING_TTL):
            self._pending.popitem(last=False)

    def _refused(self, claimed: str | None, at: float, text: str) -> None:
        candidates = len(self._pending)
        peer = self._pending.popitem(last=False)[0] if candidates else None
        message = "the broker refused the credentials (wrong password, unknown user or none)"
        if candidates > 1:
            message += f"; {candidates} connections were being set up, the oldest is named"
        self.counts[REFUSED_NOT_AUTHORISED] += 1
        self.recent.append({"at": iso(at), "peer": peer, "claimed": claimed,
                            "reason": REFUSED_NOT_AUTHORISED, "message": message,
                            "broker_line": text[:200]})
        if self._throttle.allow("refused"):
            _LOGGER.warning("MQTT broker refused a connection from %s claiming %s: %s (%s)",
                            peer or "an unknown peer", claimed or "-", message,
                            REFUSED_NOT_AUTHORISED)
        self._notify()

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[BrokerLog], bool],
                       timeout: float = 10.0) -> None:
        """Until `predicate(self)` holds (tests, tools); the timeout is a failure bound only."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

    def stats(self) -> dict[str, int]:
        out = {f"refused_{reason}": self.counts[reason] for reason in REFUSED_REASONS}
        out["refused"] = sum(self.counts.values())
        out["broker_log_lines"] = self.lines
        out["broker_reloads"] = self.reloads
        return out
