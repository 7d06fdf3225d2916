"""Mosquitto's own refusals, made visible in the hub.

A client with a wrong password never reaches the hub: the broker refuses it. So the hub
listens to what the broker says about it. Mosquitto publishes its log lines (with
`log_dest topic`) to `$SYS/broker/log/<level>`; the hub subscribes to that and turns
"Client … disconnected, not authorised." into a refusal: counted, logged (throttled) and listed
for the admin in `GET /api/mqtt` (`refusals`), as the DTU server does for `gsm.port`.

What Mosquitto 2.0.11 (Debian 12) tells, checked against the real broker (docs/security.md,
"Refusals at the broker"):

* a refused CONNECT (wrong password, unknown user, anonymous when not allowed) is logged at
  notice level as `Client <unknown> disconnected, not authorised.` - without the client id
  or user name it claimed (no level logs them; the debug line `Sending CONNACK to <ip> (0, 5)`
  adds nothing but the address). The peer address is in the `New connection from <ip>:<port>
  on port <n>.` line logged when the socket was accepted, so the refusal is matched to the
  oldest connection that is still being set up (accepted, neither connected nor refused).
  With one such connection (the usual case) the peer is exact; with several the refusal says
  how many candidates there were.
* an ACL denial of a PUBLISH (`Denied PUBLISH from <client id> (d0, q1, r0, m1, '<topic>',
  ... (n bytes))`) is logged at *debug* level only, and debug lines are never published to
  `$SYS/broker/log` (logging.c skips MOSQ_LOG_DEBUG for `log_dest topic`). With
  `mqtt.broker_log_file` the hub tails the broker's log file instead (`BrokerLogTail`) and
  reads the denials from there (`feed_file`), naming the user and peer from the client's own
  `New client connected from <peer> as <id> (p2, c1, k60, u'<user>').` line.
* a SUBSCRIBE to a topic the ACL does not let the client read is *granted* (the acl_file
  check answers "yes" to every subscription, a FIXME in security_default.c) and the broker
  then silently delivers nothing from it: no denial is logged at any level. With
  `log_type subscribe` the subscription itself is on `$SYS/broker/log/M/subscribe`
  (`<client id> <qos> <topic>`); when the hub writes the ACL (`mqtt.broker_files`) it knows a
  device may read only `<prefix>/cmd/<its id>`, and counts any other subscription of a
  device as `subscribe_denied`.
* `Reloading config.` (information level) follows a SIGHUP; the broker reloads before it
  serves the next client, so once the hub has read that line, new password/ACL files apply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.core.ratelimit import LogThrottle
from hub.core.states import iso

_LOGGER = logging.getLogger(__name__)

LOG_TOPIC_PREFIX = "$SYS/broker/log/"
LOG_SUBSCRIPTION = "$SYS/broker/log/#"
SUBSCRIBE_TOPIC = "$SYS/broker/log/M/subscribe"
REFUSED_NOT_AUTHORISED = "not_authorised"
REFUSED_PUBLISH = "publish_denied"
REFUSED_SUBSCRIBE = "subscribe_denied"
REFUSED_REASONS = (REFUSED_NOT_AUTHORISED, REFUSED_PUBLISH, REFUSED_SUBSCRIBE)
MAX_REMEMBERED = 50
#: A connection that neither connects nor is refused within this is forgotten (seconds).
PENDING_TTL = 30.0
_MAX_PENDING = 1000
#: Client id -> (peer, user) of connected clients, per stream; the oldest go beyond this.
_MAX_CLIENTS = 100_000

_STAMP = re.compile(r"^(?P<ts>\d+(?:\.\d+)?):\s+")
_ACCEPTED = re.compile(r"^New connection from (?P<peer>\S+) on port (?P<port>\d+)\.")
_CONNECTED = re.compile(r"^New client connected from (?P<peer>\S+) as ")
_CLIENT = re.compile(r"^New client connected from (?P<peer>\S+) as (?P<id>.*) "
                     r"\(p\d+, c\d+, k\d+(?:, u'(?P<user>.*)')?\)\.$")
_GONE = re.compile(r"^Client (?P<id>.*) disconnected[.,]")
_NOT_AUTHORISED = re.compile(r"^Client (?P<id>\S+) disconnected, not authorised\.")
_DENIED_PUBLISH = re.compile(r"^Denied PUBLISH from (?P<id>.*) \(d\d, q\d, r\d, m\d+, "
                             r"'(?P<topic>.*)', \.\.\. \(\d+ bytes\)\)$")
_SUBSCRIBED = re.compile(r" \d+ ")  # `<client id> <options> <topic>`: both may hold spaces
_RELOAD = "Reloading config"
# In the log file, only these lines matter; found by the C regex engine in a chunk that may
# hold thousands of debug lines. Anchored after a timestamp made of digits and separators
# only (the default one, or a `log_timestamp_format` of digits, "-", ":", "T", ...), so a
# client id or topic in another line (`Received PUBLISH from <id> ...`) cannot forge one.
_FILE_LINES = re.compile(
    rb"^(?:([0-9TZ:.,/+\- ]*?): )?((?:New client connected from |Denied PUBLISH from |Client )"
    rb"[^\n]*)$", re.MULTILINE)


class _Clients:
    """Client id -> (peer, user name), from `New client connected ...` lines of one stream."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    def seen(self, text: str) -> bool:
        """Track a connect / disconnect line; True when the line was one of them."""
        if (match := _CLIENT.match(text)) is not None:
            self._by_id[match.group("id")] = (match.group("peer"), match.group("user"))
            self._by_id.move_to_end(match.group("id"))
            if len(self._by_id) > _MAX_CLIENTS:
                self._by_id.popitem(last=False)
            return True
        if (match := _GONE.match(text)) is not None:
            self._by_id.pop(match.group("id"), None)
            return True
        return False

    def get(self, client_id: str) -> tuple[str | None, str | None]:
        return self._by_id.get(client_id, (None, None))

    def split_subscription(self, text: str) -> tuple[str, str] | None:
        """`<client id> <qos> <topic>` into (client id, topic), preferring a known client id."""
        cuts = list(_SUBSCRIBED.finditer(text))
        for cut in cuts:
            if text[:cut.start()] in self._by_id:
                return text[:cut.start()], text[cut.end():]
        return (text[:cuts[0].start()], text[cuts[0].end():]) if cuts else None


class BrokerLog:
    """Reads Mosquitto's log lines; keeps refusals (counted by reason, latest few listed).

    `prefix` and `hub_user`, when given (the hub writes the ACL: `mqtt.broker_files`), let it
    judge the subscriptions logged on `$SYS/broker/log/M/subscribe`: any user but the hub's
    may read only `<prefix>/cmd/<its user name>`.
    """

    def __init__(self, prefix: str | None = None, hub_user: str | None = None,
                 on_refusal: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.on_refusal = on_refusal  # called with each new entry of `recent`
        self.lines = 0
        self.file_lines = 0
        self.reloads = 0
        self.counts: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=MAX_REMEMBERED)
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._throttle = LogThrottle(_LOGGER, 20, 60.0)
        self._waiters: list[asyncio.Future[None]] = []
        self._prefix = prefix
        self._hub_user = hub_user
        # One map per stream: the topic and the file carry the same connect lines at
        # different times, and a disconnect read on one must not hide a client from the other.
        self._topic_clients = _Clients()
        self._file_clients = _Clients()

    def feed(self, payload: bytes | bytearray, topic: str = "") -> None:
        """One log line from `$SYS/broker/log/<level>`; anything unrecognised is ignored."""
        self.lines += 1
        line = bytes(payload).decode("utf-8", "replace").strip()
        stamp = _STAMP.match(line)
        at = float(stamp.group("ts")) if stamp else time.time()
        text = line[stamp.end():] if stamp else line
        if topic == SUBSCRIBE_TOPIC:
            self._subscribed(text, at)
            return
        if (match := _ACCEPTED.match(text)) is not None:
            self._accepted(match.group("peer"), at)
        elif (match := _CONNECTED.match(text)) is not None:
            self._pending.pop(match.group("peer"), None)
            self._topic_clients.seen(text)
        elif (match := _NOT_AUTHORISED.match(text)) is not None:
            claimed = match.group("id")
            self._refused(None if claimed == "<unknown>" else claimed, at, text)
        elif text.startswith(_RELOAD):
            self.reloads += 1
            self._notify()
        else:
            self._topic_clients.seen(text)

    def feed_file(self, chunk: bytes) -> None:
        """Whole lines of the broker's log file (`BrokerLogTail`): only ACL denials count here.

        Refused logins and reloads are read from the topic (`feed`) alone, so that a broker
        logging to both is not counted twice.
        """
        for match in _FILE_LINES.finditer(chunk):
            self.file_lines += 1
            text = match.group(2).decode("utf-8", "replace").rstrip("\r")
            if self._file_clients.seen(text):
                continue
            if (denied := _DENIED_PUBLISH.match(text)) is not None:
                stamp = match.group(1)
                at = float(stamp) if stamp and stamp.isdigit() else time.time()
                self._publish_denied(denied.group("id"), denied.group("topic"), at)

    def _accepted(self, peer: str, at: float) -> None:
        self._pending[peer] = at
        self._pending.move_to_end(peer)
        while self._pending and (len(self._pending) > _MAX_PENDING
                                 or next(iter(self._pending.values())) < at - PENDING_TTL):
            self._pending.popitem(last=False)

    def _refused(self, claimed: str | None, at: float, text: str) -> None:
        candidates = len(self._pending)
        peer = self._pending.popitem(last=False)[0] if candidates else None
        message = ("the broker refused the credentials (wrong password, unknown user or none); "
                   "it does not log the client id or user name claimed")
        if candidates > 1:
            message += f"; {candidates} connections were being set up, the oldest is named"
        self._record(REFUSED_NOT_AUTHORISED, at, peer, claimed, None, None, message, text)

    def _publish_denied(self, client_id: str, topic: str, at: float) -> None:
        peer, user = self._file_clients.get(client_id)
        message = f"the broker's ACL refused a PUBLISH to {topic}"
        posing = self._device_of(topic)
        if posing is not None and posing != user:
            message += f" (a topic of device {posing})"
        if user is None:
            message += "; the client connected before the hub read the log, user unknown"
        self._record(REFUSED_PUBLISH, at, peer, client_id, user, topic, message,
                     f"Denied PUBLISH from {client_id} '{topic}'")

    def _subscribed(self, text: str, at: float) -> None:
        parts = self._topic_clients.split_subscription(text)
        if parts is None or self._prefix is None:
            return
        client_id, topic = parts
        peer, user = self._topic_clients.get(client_id)
        if user is None or user == self._hub_user:
            return  # the hub itself, or a client the hub never saw connect: not judged
        if topic == f"{self._prefix}/cmd/{user}":
            return
        message = (f"{user} subscribed to {topic}, which its ACL does not let it read; "
                   "Mosquitto grants the subscription but delivers nothing from it")
        self._record(REFUSED_SUBSCRIBE, at, peer, client_id, user, topic, message, text)

    def _device_of(self, topic: str) -> str | None:
        if self._prefix is None or not topic.startswith(f"{self._prefix}/dev/"):
            return None
        rest = topic[len(self._prefix) + 5:]
        return rest.split("/", 1)[0] or None

    def _record(self, reason: str, at: float, peer: str | None, claimed: str | None,
                user: str | None, topic: str | None, message: str, text: str) -> None:
        self.counts[reason] += 1
        entry: dict[str, Any] = {"at": iso(at), "peer": peer, "claimed": claimed,
                                 "reason": reason, "message": message,
                                 "broker_line": text[:200]}
        if reason != REFUSED_NOT_AUTHORISED:
            entry["username"] = user
            entry["topic"] = topic
            entry["device"] = self._device_of(topic) if reason == REFUSED_PUBLISH else None
        self.recent.append(entry)
        if self._throttle.allow(reason):
            _LOGGER.warning("MQTT broker refused %s from %s claiming %s%s: %s (%s)",
                            "a connection" if reason == REFUSED_NOT_AUTHORISED else "a client",
                            peer or "an unknown peer", claimed or "-",
                            f" (user {user})" if user else "", message, reason)
        if self.on_refusal is not None:
            try:
                self.on_refusal(entry)
            except Exception:  # a consumer's bug must not stop the log being read
                _LOGGER.exception("MQTT: handling a broker refusal failed")
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
        out["broker_log_file_lines"] = self.file_lines
        out["broker_reloads"] = self.reloads
        return out


#: Seconds between two looks at the broker's log file.
POLL_INTERVAL = 1.0
#: Bytes read per look at most; a broker writing faster than this is read over several.
_READ_CHUNK = 4 * 1024 * 1024


class BrokerLogTail:
    """Follows the broker's log file (`mqtt.broker_log_file`) like `tail -F`.

    Starts at the end (old denials are history, not news), reads whole lines only, and
    reopens the path when logrotate replaced the file (another inode: the rest of the old one
    is read first) or truncated it (`copytruncate`: size below the position). A missing or
    unreadable file is reported once, then looked for again at every poll. Each chunk goes to
    `BrokerLog.feed_file`; the hub never dies of the file.
    """

    def __init__(self, path: str | Path, log: BrokerLog,
                 interval: float = POLL_INTERVAL) -> None:
        self.path = Path(path)
        self.log = log
        self.interval = interval
        self.reopens = 0
        self.error: str | None = None
        self._handle: Any = None
        self._inode: tuple[int, int] | None = None
        self._rest = b""
        self._first = True

    def poll(self) -> None:
        """One look: open or reopen as needed, feed what was appended since the last one."""
        try:
            stat = os.stat(self.path)
        except OSError as err:
            if self._handle is not None:
                self._drain()  # renamed away: its last lines still count
            self._failed(f"cannot read the broker's log file {self.path}: {err}")
            return
        identity = (stat.st_dev, stat.st_ino)
        if self._handle is not None and identity != self._inode:
            self._drain()  # the rotated file's last lines
            self._close()
            self.reopens += 1
        if self._handle is None:
            try:
                self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open between polls
            except OSError as err:
                self._failed(f"cannot read the broker's log file {self.path}: {err}")
                return
            self._inode = identity
            if self._first:
                self._handle.seek(0, os.SEEK_END)
            self._first = False
            if self.error is not None:
                _LOGGER.info("MQTT: reading the broker's log file %s again", self.path)
            self.error = None
        elif stat.st_size < self._handle.tell():
            self._handle.seek(0)  # truncated in place
            self._rest = b""
            self.reopens += 1
        self._drain()

    def _drain(self) -> None:
        while True:
            read = self._handle.read(_READ_CHUNK)
            if not read:
                return
            data = self._rest + read
            end = data.rfind(b"\n") + 1
            self._rest = data[end:][-_READ_CHUNK:]  # a line without end is not kept forever
            if end:
                self.log.feed_file(data[:end])
            if len(read) < _READ_CHUNK:
                return

    def _failed(self, message: str) -> None:
        self._close()
        self._first = False  # a file that appears later is read from its start
        if self.error != message:
            _LOGGER.warning("MQTT: %s; ACL denials are not seen until it can be read", message)
        self.error = message

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        self._rest = b""

    async def run(self) -> None:
        try:
            while True:
                try:
                    self.poll()
                except Exception:  # the tail must not end the plugin, nor the hub
                    _LOGGER.exception("MQTT: reading the broker's log file %s failed", self.path)
                    self._close()
                await asyncio.sleep(self.interval)
        finally:
            self._close()
