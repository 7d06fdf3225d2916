"""Every worker shows the whole fleet's current states (issue 12; docs/operations.md).

Several `voltwatch run` workers on one broker split the telemetry (`mqtt.shared_group`), so
each state machine holds only the readings that worker received. The relay fixes the live
view: each worker gathers its *local* state changes of device entities for `mirror_interval`
(latest state per entity wins, so a detector writing 10 times in one window costs one entry),
publishes them as one compact batch at QoS 1 on `<prefix>/hub/states/<client id>`, and
subscribes (not shared) to `<prefix>/hub/states/+`. A received batch is applied with
`StateMachine.async_mirror`, which fires `state_changed` with origin "remote": shown by
/api/states, the websocket and the live pages, but not recorded, not triggering automations or
threshold alarms and not relayed again (those listeners skip remote events; the owner did it).

Batch payload (JSON): `{"v": 1, "states": [[entity_id, state, attributes | null,
last_changed, last_updated, context_id | null], ...]}`, at most `BATCH_STATES` entries.

`unknown` is never relayed: it means "this worker has no reading yet" (every worker writes it
for every entity at start), which must not overwrite another worker's real value.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import aiomqtt

from hub.core.context import Context
from hub.core.events import EVENT_STATE_CHANGED, ORIGIN_LOCAL, Event, callback
from hub.core.ratelimit import LogThrottle
from hub.core.states import (
    MIRROR_CHANGED,
    MIRROR_REPORTED,
    STATE_UNKNOWN,
    State,
    valid_entity_id,
)

if TYPE_CHECKING:
    from .connection import MqttConnection

_LOGGER = logging.getLogger(__name__)

BATCH_STATES = 200  # entries per message: a few hundred bytes each, well under max_payload
_VERSION = 1
_NUMBER = (int, float)


def _json_default(obj: Any) -> Any:
    return str(obj)


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                           default=_json_default).encode


def topic_level(client_id: str) -> str:
    """The client id as one topic level (no '/', '+', '#')."""
    return client_id.replace("/", "_").replace("+", "_").replace("#", "_") or "_"


class MalformedRelay(ValueError):
    """A relay message that is not a batch of states; dropped whole."""


def decode(payload: bytes | bytearray) -> list[tuple[str, str, dict[str, Any] | None, float,
                                                     float, str | None]]:
    """A relay batch as checked entries; raises MalformedRelay naming what is wrong."""
    try:
        data = json.loads(payload)
    except ValueError as err:
        raise MalformedRelay(f"bad JSON ({err})") from None
    if type(data) is not dict or type(data.get("states")) is not list:
        raise MalformedRelay("expected an object with a 'states' list")
    if data.get("v") != _VERSION:
        raise MalformedRelay(f"unsupported relay version {data.get('v')!r}")
    out = []
    for index, entry in enumerate(data["states"]):
        if type(entry) is not list or len(entry) != 6:
            raise MalformedRelay(f"entry {index} is not a list of 6 items")
        entity_id, text, attributes, last_changed, last_updated, context_id = entry
        if type(entity_id) is not str or not valid_entity_id(entity_id):
            raise MalformedRelay(f"entry {index}: invalid entity id {entity_id!r}")
        if type(text) is not str:
            raise MalformedRelay(f"entry {index} ({entity_id}): the state is not text")
        if attributes is not None and type(attributes) is not dict:
            raise MalformedRelay(f"entry {index} ({entity_id}): attributes are not an object")
        if type(last_changed) not in _NUMBER or type(last_updated) not in _NUMBER:
            raise MalformedRelay(f"entry {index} ({entity_id}): timestamps must be unix seconds")
        if context_id is not None and type(context_id) is not str:
            raise MalformedRelay(f"entry {index} ({entity_id}): the context id is not text")
        out.append((entity_id, text, attributes, float(last_changed), float(last_updated),
                    context_id))
    return out


_ATTR_CACHE_MAX = 20_000


def encode(states: list[State], attr_cache: dict[int, tuple[Any, str]] | None = None) -> str:
    """One relay batch as JSON text.

    Built by hand: the state machine keeps an entity's attributes mapping while they do not
    change, so with `attr_cache` (id of the mapping -> the mapping, its JSON) a detector's
    attributes are encoded once, not at every reading. The cache holds the mapping itself, so
    an id is never reused while cached; it is emptied when it grows past _ATTR_CACHE_MAX.
    """
    cache = attr_cache if attr_cache is not None else {}
    if len(cache) > _ATTR_CACHE_MAX:
        cache.clear()
    parts = []
    for s in states:
        attributes = s.attributes
        if not attributes:
            attrs = "null"
        else:
            hit = cache.get(id(attributes))
            if hit is not None and hit[0] is attributes:
                attrs = hit[1]
            else:
                attrs = _encode(dict(attributes))
                cache[id(attributes)] = (attributes, attrs)
        context_id = s.context.id
        # Entity ids are [a-z0-9_.] (validated) and context ids ULIDs: nothing to escape.
        parts.append(f'["{s.entity_id}",{_encode(s.state)},{attrs},'
                     f"{float(s.last_changed)!r},{float(s.last_updated)!r},"
                     + (f'"{context_id}"]' if context_id.isalnum() else
                        f"{_encode(context_id)}]"))
    return f'{{"v":{_VERSION},"states":[{",".join(parts)}]}}'


class StateMirror:
    """The relay of one worker: gathers and publishes local states, applies the others'."""

    def __init__(self, connection: MqttConnection) -> None:
        self.connection = connection
        self.hub = connection.hub
        settings = connection.settings
        self.interval = settings.mirror_interval
        self.topic_prefix = f"{settings.topic_prefix}/hub/states/"
        self.subscription = f"{self.topic_prefix}+"
        self.own_topic = self.topic_prefix + topic_level(settings.client_id)
        self._pending: dict[str, State] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._unsub: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attr_cache: dict[int, tuple[Any, str]] = {}
        self._throttle = LogThrottle(_LOGGER, 20, 60.0)
        # Counters (docs/plugins/mqtt.md): states and batches sent; states applied, reported
        # (same value, newer), stale (not newer than held); malformed batches; failed publishes.
        self.relayed = 0
        self.batches = 0
        self.received = 0
        self.applied = 0
        self.reported = 0
        self.stale = 0
        self.malformed = 0
        self.publish_failed = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._unsub is None:
            self._unsub = self.hub.bus.listen(EVENT_STATE_CHANGED, self._on_state_changed)

    def stop(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for task in list(self._tasks):
            task.cancel()

    def resume(self) -> None:
        """(Re)connected and subscribed: send what gathered while the broker was away."""
        if self._pending and self._handle is None:
            self._arm()

    # -- outgoing -------------------------------------------------------------------------
    @callback
    def _on_state_changed(self, event: Event) -> None:
        if event.origin != ORIGIN_LOCAL:
            return  # a mirrored state: never relayed again (no echo between workers)
        new = event.data["new_state"]
        if new is None or new.state == STATE_UNKNOWN:
            return
        entity_id = event.data["entity_id"]
        entry = self.hub.entities.get(entity_id)
        if entry is None or not entry.device_id:
            return  # this worker's own entities (automations, …) are not the fleet's
        self._pending[entity_id] = new
        if self._handle is None and self.connection.bulk.connected:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._handle = None
        client = self.connection.bulk.client  # the relay rides with the readings
        if not self._pending or client is None or not self.connection.bulk.connected:
            return  # kept (latest per entity) until `resume` after the reconnect
        states = list(self._pending.values())
        self._pending = {}
        payloads = [encode(states[i:i + BATCH_STATES], self._attr_cache)
                    for i in range(0, len(states), BATCH_STATES)]
        task = asyncio.get_running_loop().create_task(
            self._publish(client, payloads, len(states)), name="mqtt state relay")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, client: aiomqtt.Client, payloads: list[str], count: int) -> None:
        qos = self.connection.settings.qos
        sent = 0
        try:
            for payload in payloads:
                await client.publish(self.own_topic, payload, qos=qos, timeout=10.0)
                self.batches += 1
                sent += 1
        except aiomqtt.MqttError as err:
            self.publish_failed += len(payloads) - sent
            if self._throttle.allow("publish"):
                _LOGGER.warning("MQTT: cannot relay %d state(s) on %s (%s); the other workers "
                                "show them at the entities' next change", count, self.own_topic,
                                err)
            return
        self.relayed += count

    # -- incoming -------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes | bytearray) -> None:
        """Apply another worker's batch; our own (the subscription matches it) is skipped."""
        if topic == self.own_topic:
            return
        self.received += 1
        if len(payload) > self.connection.settings.max_payload:
            return self._bad(topic, f"{len(payload)} bytes, more than mqtt.max_payload")
        try:
            entries = decode(payload)
        except MalformedRelay as err:
            return self._bad(topic, str(err))
        mirror = self.hub.states.async_mirror
        for entity_id, text, attributes, last_changed, last_updated, context_id in entries:
            outcome = mirror(entity_id, text, attributes, last_changed, last_updated,
                             Context(id=context_id) if context_id else None)
            if outcome is MIRROR_CHANGED:
                self.applied += 1
            elif outcome is MIRROR_REPORTED:
                self.reported += 1
            else:
                self.stale += 1
        return None

    def _bad(self, topic: str, detail: str) -> None:
        self.malformed += 1
        if self._throttle.allow("malformed"):
            _LOGGER.warning("MQTT: malformed state relay on %s: %s; dropped", topic, detail)

    def stats(self) -> dict[str, int]:
        return {
            "mirror_relayed": self.relayed,
            "mirror_batches": self.batches,
            "mirror_received": self.received,
            "mirror_applied": self.applied,
            "mirror_reported": self.reported,
            "mirror_stale": self.stale,
            "mirror_malformed": self.malformed,
            "mirror_publish_failed": self.publish_failed,
            "mirror_pending": len(self._pending),
        }
