"""The DTU socket server (CONTRACTS §7): registration, heartbeats, Modbus-RTU polling, liveness.

A DTU (a 2G/4G modem with an RS485 port) dials *in*: the hub cannot reach it, so the socket the
DTU opened is the only way to poll the detectors behind it. Hence the shape of this module:

* `DtuConnection` is one TCP connection (an `asyncio.Protocol`, not a stream + task, so five
  thousand idle DTUs cost five thousand small objects, not five thousand tasks). It parses the
  byte stream: registration id, heartbeats, replies to the one outstanding request, garbage.
* `Dtu` is the identity (IMEI/ICCID) that outlives connections: counters, liveness, the
  request lock, and which connection currently speaks for it.
* `GsmServer` owns the listener, the DTUs by id, and the rules between them: unknown ids are
  kept as pending for an admin to adopt, a second connection for a live id is refused as a
  suspected impostor, silence raises `communication_lost`.

Liveness uses a lazy deadline per DTU: a received packet only stores a timestamp; the timer
fires at most once per `heartbeat_timeout` and re-arms itself for the remaining time, so a busy
DTU costs no timer churn per packet.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.events import EVENT_DEVICE_REGISTRY_UPDATED, Event, callback
from hub.core.links import (
    LinkError,
    LinkExceptionResponse,
    LinkProtocolError,
    LinkTimeout,
    LinkUnavailable,
)
from hub.core.ratelimit import KeyedLimiter, LogThrottle, TokenBucket
from hub.core.states import STATE_OFF, STATE_ON, iso, slugify

from . import access, rtu
from .ownership import DtuOwnership
from .settings import ID_ICCID, REGISTRATION_DATA, GsmSettings
from .traffic import TrafficManager

if TYPE_CHECKING:
    from hub.hub import Hub

_LOGGER = logging.getLogger(__name__)

PLATFORM = "gsm"
#: Seconds between two 疑似冒充 events of one DTU (the refusals themselves are all counted).
IMPOSTOR_EVENT_INTERVAL = 60.0
EVENT_DTU_PENDING = "gsm_dtu_pending"

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def dtu_device_id(dtu_id: str) -> str:
    """The registry id of a DTU: `dtu-860000000000001` (entity `binary_sensor.dtu_8600…_online`)."""
    return f"dtu-{dtu_id.lower()}"


class ConnState(enum.Enum):
    REGISTERING = "registering"
    PROBATION = "probation"  # registered, waiting while the old connection is probed
    ACTIVE = "active"
    CLOSED = "closed"


class _ReplyTimeout(Exception):
    """Internal: the per-request timer fired before a reply arrived."""


@dataclass(slots=True)
class _Expect:
    unit: int
    function: int
    future: asyncio.Future[bytes]


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(_ReplyTimeout())


class DtuConnection(asyncio.Protocol):
    """One TCP connection from a DTU, from accept to close."""

    def __init__(self, server: GsmServer) -> None:
        self.server = server
        self.settings = server.settings
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.state = ConnState.REGISTERING
        self.dtu: Dtu | None = None
        self.dtu_id: str | None = None
        self.expect: _Expect | None = None
        self.bytes_in = 0
        self.dropped_in = 0  # of bytes_in, dropped over the packet/byte rate
        self.bytes_out = 0
        self.connected_at = time.time()
        self._buf = bytearray()
        self._reg_timer: asyncio.TimerHandle | None = None
        self._reg_bytes = b""
        self._key: bytes | None = None  # the key that must follow the id, once it is known
        self._id_len = 0  # bytes of prefix + id, once the id is read
        #: True once this connection sent its DTU's configured key.
        self.verified = False
        self._packets = TokenBucket(server.settings.packet_rate)
        self._bytes = TokenBucket(server.settings.byte_rate)
        self._paused: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        if self.server.connection_limiter.take(host):
            self.server.refuse(self, None, access.REFUSED_RATE,
                               f"more than {self.settings.connection_rate} connections from {host}")
            return
        self._reg_timer = asyncio.get_running_loop().call_later(
            self.settings.registration_timeout, self._registration_timed_out
        )

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._packets.take() or self._bytes.take(len(data)):
            self._throttle(len(data))
            return
        state = self.state
        if state is ConnState.ACTIVE:
            dtu = self.dtu
            assert dtu is not None
            dtu.bytes_up += len(data)
            dtu.touch()
            self._buf += data
            self._parse()
        elif state is ConnState.REGISTERING:
            self._buf += data
            self._register()
        elif state is ConnState.PROBATION:
            # Kept until the old connection has been probed; bounded against a flood.
            self._buf += data
            if len(self._buf) > 4 * rtu.MAX_FRAME:
                self.reject("oversized data while its id is being checked", len(self._buf))
        self.server.notify()

    def _throttle(self, nbytes: int) -> None:
        """Over its packet or byte rate: drop this packet and stop reading for a while.

        Pausing the transport pushes back through TCP (the kernel stops acknowledging), so a
        flooding peer costs the event loop nothing until it is read again, and every other
        DTU's replies and alarms are parsed as before.
        """
        server = self.server
        server.throttled += 1
        server.dropped_bytes += nbytes
        self.dropped_in += nbytes
        if self.dtu is not None:
            # Dropped, but carried and billed all the same: the data budget counts them
            # (traffic.py), shown apart from the bytes the hub used.
            self.dtu.throttled += 1
            self.dtu.dropped_bytes += nbytes
        server.notify()
        if server.log_throttle.allow("throttled"):
            _LOGGER.warning(
                "GSM: %s (%s) exceeds %s or %s; dropped %d bytes, reading paused",
                self.dtu_id or "unregistered connection", self.peer,
                self.settings.packet_rate, self.settings.byte_rate, nbytes,
            )
        transport = self.transport
        if transport is None or transport.is_closing() or self._paused is not None:
            return
        transport.pause_reading()
        wait = max(1.0 / self._packets.per_second, nbytes / self._bytes.per_second, 0.05)
        self._paused = asyncio.get_running_loop().call_later(min(wait, 5.0), self._resume)

    def _resume(self) -> None:
        self._paused = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self.state
        self.state = ConnState.CLOSED
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._reg_timer is not None:
            self._reg_timer.cancel()
            self._reg_timer = None
        self.server.connections.discard(self)
        self._fail_expect(LinkUnavailable(f"DTU {self.dtu_id} connection from {self.peer} closed"))
        if previous is ConnState.ACTIVE and self.dtu is not None:
            self.dtu.connection_closed(self, exc)
        self.server.notify()

    # -- helpers --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.state is ConnState.CLOSED or self.transport is None or (
            self.transport.is_closing()
        )

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)
        self.bytes_out += len(frame)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def reject(self, reason: str, nbytes: int | None = None) -> None:
        """Close a connection that did not register properly; nothing else is affected."""
        self.server.rejected += 1
        extra = f" ({nbytes} bytes)" if nbytes is not None else ""
        _LOGGER.warning("GSM: closing connection from %s: %s%s", self.peer, reason, extra)
        self._buf.clear()
        self.state = ConnState.CLOSED
        self.close()

    def reset_buffer(self) -> None:
        """Forget a partial reply (after a timeout) so it cannot corrupt the next one."""
        self._buf.clear()

    def _fail_expect(self, err: Exception) -> None:
        expect, self.expect = self.expect, None
        if expect is not None and not expect.future.done():
            expect.future.set_exception(err)

    def _registration_timed_out(self) -> None:
        self._reg_timer = None
        if self.state is not ConnState.REGISTERING:
            return
        if self._id_len:  # the id came, its key did not
            self.server.refuse(self, self.dtu_id, access.REFUSED_BAD_KEY,
                               f"no registration key within {self.settings.registration_timeout:g}s")
        else:
            self.reject(f"no registration within {self.settings.registration_timeout:g}s")

    # -- registration ---------------------------------------------------------------------
    def _register(self) -> None:
        settings = self.settings
        buf = self._buf
        prefix = settings.registration_prefix
        heartbeat = settings.heartbeat
        if self._id_len:
            self._read_key()
            return
        id_len = settings.id_length
        need = len(prefix) + id_len
        if len(buf) > need + access.MAX_KEY_BYTES + len(heartbeat) + rtu.MAX_FRAME + 2:
            self.reject("oversized packet before registration", len(buf))
            return
        while buf.startswith(heartbeat):  # a DTU may heartbeat before it registers
            del buf[: len(heartbeat)]
        if not buf:
            return
        if len(buf) < len(heartbeat) and heartbeat.startswith(buf):
            return
        head = bytes(buf[: len(prefix)])
        if not prefix.startswith(head):
            self.reject("binary garbage before registration", len(buf))
            return
        id_part = bytes(buf[len(prefix) : need])
        valid = _ICCID_CHARS if settings.id_type == ID_ICCID else _DIGITS
        if not all(byte in valid for byte in id_part):
            self.reject("binary garbage before registration", len(buf))
            return
        if len(buf) < need:
            return
        dtu_id = id_part.decode("ascii").upper()
        self.dtu_id = dtu_id
        verdict = self.server.registration_verdict(dtu_id)
        if verdict.refusal is not None:
            self.server.refuse(self, dtu_id, verdict.refusal, verdict.message)
            return
        self._key = verdict.key
        self._id_len = need
        self._read_key()

    def _read_key(self) -> None:
        """After the id: the DTU's key when it has one (exactly its length), then registered."""
        buf = self._buf
        need = self._id_len
        key = self._key
        if key is not None:
            if len(buf) < need + len(key):
                return  # the rest of the key is still to come (or never: registration_timeout)
            if not access.key_matches(bytes(buf[need : need + len(key)]), key):
                self.server.refuse(self, self.dtu_id, access.REFUSED_BAD_KEY,
                                   "wrong or missing registration key")
                return
            need += len(key)
            self.verified = True
        self._reg_bytes = bytes(buf[:need])
        del buf[:need]
        while buf[:1] in (b"\r", b"\n"):
            del buf[:1]
        if self._reg_timer is not None:
            self._reg_timer.cancel()
            self._reg_timer = None
        assert self.dtu_id is not None
        self.state = ConnState.PROBATION
        self.server.on_registered(self, self.dtu_id)

    def activate(self, dtu: Dtu) -> None:
        """Called by the server when this connection becomes the one speaking for `dtu`."""
        self.dtu = dtu
        self.state = ConnState.ACTIVE
        if self._buf:
            self._parse()

    # -- the registered byte stream -------------------------------------------------------
    def _parse(self) -> None:
        buf = self._buf
        dtu = self.dtu
        assert dtu is not None
        heartbeat = self.settings.heartbeat
        reg = self._reg_bytes if self.settings.registration == REGISTRATION_DATA else b""
        while buf:
            if reg:
                if buf.startswith(reg):
                    del buf[: len(reg)]
                    continue
                if len(buf) < len(reg) and reg.startswith(buf):
                    return
            expect = self.expect
            if expect is not None and buf[0] == expect.unit:
                if len(buf) < 2:
                    return
                if buf[1] in (expect.function, expect.function | rtu.EXCEPTION_FLAG):
                    if not self._take_reply(expect):
                        return
                    continue
            if buf.startswith(heartbeat):
                del buf[: len(heartbeat)]
                dtu.heartbeats += 1
                continue
            if len(buf) < len(heartbeat) and heartbeat.startswith(buf):
                return
            dtu.garbage += 1
            if self.server.log_throttle.allow("garbage"):
                _LOGGER.warning(
                    "GSM: DTU %s (%s) sent %d unexpected bytes %s; dropped",
                    dtu.id, self.peer, len(buf), bytes(buf[:16]).hex(),
                )
            buf.clear()

    def _take_reply(self, expect: _Expect) -> bool:
        """Consume a complete reply at the front of the buffer; False while it is incomplete."""
        buf = self._buf
        dtu = self.dtu
        assert dtu is not None
        length = rtu.reply_length(buf, expect.function)
        if length is None or len(buf) < length:
            return False
        frame = bytes(buf[:length])
        if not rtu.crc_ok(frame):
            dtu.crc_errors += 1
            _LOGGER.warning(
                "GSM: DTU %s (%s) CRC error in a %d-byte reply from unit %d; dropped %d bytes",
                dtu.id, self.peer, length, expect.unit, len(buf),
            )
            buf.clear()
            self._fail_expect(LinkProtocolError(f"DTU {dtu.id} unit {expect.unit}: CRC error"))
            return True
        del buf[:length]
        dtu.frames += 1
        self.expect = None
        if not expect.future.done():
            expect.future.set_result(frame)
        return True


_DIGITS = frozenset(b"0123456789")
_ICCID_CHARS = frozenset(b"0123456789ABCDEFabcdef")


class Dtu:
    """One DTU identity: its current connection, counters, liveness and request lock."""

    def __init__(self, server: GsmServer, dtu_id: str) -> None:
        self.server = server
        self.id = dtu_id
        self.device_id = dtu_device_id(dtu_id)
        self.entity_id = f"binary_sensor.{slugify(self.device_id)}_online"
        self.connection: DtuConnection | None = None
        self.lock = asyncio.Lock()
        self.created = time.time()
        self.connected_at: float | None = None
        self.disconnected_at: float | None = None
        self.last_seen: float | None = None
        self._last_seen_mono = time.monotonic()
        self.peer: str | None = None
        self.online = False
        self.communication_lost = False
        self.entity_ready = False
        self._deadline: asyncio.TimerHandle | None = None
        # Counters (plain ints: bumped on the hot path).
        self.frames = 0
        self.heartbeats = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.crc_errors = 0
        self.garbage = 0
        self.requests = 0
        self.timeouts = 0
        self.exception_replies = 0
        self.connects = 0
        self.reconnects = 0
        self.impostors = 0
        self.refused = 0  # connections claiming this id that were refused (key, impostor)
        self.throttled = 0  # packets dropped over the packet/byte rate
        self.dropped_bytes = 0  # their bytes (billed by the carrier, never parsed)

    @property
    def known(self) -> bool:
        return self.id in self.server.known_ids

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed

    # -- liveness -------------------------------------------------------------------------
    @property
    def heartbeat_timeout(self) -> float:
        """This DTU's silence limit (`gsm.dtus.<id>.heartbeat_timeout`, else the section's)."""
        return float(self.server.settings.for_dtu(self.id, "heartbeat_timeout"))

    def touch(self) -> None:
        """Anything received proves the DTU alive; transitions only when something changed."""
        self.last_seen = time.time()
        self._last_seen_mono = time.monotonic()
        if self._deadline is None:
            self._arm(self.heartbeat_timeout)
        if self.communication_lost or not self.online:
            self.server.set_alive(self, True)

    def _arm(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(delay, self._check_silence)

    def start_watch(self) -> None:
        """Start the silence timer for a known DTU that has not connected yet."""
        if self._deadline is None and not self.communication_lost:
            self._last_seen_mono = time.monotonic()
            self._arm(self.heartbeat_timeout)

    def seen_elsewhere(self) -> None:
        """Another worker's live lease proves the DTU alive (it talks to that worker)."""
        self._last_seen_mono = time.monotonic()
        if self.communication_lost:
            self.server.set_alive(self, True)

    def _check_silence(self) -> None:
        self._deadline = None
        timeout = self.heartbeat_timeout
        if not self.connected and self.server.ownership.owner_elsewhere(self.id) is not None:
            # Driven by another worker: it watches the DTU. Ours counts from when nobody does.
            self._last_seen_mono = time.monotonic()
        silent = time.monotonic() - self._last_seen_mono
        if silent < timeout:
            self._arm(timeout - silent)
            return
        self.server.set_alive(self, False, silent=silent)

    def stop_watch(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_closed(self, conn: DtuConnection, exc: Exception | None) -> None:
        if self.connection is not conn:
            return
        self.connection = None
        self.disconnected_at = time.time()
        _LOGGER.info(
            "GSM: DTU %s (%s) disconnected%s", self.id, conn.peer, f": {exc}" if exc else ""
        )
        self.server.connection_dropped(self)

    # -- requests -------------------------------------------------------------------------
    async def request(self, unit: int, frame: bytes, function: int,
                      connection: DtuConnection | None = None) -> bytes:
        """Send one request and return the CRC-checked reply; one outstanding per socket.

        Retries a timeout or a corrupt reply; an exception reply is an answer and is raised.
        """
        settings = self.server.settings
        loop = asyncio.get_running_loop()
        attempts = 1 + settings.retries
        failure = ""
        async with self.lock:
            for _attempt in range(attempts):
                conn = connection or self.connection
                if conn is None or conn.closed or conn.state is not ConnState.ACTIVE:
                    raise LinkUnavailable(f"DTU {self.id} not connected")
                future: asyncio.Future[bytes] = loop.create_future()
                conn.expect = _Expect(unit, function, future)
                self.requests += 1
                conn.send(frame)
                self.bytes_down += len(frame)
                timer = loop.call_later(settings.request_timeout, _expire, future)
                try:
                    reply = await future
                except _ReplyTimeout:
                    self.timeouts += 1
                    conn.reset_buffer()
                    failure = f"no reply within {settings.request_timeout:g}s"
                    continue
                except LinkProtocolError as err:
                    failure = str(err)
                    continue
                finally:
                    timer.cancel()
                    if conn.expect is not None and conn.expect.future is future:
                        conn.expect = None
                if reply[1] & rtu.EXCEPTION_FLAG:
                    self.exception_replies += 1
                    code = reply[2]
                    raise LinkExceptionResponse(
                        f"DTU {self.id} unit {unit}: Modbus exception {code} "
                        f"({EXCEPTION_NAMES.get(code, 'unknown')})",
                        code,
                    )
                return reply
        raise LinkTimeout(f"DTU {self.id} unit {unit}: {failure} ({attempts} attempt(s))")

    def as_dict(self) -> dict[str, Any]:
        conn = self.connection
        return {
            "imei": self.id,
            "device_id": self.device_id,
            "entity_id": self.entity_id,
            "status": "known" if self.known else "pending",
            "known": self.known,
            "connected": self.connected,
            "online": self.online,
            "communication_lost": self.communication_lost,
            "peer": self.peer,
            "connected_at": iso(self.connected_at) if self.connected_at else None,
            "last_seen": iso(self.last_seen) if self.last_seen else None,
            "units": sorted(self.server.units_of(self.id)),
            "devices": [d.id for d in self.server.devices_behind(self.id)],
            "counters": self.counters(),
            "busy": conn is not None and conn.expect is not None,
            # Registration: "key" when a key is configured (and checked), else "open": an IMEI
            # alone proves nothing, so such a DTU is flagged weak.
            "auth": "key" if self.server.settings.key_of(self.id) else "open",
            "weak": self.server.settings.key_of(self.id) is None,
            "verified": conn is not None and conn.verified,
            # Several workers: the one holding the DTU's socket (this one's id when it is here),
            # None when no worker does.
            "owner": self.server.ownership.owner_of(self.id),
            "owned_here": self.connected,
            "traffic": self.server.traffic.report(self.id),
        }

    def counters(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "heartbeats": self.heartbeats,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "crc_errors": self.crc_errors,
            "garbage": self.garbage,
            "requests": self.requests,
            "timeouts": self.timeouts,
            "exception_replies": self.exception_replies,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "impostors": self.impostors,
            "refused": self.refused,
            "throttled": self.throttled,
            "dropped_bytes": self.dropped_bytes,
        }


class GsmServer:
    """The listener and the rules between connections and DTU identities."""

    def __init__(self, hub: Hub, settings: GsmSettings) -> None:
        self.hub = hub
        self.settings = settings
        self.dtus: dict[str, Dtu] = {}
        self.connections: set[DtuConnection] = set()
        self.known_ids: set[str] = set()
        self._link_units: dict[str, set[int]] = {}
        self._behind: dict[str, set[str]] = {}  # DTU id -> ids of the devices behind it
        self._device_dtu: dict[str, str] = {}  # device id -> DTU id
        self.stopping = False
        self.links: dict[str, Any] = {}
        self._server: asyncio.Server | None = None
        self._unsub: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rejected = 0
        self.accepted = 0
        self.throttled = 0
        self.dropped_bytes = 0
        self.refusals = access.RefusalLog()
        self._impostor_events: dict[str, float] = {}  # DTU id -> monotonic time of the last
        self.connection_limiter = KeyedLimiter(settings.connection_rate)
        self.log_throttle = LogThrottle(_LOGGER)
        self.started = False
        self._waiters: list[asyncio.Future[None]] = []
        self.traffic = TrafficManager(self, settings.traffic)
        self.ownership = DtuOwnership(self)

    # -- change notification --------------------------------------------------------------
    def notify(self) -> None:
        """Wake `wait_until` callers; cheap when nobody waits (the usual case)."""
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds, re-checked after every connection or stream change.

        For tests and admin tools that must act once a DTU has registered, dropped or been
        refused, without polling on a clock.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not predicate():
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                await waiter

    # -- lifecycle ------------------------------------------------------------------------
    async def async_start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self.traffic.load()
        except Exception:  # accounting must never keep the DTUs out
            _LOGGER.exception("GSM traffic: reading this month's usage failed; starting at 0")
        self._server = await loop.create_server(
            self._make_protocol, self.settings.host, self.settings.port, backlog=1024,
        )
        self.started = True
        self.refresh_known()
        self._unsub = self.hub.bus.listen(EVENT_DEVICE_REGISTRY_UPDATED, self._registry_updated)
        await self._sync_registry()
        for dtu_id in sorted(self.known_ids):
            self.dtu(dtu_id).start_watch()
        self.traffic.settle()
        self._spawn(self.traffic.run(), "gsm traffic")
        if self.ownership.shared:
            self._spawn(self.ownership.run(), "gsm ownership")
        _LOGGER.info("GSM: DTU server listening on %s:%d", self.settings.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (differs from the configured one when that was 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self.settings.port

    async def async_stop(self) -> None:
        """Close everything without reporting the DTUs offline: the hub, not they, went away."""
        self.stopping = True
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if self._server is not None:
            self._server.close()
        for dtu in self.dtus.values():
            dtu.stop_watch()
        await self.ownership.release_all()
        for conn in list(self.connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.traffic.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.started = False

    def _make_protocol(self) -> DtuConnection:
        self.accepted += 1
        return DtuConnection(self)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("GSM task %s died", task.get_name(), exc_info=task.exception())

    # -- identities -----------------------------------------------------------------------
    def dtu(self, dtu_id: str) -> Dtu:
        found = self.dtus.get(dtu_id)
        if found is None:
            found = self.dtus[dtu_id] = Dtu(self, dtu_id)
        return found

    def register_link(self, dtu_id: str, unit: int | None = None) -> None:
        """A device plugin acquired a link to this DTU: it is known from now on."""
        units = self._link_units.setdefault(dtu_id, set())
        if unit is not None:
            units.add(unit)
        if dtu_id not in self.known_ids:
            self.known_ids.add(dtu_id)
            if self.started:
                self._became_known(dtu_id)

    def devices_behind(self, dtu_id: str) -> list[Any]:
        """Registry entries of the detectors behind a DTU (from the index, not a scan)."""
        found = []
        for device_id in sorted(self._behind.get(dtu_id, ())):
            device = self.hub.devices.get(device_id)
            if device is not None:
                found.append(device)
        return found

    def units_of(self, dtu_id: str) -> set[int]:
        units = set(self._link_units.get(dtu_id, ()))
        for device in self.devices_behind(dtu_id):
            unit = device.link.get("unit")
            if isinstance(unit, int):
                units.add(unit)
        return units

    @staticmethod
    def _dtu_of(device: Any) -> str | None:
        """The DTU id a registry device hangs behind, or None (a DTU itself hangs on nothing)."""
        link = device.link or {}
        if device.platform == PLATFORM or link.get("transport") != PLATFORM:
            return None
        imei = link.get("imei")
        return str(imei).upper() if imei else None

    def _index_device(self, device_id: str, dtu_id: str | None) -> None:
        old = self._device_dtu.pop(device_id, None)
        if old is not None:
            members = self._behind.get(old)
            if members is not None:
                members.discard(device_id)
                if not members:
                    del self._behind[old]
        if dtu_id is not None:
            self._device_dtu[device_id] = dtu_id
            self._behind.setdefault(dtu_id, set()).add(device_id)

    def refresh_known(self) -> set[str]:
        """Rebuild the device index from the registry; returns the newly known ids.

        A full scan, done once at start; registry events then update the index one device at
        a time (10,000 detectors must not mean 10,000 scans of 10,000 devices).
        """
        self._behind.clear()
        self._device_dtu.clear()
        for device in self.hub.devices:
            self._index_device(device.id, self._dtu_of(device))
        return self._recompute_known()

    def _recompute_known(self) -> set[str]:
        ids = set(self._link_units) | set(self._behind)
        added = ids - self.known_ids
        self.known_ids = ids
        return added

    @callback
    def _registry_updated(self, event: Event) -> None:
        device_id = event.data.get("device_id")
        if not isinstance(device_id, str):
            return
        device = self.hub.devices.get(device_id)
        if device is not None and device.platform == PLATFORM:
            return  # our own DTU entries
        self._index_device(device_id, self._dtu_of(device) if device is not None else None)
        for dtu_id in sorted(self._recompute_known()):
            self._became_known(dtu_id)

    def _became_known(self, dtu_id: str) -> None:
        dtu = self.dtu(dtu_id)
        _LOGGER.info("GSM: DTU %s is now known (adopted)", dtu_id)
        self._spawn(self._ensure_registry(dtu), f"gsm adopt {dtu_id}")
        if dtu.connected:
            self.set_alive(dtu, True)
            self.ownership.attached(dtu)
        else:
            dtu.start_watch()

    async def _sync_registry(self) -> None:
        """Device + entity for every known DTU; forget DTU devices nothing refers to any more."""
        for device in list(self.hub.devices):
            if device.platform == PLATFORM and device.source == "discovered":
                imei = str((device.link or {}).get("imei", "")).upper()
                if imei not in self.known_ids:
                    await self.hub.devices.async_remove(device.id)
        for dtu_id in sorted(self.known_ids):
            await self._ensure_registry(self.dtu(dtu_id))

    async def _ensure_registry(self, dtu: Dtu) -> None:
        behind = self.devices_behind(dtu.id)
        project = next((d.project for d in behind if d.project), None)
        existing = self.hub.devices.get(dtu.device_id)
        await self.hub.devices.async_upsert(
            id=dtu.device_id,
            platform=PLATFORM,
            name=existing.name if existing and existing.name else f"DTU {dtu.id}",
            project=existing.project if existing and existing.project else project,
            link={"transport": PLATFORM, "imei": dtu.id},
            model="GSM DTU",
            source=existing.source if existing else "discovered",
        )
        await self.hub.entities.async_register(
            dtu.entity_id,
            platform=PLATFORM,
            device_id=dtu.device_id,
            unique_id=f"gsm-{dtu.id}-online",
            name=f"DTU {dtu.id} online",
            device_class="connectivity",
        )
        dtu.entity_ready = True
        self._write_state(dtu)
        self.notify()

    # -- who may register -----------------------------------------------------------------
    def registration_verdict(self, dtu_id: str) -> access.Verdict:
        """The policy's answer for a claimed id: refuse now, or the key that must follow."""
        return access.decide(self.settings.auth, dtu_id, dtu_id in self.known_ids,
                             self.settings.key_of(dtu_id))

    def refuse(self, conn: DtuConnection, claimed: str | None, reason: str, message: str) -> None:
        """Close a connection that may not speak for the id it claims; counted, logged, shown.

        A wrong or missing key for a known DTU is also a security event: the `impostor`
        condition (疑似冒充) on the DTU device, naming the peer. The live connection, if any,
        is untouched: the refused one never got near it.
        """
        self.rejected += 1
        quiet = reason == access.REFUSED_RATE and not self.log_throttle.allow("refused rate")
        self.refusals.record(conn.peer, claimed, reason, message, log=not quiet)
        conn.state = ConnState.CLOSED
        conn.reset_buffer()
        conn.close()
        dtu = self.dtus.get(claimed) if claimed else None
        if dtu is not None:
            dtu.refused += 1
        if reason in (access.REFUSED_BAD_KEY, access.REFUSED_IMPOSTOR) and claimed and (
            claimed in self.known_ids
        ) and self._impostor_event_due(claimed):
            self._condition(dtu_device_id(claimed), "impostor", True,
                            detail=f"{conn.peer} ({message})",
                            entity_id=f"binary_sensor.{slugify(dtu_device_id(claimed))}_online")
        self.notify()

    def _impostor_event_due(self, dtu_id: str) -> bool:
        """At most one 疑似冒充 event per DTU per `IMPOSTOR_EVENT_INTERVAL`.

        Each event becomes an alarm record and may page people: an attacker retrying a wrong
        key in a loop must not turn into an SMS storm. Every attempt is still refused, logged,
        counted and listed; only the event is held back.
        """
        now = time.monotonic()
        last = self._impostor_events.get(dtu_id)
        if last is not None and now - last < IMPOSTOR_EVENT_INTERVAL:
            return False
        self._impostor_events[dtu_id] = now
        return True

    # -- connections ----------------------------------------------------------------------
    def on_registered(self, conn: DtuConnection, dtu_id: str) -> None:
        dtu = self.dtus.get(dtu_id)
        if dtu is None:
            dtu = self.dtu(dtu_id)
            if not dtu.known:
                self._forget_excess_pending()
                _LOGGER.warning(
                    "GSM: unknown DTU %s registered from %s; kept as pending until an admin "
                    "adds a device with link {transport: gsm, imei: %s}", dtu_id, conn.peer, dtu_id,
                )
                self.hub.bus.async_fire(EVENT_DTU_PENDING, {"imei": dtu_id, "peer": conn.peer})
        old = dtu.connection
        if old is None or old.closed:
            self._attach(dtu, conn)
        else:
            self._spawn(self._probe_then_decide(dtu, conn), f"gsm probe {dtu_id}")

    def _attach(self, dtu: Dtu, conn: DtuConnection) -> None:
        if dtu.connects:
            dtu.reconnects += 1
        dtu.connects += 1
        dtu.connection = conn
        dtu.peer = conn.peer
        dtu.connected_at = time.time()
        # Bytes of the registration phase; those dropped over the rate limits stay apart.
        dtu.bytes_up += conn.bytes_in - conn.dropped_in
        dtu.dropped_bytes += conn.dropped_in
        _LOGGER.info("GSM: DTU %s connected from %s", dtu.id, conn.peer)
        dtu.touch()
        conn.activate(dtu)
        self.ownership.attached(dtu)
        self._write_state(dtu)
        self.notify()

    async def _probe_then_decide(self, dtu: Dtu, newcomer: DtuConnection) -> None:
        """CONTRACTS §7: the old connection keeps the id while it still answers a probe poll."""
        while True:
            current = dtu.connection
            if current is None or current.closed:
                if not newcomer.closed:
                    self._attach(dtu, newcomer)
                return
            unit = min(self.units_of(dtu.id), default=1)
            try:
                await dtu.request(
                    unit, rtu.read_request(unit, self.settings.probe_address, 1),
                    rtu.READ_HOLDING, connection=current,
                )
                alive = True
            except LinkExceptionResponse:
                alive = True  # an exception reply is still an answer
            except LinkError:
                alive = False
            if newcomer.closed:
                return
            if dtu.connection is not current:
                continue  # someone else changed it meanwhile: decide again
            if alive:
                dtu.impostors += 1
                self.refuse(newcomer, dtu.id, access.REFUSED_IMPOSTOR,
                            f"suspected impostor (疑似冒充): the connection from {current.peer} "
                            "still answers")
                return
            _LOGGER.info(
                "GSM: DTU %s: old connection from %s failed the probe; replaced by %s",
                dtu.id, current.peer, newcomer.peer,
            )
            dtu.connection = None
            current.state = ConnState.CLOSED
            current.close()
            self._attach(dtu, newcomer)
            return

    def connection_dropped(self, dtu: Dtu) -> None:
        """The socket closed: offline now; `communication_lost` waits for the silence timeout."""
        dtu.online = False
        self.ownership.dropped(dtu)
        self._write_state(dtu)

    def ownership_changed(self, dtu: Dtu) -> None:
        """Another worker took the DTU, gave it up, or this one claimed it: show it."""
        self._write_state(dtu)
        self.notify()

    def _forget_excess_pending(self) -> None:
        pending = [d for d in self.dtus.values() if not d.known and not d.connected]
        excess = len([d for d in self.dtus.values() if not d.known]) - self.settings.max_pending + 1
        if excess <= 0:
            return
        pending.sort(key=lambda d: d.last_seen or d.created)
        for dtu in pending[:excess]:
            dtu.stop_watch()
            del self.dtus[dtu.id]

    # -- liveness and conditions ----------------------------------------------------------
    def set_alive(self, dtu: Dtu, alive: bool, silent: float | None = None) -> None:
        if self.stopping:
            return
        if alive:
            dtu.online = dtu.connected
            if dtu.communication_lost:
                dtu.communication_lost = False
                _LOGGER.info("GSM: DTU %s talks again", dtu.id)
                if dtu.known:
                    self._comm_conditions(dtu, False)
        else:
            dtu.online = False
            if not dtu.communication_lost:
                dtu.communication_lost = True
                _LOGGER.warning(
                    "GSM: DTU %s silent for %.0fs (通讯中断)", dtu.id, silent or 0.0
                )
                if dtu.known:
                    self._comm_conditions(dtu, True)
        self._write_state(dtu)
        self.notify()

    def _comm_conditions(self, dtu: Dtu, active: bool) -> None:
        detail = f"DTU {dtu.id}"
        self._condition(dtu.device_id, "communication_lost", active, detail=detail,
                        entity_id=dtu.entity_id)
        for device in self.devices_behind(dtu.id):
            self._condition(device.id, "communication_lost", active, detail=detail)

    def _condition(self, device_id: str, type_: str, active: bool, *, detail: str | None = None,
                   entity_id: str | None = None) -> None:
        # source "gsm": the DTU server's view, kept apart from the detector plugin's own
        # (a device behind a silent DTU is lost for both; each clears only its own claim).
        condition = Condition.create(device_id, type_, active, entity_id=entity_id,
                                     detail=detail, source="gsm")
        self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())

    def _write_state(self, dtu: Dtu) -> None:
        if not dtu.entity_ready or not dtu.known or self.stopping:
            return
        elsewhere = None if dtu.connected else self.ownership.owner_elsewhere(dtu.id)
        attributes: dict[str, Any] = {}
        if self.ownership.shared:
            # Several workers: who holds the socket ("connected to worker b"); None: nobody.
            attributes["worker"] = self.ownership.worker_id if dtu.connected else elsewhere
        self.hub.states.async_set(
            dtu.entity_id,
            STATE_ON if dtu.online or elsewhere else STATE_OFF,
            {
                **attributes,
                "friendly_name": f"DTU {dtu.id}",
                "device_class": "connectivity",
                "imei": dtu.id,
                "peer": dtu.peer,
                "communication_lost": dtu.communication_lost,
                # Shown on the device page: an IMEI alone proves nothing (weak).
                "registration": "key" if self.settings.key_of(dtu.id) else "open",
                "weak": self.settings.key_of(dtu.id) is None,
            },
        )

    # -- reporting ------------------------------------------------------------------------
    def listing(self, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        self.traffic.settle()
        chosen = self.dtus.values() if ids is None else [self.dtus[i] for i in ids if i in self.dtus]
        return [dtu.as_dict() for dtu in sorted(chosen, key=lambda d: (d.known, d.id))]

    def stats(self) -> dict[str, float]:
        """Totals for /metrics (per-DTU detail is in the API: 5,000 label sets is too many)."""
        totals: dict[str, float] = {
            "gsm_dtus_known": 0, "gsm_dtus_pending": 0, "gsm_dtus_connected": 0,
            "gsm_dtus_online": 0, "gsm_dtus_communication_lost": 0, "gsm_dtus_weak": 0,
        }
        sums = dict.fromkeys(
            ("frames", "heartbeats", "bytes_up", "bytes_down", "crc_errors", "garbage",
             "requests", "timeouts", "exception_replies", "reconnects", "impostors",
             "refused", "throttled", "dropped_bytes"), 0)
        for dtu in self.dtus.values():
            totals["gsm_dtus_known" if dtu.known else "gsm_dtus_pending"] += 1
            totals["gsm_dtus_connected"] += dtu.connected
            totals["gsm_dtus_online"] += dtu.online
            totals["gsm_dtus_communication_lost"] += dtu.communication_lost
            if dtu.known and self.settings.key_of(dtu.id) is None:
                totals["gsm_dtus_weak"] += 1
            for key in sums:
                sums[key] += getattr(dtu, key)
        totals.update({f"gsm_{key}_total": value for key, value in sums.items()})
        totals["gsm_connections_accepted_total"] = self.accepted
        totals["gsm_connections_rejected_total"] = self.rejected
        totals["gsm_connections_open"] = len(self.connections)
        totals["gsm_throttled_total"] = self.throttled
        totals["gsm_throttled_bytes_total"] = self.dropped_bytes
        totals.update(self.refusals.stats())
        totals.update(self.ownership.stats())
        self.traffic.settle()
        totals.update(self.traffic.stats())
        return totals
