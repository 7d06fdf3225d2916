"""Control calls between workers over the broker: the transport of `hub.peers` (issue 12).

A worker whose service call needs the device's owning worker (hub/core/peers.py) publishes the
request at QoS 1 on `<prefix>/hub/call/<owner's worker id>` and waits for the answer on its own
`<prefix>/hub/reply/<worker id>`, matched by a correlation id. Each worker subscribes (not
shared) to exactly those two topics. Worker ids are `hub.worker_id` (the lease owner names),
not MQTT client ids, because that is what the lease says.

Only with a shared database (PostgreSQL, `hub.leases.shared`): a lone hub forwards nothing and
subscribes to nothing more.

* A request runs in its own task: a trip waiting seconds for its read-back must not hold up the
  message loop (telemetry, the state relay).
* QoS 1 may deliver a request twice (a redelivery after a reconnect): the owner remembers the
  last `SEEN_MAX` request ids and runs each once.
* Only hub workers may publish on these topics: with `mqtt.broker_files` the ACL gives the hub
  user `<prefix>/#` and devices only their own `dev/<id>/#` and `cmd/<id>` (credentials.py;
  docs/security.md).

Request: `{"id", "reply_to", ...hub.core.peers request}`; reply: `{"id", ...peers reply}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import aiomqtt

from hub.core.peers import PeerTimeout, PeerUnavailable
from hub.core.ratelimit import LogThrottle

from .mirror import topic_level

if TYPE_CHECKING:
    from .connection import MqttConnection

_LOGGER = logging.getLogger(__name__)

SEEN_MAX = 1000


class PeerCalls:
    """One worker's end of the call topics: send requests, serve the ones addressed to it."""

    def __init__(self, connection: MqttConnection) -> None:
        self.connection = connection
        self.hub = connection.hub
        prefix = connection.settings.topic_prefix
        self.prefix = f"{prefix}/hub/"
        self._call_prefix = f"{prefix}/hub/call/"
        self._reply_prefix = f"{prefix}/hub/reply/"
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._throttle = LogThrottle(_LOGGER, 20, 60.0)
        self.malformed = 0
        self.duplicates = 0

    @property
    def enabled(self) -> bool:
        """Several workers may exist only on a shared database."""
        return bool(getattr(self.hub.leases, "shared", False))

    @property
    def me(self) -> str:
        return topic_level(str(self.hub.leases.worker_id))

    def subscriptions(self) -> list[str]:
        if not self.enabled:
            return []
        return [self._call_prefix + self.me, self._reply_prefix + self.me]

    def start(self) -> None:
        if self.enabled:
            self.hub.peers.transport = self

    def stop(self) -> None:
        if getattr(self.hub.peers, "transport", None) is self:
            self.hub.peers.transport = None
        for future in self._pending.values():
            if not future.done():  # the request went out: its result is unknown
                future.set_exception(TimeoutError())
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()

    # -- the calling worker ---------------------------------------------------------------
    async def request(self, worker: str, message: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        """`hub.core.peers.PeerTransport.request` over the broker."""
        client = self.connection._client
        if client is None or not self.connection.ready:  # subscribed: the reply can come back
            raise PeerUnavailable(f"Cannot reach worker {worker}: this worker is not connected "
                                  "to the MQTT broker; the call was not sent")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        payload = json.dumps({"id": request_id, "reply_to": self.me, **message},
                             ensure_ascii=False, default=str)
        try:
            async with asyncio.timeout(timeout):
                try:
                    await client.publish(self._call_prefix + topic_level(worker), payload,
                                         qos=self.connection.settings.qos, timeout=timeout)
                except aiomqtt.MqttError as err:  # it may or may not have reached the broker
                    raise PeerTimeout(
                        f"{message.get('domain')}.{message.get('service')}: sending it to "
                        f"worker {worker} failed ({err}): whether the command ran is "
                        "unknown") from None
                return await future
        finally:
            self._pending.pop(request_id, None)

    # -- incoming -------------------------------------------------------------------------
    def handles(self, topic: str) -> bool:
        return topic.startswith((self._call_prefix, self._reply_prefix))

    def handle(self, topic: str, payload: bytes | bytearray) -> None:
        if len(payload) > self.connection.settings.max_payload:
            return self._bad(topic, f"{len(payload)} bytes, more than mqtt.max_payload")
        try:
            data = json.loads(payload)
            if type(data) is not dict or type(data.get("id")) is not str:
                raise ValueError("expected an object with an 'id'")
        except ValueError as err:
            return self._bad(topic, str(err))
        if topic.startswith(self._reply_prefix):
            future = self._pending.get(data["id"])
            if future is not None and not future.done():
                future.set_result(data)
            return None  # a late reply: the caller already answered 504
        if type(data.get("reply_to")) is not str:
            return self._bad(topic, "no 'reply_to'")
        if data["id"] in self._seen:
            self.duplicates += 1
            return None
        self._seen[data["id"]] = None
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._serve(data),
                                                      name=f"forwarded call {data['id']}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _serve(self, request: dict[str, Any]) -> None:
        reply = await self.hub.peers.serve(request)
        client = self.connection._client
        topic = self._reply_prefix + topic_level(request["reply_to"])
        payload = json.dumps({"id": request["id"], **reply}, ensure_ascii=False, default=str)
        try:
            if client is None:
                raise aiomqtt.MqttError("no client")
            await client.publish(topic, payload, qos=self.connection.settings.qos, timeout=10.0)
        except aiomqtt.MqttError as err:
            _LOGGER.warning("MQTT: cannot answer the forwarded call %s on %s (%s); the caller "
                            "answers 504", request["id"], topic, err)

    def _bad(self, topic: str, detail: str) -> None:
        self.malformed += 1
        if self._throttle.allow("malformed"):
            _LOGGER.warning("MQTT: malformed call between workers on %s: %s; dropped", topic,
                            detail)

    def stats(self) -> dict[str, int]:
        return {"peer_malformed": self.malformed, "peer_duplicates": self.duplicates,
                "peer_pending": len(self._pending)}
