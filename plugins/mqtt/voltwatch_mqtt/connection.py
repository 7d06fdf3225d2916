"""The hub's MQTT connection: decode, dispatch to device-type plugins, commands with ack.

Two client connections ("lanes") to the broker, because the broker keeps one message queue per
client session: on one connection an alarm waits behind every reading queued before it, and
a hub that falls behind its telemetry (more readings than its CPU handles) would get its smoke
alarm minutes late, or never once the broker's queue limit drops it (measured: issue 12,
docs/benchmarks.md). So:

* the *bulk* lane (`client_id`) takes telemetry (shared between workers with `shared_group`),
  the other workers' state relay (mirror.py) and this hub's lag probe (lag.py);
* the *priority* lane (`client_id` + `PRIORITY_SUFFIX`) takes events, status (the devices'
  wills), command acks and the broker's log, and sends the commands. Its queue holds only
  those, so an alarm reaches the hub in milliseconds however far behind the readings are.

Both run in the hub's event loop, one consuming task each; the loop is fair between them.

The message loop is the hot path (a site can push thousands of readings a second), so per
message it does one topic split, one `json.loads`, one registry lookup and one handler call,
and never creates a task of its own. A coroutine handler is awaited right there, in the loop,
which keeps each device's messages in order and applies back-pressure to the broker instead of
piling up tasks.

Nothing a device sends can stop the loop: bad topics, bad JSON, wrong shapes, unknown devices
and raising handlers are counted (see `stats()`) and logged with the topic, throttled so that
a misbehaving device cannot flood the log. Only the broker going away ends an iteration, and
then the loop reconnects with a capped exponential backoff.

The aiomqtt `Client` object is kept across reconnects (the library's documented reconnect
pattern): messages it already received and acknowledged but the loop had not yet handled stay
in its queue and are handled after the reconnect instead of being lost.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiomqtt

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.push import CommandError, PushMessage
from hub.core.ratelimit import LogThrottle
from hub.core.states import STATE_OFF, STATE_ON, slugify
from hub.core.tasks import cancel_requested

from .brokerlog import LOG_SUBSCRIPTION, LOG_TOPIC_PREFIX, BrokerLog, BrokerLogTail
from .lag import PROBE_INTERVAL, WARN_AFTER, IntakeLag
from .mirror import StateMirror, topic_level
from .peers import PeerCalls
from .settings import MqttSettings

if TYPE_CHECKING:
    from hub.core.registries import DeviceEntry
    from hub.hub import Hub

_LOGGER = logging.getLogger(__name__)

TRANSPORT = "mqtt"
KINDS = ("telemetry", "event", "status", "ack")
EVENT_STATES = ("active", "cleared")
MALFORMED_REASONS = ("bad_topic", "bad_json", "bad_shape", "bad_status", "too_large")
_MAX_REMEMBERED_IDS = 10_000  # ids logged once; beyond this new ids are counted, not logged
_LOG_WINDOW = 60.0
_LOG_PER_WINDOW = 20
#: Seconds between two 疑似冒充 events of one device (the denials themselves are all counted).
IMPOSTOR_EVENT_INTERVAL = 60.0
BULK, PRIORITY = "bulk", "priority"
#: Appended to `client_id` for the priority lane's client id (its own broker session).
PRIORITY_SUFFIX = "-events"


@dataclass(slots=True)
class DeviceStatus:
    """What the transport knows about one device's connection (not its readings)."""

    device_id: str
    entity_id: str
    online: bool | None = None  # None: no status seen since the hub started
    status_at: float | None = None
    last_seen: float | None = None
    messages: int = 0
    entity_registered: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "entity_id": self.entity_id,
            "online": self.online,
            "status_at": self.status_at,
            "last_seen": self.last_seen,
            "messages": self.messages,
        }


@dataclass(slots=True, eq=False)
class Lane:
    """One client connection to the broker: its session, its subscriptions, its loop."""

    name: str  # BULK or PRIORITY
    client_id: str
    client: aiomqtt.Client | None = None
    task: asyncio.Task[None] | None = None
    connected: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    connects: int = 0
    reconnects: int = 0


@dataclass(slots=True)
class _Pending:
    device_id: str
    command: str
    future: asyncio.Future[dict[str, Any]]


def _no_delay(client: aiomqtt.Client) -> None:
    """TCP_NODELAY on the connected socket (always on the priority lane; on the bulk lane with
    `mqtt.tcp_nodelay`); aiomqtt has no option for it,
    so through its paho client. A failure only costs latency."""
    try:
        sock = client._client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError) as err:
        _LOGGER.warning("MQTT: cannot set TCP_NODELAY (%s)", err)


class MqttConnection:
    """Owns the aiomqtt client, the subscriptions, the per-device status and the counters."""

    def __init__(self, hub: Hub, settings: MqttSettings) -> None:
        self.hub = hub
        self.settings = settings
        prefix = settings.topic_prefix
        self._dev_prefix = f"{prefix}/dev/"
        self._dev_prefix_len = len(self._dev_prefix)
        self._cmd_prefix = f"{prefix}/cmd/"
        self._max_payload = settings.max_payload
        self.devices: dict[str, DeviceStatus] = {}
        self._pending: dict[str, _Pending] = {}
        self.bulk = Lane(BULK, settings.client_id)
        self.priority = Lane(PRIORITY, settings.client_id + PRIORITY_SUFFIX)
        self.lanes = (self.bulk, self.priority)
        self.lag = IntakeLag()
        self._probe_topic = f"{prefix}/hub/lag/{topic_level(settings.client_id)}"
        self.started = False
        self.last_error: str | None = None
        self._unknown_logged: set[str] = set()
        self._unhandled_logged: set[str] = set()
        self._throttle = LogThrottle(_LOGGER, _LOG_PER_WINDOW, _LOG_WINDOW)
        self.link = MqttLink(self)
        # With broker_files the hub wrote the ACL, so it can judge devices' subscriptions.
        self.broker_log = BrokerLog(
            prefix if settings.broker_files else None, settings.username, self._broker_refused)
        self._impostor_events: dict[str, float] = {}  # device id -> monotonic time of the last
        self.broker_log_tail = (BrokerLogTail(settings.broker_log_file, self.broker_log)
                                if settings.broker_log_file else None)
        self._tail_task: asyncio.Task[None] | None = None
        # The state relay between workers (mirror.py); None when `mirror_states` is off.
        self.mirror: StateMirror | None = StateMirror(self) if settings.mirror_states else None
        self._mirror_prefix = self.mirror.topic_prefix if self.mirror is not None else None
        # Control calls forwarded between workers (peers.py); only with a shared database.
        self.peer_calls = PeerCalls(self)
        # Counters: plain ints and one dict each, bumped on the hot path.
        self.messages = 0
        self.kinds: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.malformed: dict[str, int] = dict.fromkeys(MALFORMED_REASONS, 0)
        self.unknown_device = 0
        self.unhandled = 0
        self.handler_errors = 0
        self.status_cleared = 0
        self.commands_sent = 0
        self.commands_acked = 0
        self.commands_failed = 0
        self.commands_refused = 0
        self.commands_timed_out = 0
        self.acks_unmatched = 0

    # -- the two lanes seen as one connection ---------------------------------------------
    @property
    def connected(self) -> bool:
        """Both lanes connected (a command or an alarm needs the priority one, readings bulk)."""
        return self.bulk.connected and self.priority.connected

    @property
    def connects(self) -> int:
        return max(lane.connects for lane in self.lanes)

    @property
    def reconnects(self) -> int:
        """Reconnections of the connection: a broker restart counts once, not once per lane."""
        return max(lane.reconnects for lane in self.lanes)

    @property
    def _client(self) -> aiomqtt.Client | None:
        """The client that sends commands (the priority lane)."""
        return self.priority.client

    # -- topics ---------------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """Every topic this hub subscribes to, the bulk lane's first (`lane_topics`)."""
        return self.lane_topics(BULK) + self.lane_topics(PRIORITY)

    def lane_topics(self, lane: str) -> list[str]:
        """Only telemetry is shared between hubs; events, status and acks reach every hub.

        A shared subscription hands each message to one member, not each device to one
        member, so a device's `smoke_alarm` active could reach one hub and its `cleared`
        another, which never saw it raised: the alarm would stay active for ever. Events are
        few, so every hub takes all of them and the database keeps one alarm record (the
        partial unique index; docs/operations.md). Retained status is not delivered on shared
        subscriptions, and an ack must reach the hub that sent the command.
        """
        prefix = self.settings.topic_prefix
        if lane == BULK:
            telemetry = f"{prefix}/dev/+/telemetry"
            group = self.settings.shared_group
            if group:
                telemetry = f"$share/{group}/{telemetry}"
            topics = [telemetry, self._probe_topic]
            if self.mirror is not None:
                topics.append(self.mirror.subscription)  # the other workers' states, not shared
            return topics
        topics = [f"{prefix}/dev/+/event", f"{prefix}/dev/+/status", f"{prefix}/dev/+/ack"]
        if self.settings.broker_log:
            topics.append(LOG_SUBSCRIPTION)  # the broker's refusals (brokerlog.py)
        topics += self.peer_calls.subscriptions()  # calls to this worker and their answers
        return topics

    def command_topic(self, device_id: str) -> str:
        return f"{self._cmd_prefix}{device_id}"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self.started:
            return
        self.started = True
        if self.mirror is not None:
            self.mirror.start()
        self.peer_calls.start()
        for lane in self.lanes:
            lane.task = self.hub.create_task(self._run(lane), name=f"mqtt {lane.name} lane")
        if self.broker_log_tail is not None:
            self._tail_task = self.hub.create_task(self.broker_log_tail.run(),
                                                   name="mqtt broker log file")

    async def stop(self) -> None:
        """Disconnect cleanly (the broker keeps our sessions) and fail waiting commands."""
        tasks = [lane.task for lane in self.lanes if lane.task is not None]
        for lane in self.lanes:
            lane.task = None
        self.started = False
        tail, self._tail_task = self._tail_task, None
        if tail is not None:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
        if self.mirror is not None:
            self.mirror.stop()
        self.peer_calls.stop()
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a library that swallows the cancellation must not hang the hub's stop.
            _, pending = await asyncio.wait(tasks, timeout=10.0)
            if pending:
                _LOGGER.warning("MQTT: %d connection task(s) did not stop within 10 s",
                                len(pending))
        for pending_command in list(self._pending.values()):
            if not pending_command.future.done():
                pending_command.future.set_exception(CommandError("the hub is stopping"))
        self._pending.clear()
        for lane in self.lanes:
            lane.connected = False
            lane.ready.clear()
        self.lag.disconnected()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until both lanes are connected and subscribed (tests, the benchmark, the demo)."""
        async with asyncio.timeout(timeout):
            for lane in self.lanes:
                await lane.ready.wait()

    @property
    def ready(self) -> bool:
        return all(lane.ready.is_set() for lane in self.lanes)

    def _new_client(self, lane: Lane) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=lane.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
            keepalive=s.keepalive,
            username=s.username,
            password=s.password,
            timeout=max(10.0, s.command_timeout),
            max_inflight_messages=100,
            tls_context=s.ssl_context(),
            logger=logging.getLogger(f"{__name__}.paho"),
        )

    async def _run(self, lane: Lane) -> None:
        settings = self.settings
        delay = settings.reconnect_min
        client = lane.client = self._new_client(lane)
        where = f"{settings.host}:{settings.port}"
        me = asyncio.current_task()
        topics = self.lane_topics(lane.name)
        while True:
            probe: asyncio.Task[None] | None = None
            try:
                async with client:
                    self._on_connected(lane, where)
                    # The priority lane's few messages (alarms, commands, forwarded calls)
                    # must not wait for a delayed ACK; the bulk lane may batch (its setting).
                    if lane is self.priority or settings.tcp_nodelay:
                        _no_delay(client)
                    delay = settings.reconnect_min
                    if lane is self.bulk:
                        # A session left by a version with one connection also holds the
                        # priority topics: drop them there, or every event arrives twice.
                        await client.unsubscribe(self.lane_topics(PRIORITY))
                    granted = await client.subscribe([(topic, settings.qos)
                                                      for topic in topics])
                    self._check_granted(topics, granted)
                    lane.ready.set()
                    if lane is self.bulk:
                        probe = asyncio.get_running_loop().create_task(
                            self._probe(client), name="mqtt lag probe")
                        if self.mirror is not None:
                            self.mirror.resume()
                    await self._consume(client)
            except aiomqtt.MqttError as err:
                # Cancelled inside `async with client`: aiomqtt's disconnect on the way out can
                # raise MqttError in place of the CancelledError; stopping must still stop.
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError from err
                self.last_error = str(err) or type(err).__name__
                if lane.connected:
                    _LOGGER.warning("MQTT: %s connection to %s lost (%s); reconnecting",
                                    lane.name, where, self.last_error)
                elif self._throttle.allow(f"connect_failed {lane.name}"):
                    _LOGGER.warning("MQTT: cannot connect to %s (%s); retrying in %.1fs", where,
                                    self.last_error, delay)
            except Exception as err:  # a bug here must not end MQTT for good
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError from err
                self.last_error = f"{type(err).__name__}: {err}"
                _LOGGER.exception("MQTT: unexpected error in the %s connection loop; "
                                  "reconnecting", lane.name)
            finally:
                if probe is not None:
                    probe.cancel()
            lane.connected = False
            lane.ready.clear()
            if lane is self.bulk:
                self.lag.disconnected()
            # Jitter keeps a fleet of hubs from reconnecting to a restarted broker in lockstep.
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, settings.reconnect_max)

    def _on_connected(self, lane: Lane, where: str) -> None:
        lane.connected = True
        lane.connects += 1
        if lane.connects > 1:
            lane.reconnects += 1
            _LOGGER.info("MQTT: reconnected to %s as %s", where, lane.client_id)
        else:
            _LOGGER.info("MQTT: connected to %s as %s", where, lane.client_id)

    def _check_granted(self, topics: list[str], granted: Any) -> None:
        for topic, code in zip(topics, granted, strict=False):
            value = getattr(code, "value", code)
            if isinstance(value, int) and value >= 0x80:
                _LOGGER.error("MQTT: the broker refused the subscription %s (code %s)", topic, code)

    async def _probe(self, client: aiomqtt.Client) -> None:
        """Measure the intake lag (lag.py) while the bulk lane is up; warn while it is large.

        A periodic timer, not synchronisation: the probe's own round trip is the measurement.
        """
        lag = self.lag
        while True:
            try:
                await client.publish(self._probe_topic, lag.next_probe(), qos=1, timeout=10.0)
            except aiomqtt.MqttError:
                if not self.bulk.connected:
                    return  # the lane is down; its loop reconnects and starts a new probe
                # Not acknowledged in time (a busy broker): that probe stays outstanding and
                # ages, which is the truth about the queue; the next one goes out as usual.
            behind = lag.seconds()
            if behind > WARN_AFTER and self._throttle.allow("intake lag"):
                _LOGGER.warning(
                    "MQTT: this hub handles its readings %.0f s behind (more telemetry than it "
                    "can process; voltwatch_mqtt_intake_lag_seconds). Alarms, status and command "
                    "acks still arrive at once on the priority connection.", behind)
            await asyncio.sleep(PROBE_INTERVAL)

    async def _consume(self, client: aiomqtt.Client) -> None:
        handle = self.handle_message
        async for message in client.messages:
            topic = message.topic.value
            result = handle(topic, message.payload)
            if result is not None:
                try:
                    await result
                except Exception:  # noqa: BLE001 - a handler must not end the loop
                    self._handler_failed(topic)
            if cancel_requested():  # a stop lost in a library's wait_for (hub/core/tasks.py)
                raise asyncio.CancelledError

    # -- incoming -------------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes | bytearray) -> Any:
        """Decode and dispatch one message; returns the handler's awaitable, if any.

        Public so that tests and the benchmark can drive the decoder without a broker.
        """
        if topic.startswith(LOG_TOPIC_PREFIX):
            # Only the broker publishes under $SYS; it is its log, not a device's message.
            self.broker_log.feed(payload, topic)
            return None
        if self._mirror_prefix is not None and topic.startswith(self._mirror_prefix):
            return self.mirror.handle(topic, payload)  # type: ignore[union-attr]
        if topic == self._probe_topic:
            self.lag.returned_probe(payload)
            return None
        if topic.startswith(self.peer_calls.prefix) and self.peer_calls.handles(topic):
            return self.peer_calls.handle(topic, payload)
        self.messages += 1
        if len(payload) > self._max_payload:
            return self._bad("too_large", topic,
                             f"{len(payload)} bytes, more than mqtt.max_payload "
                             f"({self._max_payload}); dropped")
        if not topic.startswith(self._dev_prefix):
            return self._bad("bad_topic", topic, "not under " + self._dev_prefix)
        device_id, _, kind = topic[self._dev_prefix_len:].rpartition("/")
        count = self.kinds.get(kind)
        if count is None or not device_id or "/" in device_id:
            return self._bad("bad_topic", topic, "expected dev/<device_id>/<kind>")
        self.kinds[kind] = count + 1
        if kind == "status":
            return self._status(device_id, payload, topic)
        try:
            data = json.loads(payload)
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
            return self._bad("bad_json", topic, str(err))
        if type(data) is not dict:
            return self._bad("bad_shape", topic, "expected a JSON object")
        if kind == "ack":
            return self._ack(device_id, data, topic)
        if kind == "telemetry":
            if type(data.get("values")) is not dict:
                return self._bad("bad_shape", topic, "telemetry needs a 'values' object")
        else:
            event = data.get("event")
            if type(event) is not str or not event:
                return self._bad("bad_shape", topic, "an event needs an 'event' name")
            if data.get("state", "active") not in EVENT_STATES:
                return self._bad("bad_shape", topic, "an event's 'state' is active or cleared")
        ts = data.get("ts")
        now = time.time()
        if ts is None:
            ts = now
        elif type(ts) is not float and type(ts) is not int:
            return self._bad("bad_shape", topic, "'ts' must be unix seconds")
        device = self._device(device_id, topic)
        if device is None:
            return None
        info = self.devices.get(device_id) or self._status_entry(device_id)
        info.last_seen = now
        info.messages += 1
        handler = self.hub.push_handlers.get(device.platform)
        if handler is None:
            return self._no_handler(device, topic)
        try:
            result = handler(device, PushMessage(device_id, kind, data, float(ts), topic))
        except Exception:  # noqa: BLE001
            self._handler_failed(topic)
            return None
        if result is not None and inspect.isawaitable(result):
            return result
        return None

    def _bad(self, reason: str, topic: str, detail: str) -> None:
        self.malformed[reason] += 1
        if self._throttle.allow(f"malformed {reason}"):
            _LOGGER.warning("MQTT: malformed message on %s (%s): %s", topic, reason, detail)

    def _device(self, device_id: str, topic: str) -> DeviceEntry | None:
        device = self.hub.devices.get(device_id)
        if device is not None and device.link.get("transport") == TRANSPORT:
            return device
        self.unknown_device += 1
        if device_id not in self._unknown_logged and len(self._unknown_logged) < _MAX_REMEMBERED_IDS:
            self._unknown_logged.add(device_id)
            if device is None:
                _LOGGER.warning("MQTT: message from unknown device %r on %s (logged once per id)",
                                device_id, topic)
            else:
                _LOGGER.warning("MQTT: message on %s for device %r whose link is %r, not mqtt "
                                "(logged once per id)", topic, device_id,
                                device.link.get("transport"))
        return None

    def _no_handler(self, device: DeviceEntry, topic: str) -> None:
        self.unhandled += 1
        if device.id not in self._unhandled_logged and (
            len(self._unhandled_logged) < _MAX_REMEMBERED_IDS
        ):
            self._unhandled_logged.add(device.id)
            _LOGGER.warning(
                "MQTT: no installed plugin handles platform %r; messages of device %s (%s) are "
                "counted as unhandled (logged once per device)", device.platform, device.id, topic,
            )

    def _handler_failed(self, topic: str) -> None:
        self.handler_errors += 1
        if self._throttle.allow("handler error"):
            _LOGGER.exception("MQTT: the push handler failed on a message from %s", topic)

    def _status_entry(self, device_id: str) -> DeviceStatus:
        info = DeviceStatus(device_id, f"binary_sensor.{slugify(device_id)}_online")
        self.devices[device_id] = info
        return info

    def _status(self, device_id: str, payload: bytes | bytearray, topic: str) -> Any:
        text = bytes(payload).strip().lower()
        if text == b"online":
            online = True
        elif text == b"offline":
            online = False
        elif not text:
            # An empty retained message deletes the retained status: nothing to report.
            self.status_cleared += 1
            return None
        else:
            return self._bad("bad_status", topic, f"expected online or offline, got {text[:40]!r}")
        device = self._device(device_id, topic)
        if device is None:
            return None
        now = time.time()
        info = self.devices.get(device_id) or self._status_entry(device_id)
        info.last_seen = now
        self.set_online(device, info, online, now)
        handler = self.hub.push_handlers.get(device.platform)
        if handler is None:
            return None
        return self._forward(handler, device, PushMessage(
            device_id, "status", {"status": "online" if online else "offline"}, now, topic))

    def _forward(self, handler: Any, device: DeviceEntry, message: PushMessage) -> Any:
        """Status and acks are the transport's business, but the device plugin hears them too."""
        try:
            result = handler(device, message)
        except Exception:  # noqa: BLE001
            self._handler_failed(message.source)
            return None
        return result if result is not None and inspect.isawaitable(result) else None

    def _broker_refused(self, refusal: dict[str, Any]) -> None:
        """A publish the broker's ACL refused under another device's topic: 疑似冒充 on it.

        The device whose topic it was gets the `impostor` event condition (as a DTU does when
        a connection claims its IMEI with a wrong key), naming who tried: the user name the
        broker authenticated (the client id when the hub did not see it connect) and the peer.
        At most one per device per
        `IMPOSTOR_EVENT_INTERVAL`: each event may page people, every denial is still counted
        and listed. Refused logins and subscriptions stay refusals only (no device is named
        by the first; the second receives nothing).
        """
        target = refusal.get("device")
        user = refusal.get("username")
        if refusal["reason"] != "publish_denied" or not target or target == user:
            return
        if self.hub.devices.get(target) is None:
            return
        now = time.monotonic()
        last = self._impostor_events.get(target)
        if last is not None and now - last < IMPOSTOR_EVENT_INTERVAL:
            return
        self._impostor_events[target] = now
        who = user or f"client {refusal.get('claimed')}"
        condition = Condition.create(
            target, "impostor", True, detail=f"{who} ({refusal.get('peer') or '?'}) MQTT",
            source="mqtt")
        self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())

    def set_online(self, device: DeviceEntry, info: DeviceStatus, online: bool, now: float) -> None:
        """Write `binary_sensor.<obj>_online` and raise or clear `communication_lost`.

        The clear is also fired for the first `online` after the hub starts (state unknown):
        a `communication_lost` raised before a restart must not stay active forever once the
        device is back; clearing a condition that is not active is a no-op for its consumers.
        """
        previous = info.online
        info.online = online
        info.status_at = now
        if not info.entity_registered:
            info.entity_registered = True
            self.hub.create_task(self._register_entity(device, info), name="mqtt online entity")
        self.hub.states.async_set(
            info.entity_id,
            STATE_ON if online else STATE_OFF,
            {"friendly_name": f"{device.display_name} online", "device_class": "connectivity",
             "transport": TRANSPORT},
            timestamp=now,
        )
        if previous is online:
            return
        if online:
            if previous is False:
                _LOGGER.info("MQTT: device %s is online again", device.id)
        else:
            _LOGGER.warning("MQTT: device %s is offline (通讯中断)", device.id)
        condition = Condition.create(
            device.id, "communication_lost", not online, entity_id=info.entity_id,
            detail="MQTT", timestamp=now, source="mqtt",
        )
        self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())

    async def _register_entity(self, device: DeviceEntry, info: DeviceStatus) -> None:
        await self.hub.entities.async_register(
            info.entity_id, TRANSPORT, device_id=device.id, unique_id=f"{device.id}-mqtt-online",
            name=f"{device.display_name} online", device_class="connectivity",
        )

    def _ack(self, device_id: str, data: dict[str, Any], topic: str) -> Any:
        ack_id = data.get("id")
        if type(ack_id) is not str or type(data.get("ok")) is not bool:
            return self._bad("bad_shape", topic, "an ack needs 'id' (text) and 'ok' (true/false)")
        pending = self._pending.get(ack_id)
        if pending is None:
            # Late (after a timeout), a duplicate (QoS 1 may redeliver) or another hub's.
            self.acks_unmatched += 1
            _LOGGER.debug("MQTT: ack %s on %s matches no waiting command", ack_id, topic)
        elif pending.device_id != device_id:
            self.acks_unmatched += 1
            if self._throttle.allow("ack mismatch"):
                _LOGGER.warning("MQTT: ack %s on %s is for a command sent to %s; ignored",
                                ack_id, topic, pending.device_id)
            return None
        elif not pending.future.done():
            pending.future.set_result(data)
        device = self.hub.devices.get(device_id)
        if device is None or device.link.get("transport") != TRANSPORT:
            return None
        handler = self.hub.push_handlers.get(device.platform)
        if handler is None:
            return None
        ts = data.get("ts")
        ts = float(ts) if type(ts) in (int, float) else time.time()
        return self._forward(handler, device, PushMessage(device_id, "ack", data, ts, topic))

    # -- commands -------------------------------------------------------------------------
    def command_timeout(self, device_id: str) -> float:
        device = self.hub.devices.get(device_id)
        if device is not None and device.link.get("command_timeout") is not None:
            return float(device.link["command_timeout"])
        return self.settings.command_timeout

    async def command(
        self, device_id: str, command: str, params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Publish `<prefix>/cmd/<id>` at QoS 1 and wait for the device's ack.

        Fails fast (CommandError) when the broker is not connected or the device is known to
        be offline: a breaker command must not wait in a queue and fire hours later.
        """
        if timeout is None:
            timeout = self.command_timeout(device_id)
        if asyncio.current_task() in (self.bulk.task, self.priority.task):
            raise CommandError(
                "a push handler must not wait for a command's ack: the ack arrives through the "
                "message loop the handler is blocking; start the command with hub.create_task"
            )
        client = self.priority.client
        if client is None or not self.priority.connected:
            self.commands_failed += 1
            raise CommandError(f"{command} to {device_id}: not connected to the MQTT broker"
                               + (f" ({self.last_error})" if self.last_error else ""))
        info = self.devices.get(device_id)
        if info is not None and info.online is False:
            self.commands_failed += 1
            raise CommandError(f"{command} to {device_id}: the device is offline")
        command_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = _Pending(device_id, command, future)
        payload = json.dumps({"id": command_id, "command": command, "params": params or {}},
                             ensure_ascii=False)
        self.commands_sent += 1
        try:
            async with asyncio.timeout(timeout):
                await client.publish(self.command_topic(device_id), payload, qos=1,
                                     timeout=timeout)
                ack = await future
        except TimeoutError:
            self.commands_failed += 1
            self.commands_timed_out += 1
            raise CommandError(
                f"{command} to {device_id}: no ack within {timeout:g}s"
            ) from None
        except aiomqtt.MqttError as err:
            self.commands_failed += 1
            raise CommandError(f"{command} to {device_id}: publish failed ({err})") from None
        finally:
            self._pending.pop(command_id, None)
        if ack.get("ok") is not True:
            self.commands_failed += 1
            self.commands_refused += 1
            reason = ack.get("error") or ack.get("reason") or "no reason given"
            raise CommandError(f"{command} to {device_id}: refused by the device ({reason})")
        self.commands_acked += 1
        return ack

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Flat counters (names in docs/plugins/mqtt.md), numbers only, for /api and /metrics."""
        online = sum(1 for info in self.devices.values() if info.online is True)
        offline = sum(1 for info in self.devices.values() if info.online is False)
        out: dict[str, Any] = {
            "connected": int(self.connected),
            "messages": self.messages,
            **{f"messages_{kind}": count for kind, count in self.kinds.items()},
            "malformed": sum(self.malformed.values()),
            **{f"malformed_{reason}": count for reason, count in self.malformed.items()},
            "unknown_device": self.unknown_device,
            "unhandled": self.unhandled,
            "handler_errors": self.handler_errors,
            "status_cleared": self.status_cleared,
            "connects": self.connects,
            "reconnects": self.reconnects,
            **{f"{lane.name}_reconnects": lane.reconnects for lane in self.lanes},
            **self.lag.stats(),
            "commands_sent": self.commands_sent,
            "commands_acked": self.commands_acked,
            "commands_failed": self.commands_failed,
            "commands_refused": self.commands_refused,
            "commands_timed_out": self.commands_timed_out,
            "commands_pending": len(self._pending),
            "acks_unmatched": self.acks_unmatched,
            "devices_online": online,
            "devices_offline": offline,
            **self.broker_log.stats(),
            **(self.mirror.stats() if self.mirror is not None else {}),
            **self.peer_calls.stats(),
        }
        return out

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "broker": f"{s.host}:{s.port}",
            "client_id": s.client_id,
            "lanes": {lane.name: {"client_id": lane.client_id, "connected": lane.connected,
                                  "subscriptions": self.lane_topics(lane.name)}
                      for lane in self.lanes},
            "topic_prefix": s.topic_prefix,
            "shared_group": s.shared_group,
            "mirror_states": s.mirror_states,
            "connected": self.connected,
            "subscribed": self.ready,
            "last_error": self.last_error,
            "subscriptions": self.subscriptions(),
            "stats": self.stats(),
            "devices": [info.as_dict() for info in self.devices.values()],
            "refusals": list(self.broker_log.recent),
            "broker_log_file": (None if self.broker_log_tail is None else {
                "path": str(self.broker_log_tail.path), "error": self.broker_log_tail.error,
                "reopens": self.broker_log_tail.reopens}),
        }


class MqttLink:
    """The shared `mqtt` link every push device gets from `hub.links.acquire` (CommandLink)."""

    key = "mqtt"

    def __init__(self, connection: MqttConnection) -> None:
        self.connection = connection

    @property
    def partial_delivery(self) -> bool:
        """True with `shared_group`: this hub sees only its share of each device's telemetry."""
        return bool(self.connection.settings.shared_group)

    @property
    def intake_lag(self) -> float:
        """Seconds this hub is behind on its readings (lag.py); 0 when it keeps up."""
        return self.connection.lag.seconds()

    async def command(
        self, device_id: str, command: str, params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send and wait for the ack; `timeout=None` uses the device's or the section's."""
        return await self.connection.command(device_id, command, params, timeout)

    async def close(self) -> None:
        """The connection outlives links: it is stopped by the plugin's shutdown hook."""
