"""`GET /api/websocket`: live states and events, on the protocol Home Assistant clients know.

Handshake::

    server: {"type": "auth_required", "version": "0.1.0"}
    client: {"type": "auth", "access_token": "vw_..."}
    server: {"type": "auth_ok", "version": "0.1.0"}      (or auth_invalid, then close)

A valid `Authorization: Bearer` header or a valid session cookie on the upgrade request skips
the exchange: the first message is then `auth_ok`. (A cookie upgrade from a page of another
origin is refused: browsers send cookies on cross-site websocket upgrades that SameSite does
not cover, so the Origin header is checked.) Everything streamed is cut to the principal's
scope: states of entities and events of devices, alarms and projects outside it never arrive. After that, commands carry an integer `id` that the answer repeats:

* `{"id": 1, "type": "subscribe_states", "entity_ids": [...]}` (entity_ids optional) ->
  `{"id": 1, "type": "result", "success": true, "result": null}`, then for every change
  `{"id": 1, "type": "event", "event": {"entity_id", "old_state", "new_state"}}`
* `{"id": 2, "type": "subscribe_events", "event_type": "alarm_raised"}` (optional: all events)
  -> result, then `{"id": 2, "type": "event", "event": <Event.as_dict()>}`
* `{"id": 3, "type": "unsubscribe", "subscription": 1}`
* `{"id": 4, "type": "get_states"}` -> result with the list of states
* `{"id": 5, "type": "call_service", "domain": "arcm", "service": "trip", "service_data": {}}`
* `{"type": "ping"}` (id optional) -> `{"type": "pong"}`

A bad message (not JSON, unknown command, invalid fields) gets
`{"id": …, "type": "result", "success": false, "error": {"code": …, "message": …}}` and the
connection stays open.

Why it is built this way: bus listeners are `@callback`s that only put the message on a bounded
per-connection queue, and one writer task per connection serialises and sends. So the bus never
waits for a network, a slow client costs a queue of references (JSON is made in the writer,
from immutable `State` objects), and a client that falls more than `max_pending` messages behind
is disconnected (close code 1013, reason logged) instead of growing memory or stalling others.
An `entity_ids` filter is an `event_filter`, so a state change of another entity costs one set
lookup and nothing is queued.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import voluptuous as vol
from aiohttp import WSCloseCode, WSMsgType, web
from voluptuous.humanize import humanize_error

from hub import __version__
from hub.auth.sessions import COOKIE_NAME
from hub.core.context import Context
from hub.core.events import EVENT_STATE_CHANGED, MATCH_ALL, Event, callback
from hub.core.services import (
    ServiceError,
    ServiceNotFound,
    ServiceValidationError,
    Unauthorized,
)

from .routes import SCOPED, SERVER, RouteTable, dumps

if TYPE_CHECKING:
    from hub.auth.principal import Principal

    from .server import HttpServer

_LOGGER = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
HEARTBEAT = 55.0
DEFAULT_MAX_PENDING = 2048

ERR_INVALID_JSON = "invalid_json"
ERR_INVALID_FORMAT = "invalid_format"
ERR_UNKNOWN_COMMAND = "unknown_command"
ERR_ID_REUSE = "id_reuse"
ERR_NOT_FOUND = "not_found"
ERR_UNAUTHORIZED = "unauthorized"
ERR_SERVICE = "service_error"
ERR_INTERNAL = "internal_error"

routes = RouteTable()

_ENTITY_IDS = vol.All([str], vol.Length(min=1))
COMMAND_SCHEMAS: dict[str, vol.Schema] = {
    "subscribe_states": vol.Schema(
        {
            vol.Required("id"): int,
            vol.Required("type"): str,
            vol.Optional("entity_ids"): _ENTITY_IDS,
        }
    ),
    "subscribe_events": vol.Schema(
        {vol.Required("id"): int, vol.Required("type"): str, vol.Optional("event_type"): str}
    ),
    "unsubscribe": vol.Schema(
        {vol.Required("id"): int, vol.Required("type"): str, vol.Required("subscription"): int}
    ),
    "get_states": vol.Schema(
        {
            vol.Required("id"): int,
            vol.Required("type"): str,
            vol.Optional("entity_ids"): _ENTITY_IDS,
        }
    ),
    "call_service": vol.Schema(
        {
            vol.Required("id"): int,
            vol.Required("type"): str,
            vol.Required("domain"): str,
            vol.Required("service"): str,
            vol.Optional("service_data", default=dict): dict,
        }
    ),
}


def _result(msg_id: int | None, result: Any = None) -> dict[str, Any]:
    return {"id": msg_id, "type": "result", "success": True, "result": result}


def _error(msg_id: Any, code: str, message: str) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "result",
        "success": False,
        "error": {"code": code, "message": message},
    }


class WebSocketConnection:
    """One client: its subscriptions, its outgoing queue and its writer task."""

    def __init__(self, server: HttpServer, request: web.Request) -> None:
        self.server = server
        self.hub = server.hub
        self.request = request
        self.peer = request.remote or "?"
        self.max_pending = server.ws_max_pending
        self.ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=server.max_request_size)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self.max_pending)
        self.subscriptions: dict[int, Callable[[], None]] = {}
        self.principal: Principal | None = None
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # service calls in flight
        self._close_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def who(self) -> str:
        return f"{self.peer} ({self.principal.name})" if self.principal else self.peer

    # -- lifecycle --------------------------------------------------------------------------
    async def handle(self) -> web.WebSocketResponse:
        await self.ws.prepare(self.request)
        self.server.websockets.add(self)
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"websocket writer {self.peer}"
        )
        self._writer.add_done_callback(self._writer_done)
        try:
            if await self._authenticate():
                await self._read_loop()
        finally:
            await self._cleanup()
        return self.ws

    async def _authenticate(self) -> bool:
        header = self.request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                return await self._auth_failed("Authorization header must be 'Bearer <token>'")
            return await self._auth_with(token.strip())
        cookie = self.request.cookies.get(COOKIE_NAME)
        if cookie and self._same_origin():
            principal = await self.server.principal_from_session(cookie, self.request.remote)
            if principal is not None:
                return self._authenticated(principal)
        self._send({"type": "auth_required", "version": __version__})
        try:
            msg = await self.ws.receive(timeout=AUTH_TIMEOUT)
        except TimeoutError:
            return await self._auth_failed(f"No auth message within {AUTH_TIMEOUT:g} s")
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return False  # the client left before authenticating
        if msg.type is not WSMsgType.TEXT:
            return await self._auth_failed("Expected an auth message")
        try:
            data = json.loads(msg.data)
        except ValueError:
            return await self._auth_failed("Expected an auth message, got malformed JSON")
        if (
            not isinstance(data, dict)
            or data.get("type") != "auth"
            or not isinstance(data.get("access_token"), str)
        ):
            return await self._auth_failed('Expected {"type": "auth", "access_token": "<token>"}')
        return await self._auth_with(data["access_token"])

    def _same_origin(self) -> bool:
        """No Origin (not a browser) or the hub's own origin: a page elsewhere cannot ride on
        the user's cookie."""
        origin = self.request.headers.get("Origin")
        if origin is None:
            return True
        host = self.request.headers.get("Host", "")
        allowed = {f"http://{host}", f"https://{host}"}
        if origin in allowed:
            return True
        _LOGGER.warning("Websocket from %s: cookie ignored for foreign origin %s", self.peer,
                        origin)
        return False

    async def _auth_with(self, token: str) -> bool:
        principal = await self.server.principal_from_token(token, self.request.remote)
        if principal is None:
            return await self._auth_failed("Invalid, expired or revoked token")
        return self._authenticated(principal)

    def _authenticated(self, principal: Principal) -> bool:
        self.principal = principal
        self._send({"type": "auth_ok", "version": __version__})
        return True

    def _visible(self, event: Event) -> bool:
        principal = self.principal
        if principal is None:
            return False
        if principal.unrestricted:
            return True
        auth = getattr(self.hub, "auth", None)
        return auth is not None and auth.event_visible(principal, event)

    async def _auth_failed(self, message: str) -> bool:
        _LOGGER.info("Websocket auth from %s failed: %s", self.peer, message)
        self._send({"type": "auth_invalid", "message": message})
        await self._flush()
        await self.close(WSCloseCode.POLICY_VIOLATION, "authentication failed")
        return False

    async def _read_loop(self) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.TEXT:
                self._handle_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                self._send(_error(None, ERR_INVALID_FORMAT, "Binary messages are not supported"))
            else:  # ERROR: the transport failed
                break

    async def _flush(self) -> None:
        """Let the writer send what is queued (used before closing after auth_invalid)."""
        if self._writer is None or self._writer.done():
            return
        try:
            await asyncio.wait_for(self.queue.join(), CLOSE_TIMEOUT)
        except TimeoutError:
            pass

    async def close(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close from the server side; bounded in time even if the client stopped reading."""
        self._closing = True
        self._unsubscribe_all()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if not self.ws.closed:
            try:
                await asyncio.wait_for(
                    self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT
                )
            except (TimeoutError, ConnectionError):
                pass  # aiohttp closed the transport; nothing else to do

    async def _cleanup(self) -> None:
        self._closing = True
        self._unsubscribe_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._close_task is not None:
            await self._close_task  # bounded by CLOSE_TIMEOUT; never raises
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if not self.ws.closed:
            await self.close(WSCloseCode.OK)
        self.server.websockets.discard(self)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        """Stop queueing for a dead writer, and never lose why it died."""
        self._closing = True
        self._unsubscribe_all()
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("Websocket writer of %s failed", self.who, exc_info=task.exception())

    def _unsubscribe_all(self) -> None:
        for remove in self.subscriptions.values():
            remove()
        self.subscriptions.clear()

    # -- sending ----------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        """Queue a message; called from bus callbacks, so it must never block or raise."""
        if self._closing:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self._too_slow()

    def _too_slow(self) -> None:
        self._closing = True
        self._unsubscribe_all()
        _LOGGER.warning(
            "Closing websocket of %s: %d messages waiting, the client does not keep up",
            self.who,
            self.max_pending,
        )
        self._close_task = asyncio.get_running_loop().create_task(
            self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow: too many pending messages"),
            name=f"websocket close {self.peer}",
        )

    async def _write_loop(self) -> None:
        queue = self.queue
        while True:
            message = await queue.get()
            try:
                try:
                    text = dumps(message)
                except (TypeError, ValueError) as err:
                    # One unserialisable attribute must not end the connection.
                    _LOGGER.error(
                        "Cannot send %s to websocket %s: %s", message.get("type"), self.who, err
                    )
                    text = dumps(
                        _error(message.get("id"), ERR_INTERNAL, "Message not serialisable")
                    )
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return  # the client went away; the reader notices and cleans up
            finally:
                queue.task_done()

    # -- commands ---------------------------------------------------------------------------
    def _handle_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError as err:
            self._send(_error(None, ERR_INVALID_JSON, f"Malformed JSON: {err}"))
            return
        if not isinstance(msg, dict):
            self._send(_error(None, ERR_INVALID_FORMAT, "A message must be a JSON object"))
            return
        msg_id = msg.get("id")
        msg_type = msg.get("type")
        if msg_type == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if msg_id is not None:
                pong["id"] = msg_id
            self._send(pong)
            return
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            self._send(_error(msg_id, ERR_INVALID_FORMAT, "A command needs an integer 'id'"))
            return
        schema = COMMAND_SCHEMAS.get(msg_type) if isinstance(msg_type, str) else None
        if schema is None:
            self._send(_error(msg_id, ERR_UNKNOWN_COMMAND, f"Unknown command {msg_type!r}"))
            return
        try:
            msg = schema(msg)
        except vol.Invalid as err:
            self._send(_error(msg_id, ERR_INVALID_FORMAT, humanize_error(msg, err)))
            return
        handler = getattr(self, f"_cmd_{msg_type}")
        try:
            handler(msg)
        except Exception:  # a failing command must not end the connection
            _LOGGER.exception("Websocket command %s from %s failed", msg_type, self.who)
            self._send(_error(msg_id, ERR_INTERNAL, "Internal error (logged on the hub)"))

    def _subscribe(
        self,
        msg_id: int,
        event_type: str,
        forward: Callable[[Event], None],
        event_filter: Callable[[Event], bool] | None = None,
    ) -> None:
        if msg_id in self.subscriptions:
            self._send(_error(msg_id, ERR_ID_REUSE, f"Subscription {msg_id} already exists"))
            return
        # The result goes first: the writer sends in queue order, so no event precedes it.
        self._send(_result(msg_id))
        if not self._closing:
            self.subscriptions[msg_id] = self.hub.bus.listen(event_type, forward, event_filter)

    def _cmd_subscribe_states(self, msg: dict[str, Any]) -> None:
        msg_id: int = msg["id"]
        wanted = frozenset(msg["entity_ids"]) if "entity_ids" in msg else None

        @callback
        def forward(event: Event) -> None:
            # Event data holds immutable State objects; the writer turns them into JSON.
            self._send({"id": msg_id, "type": "event", "event": event.data})

        auth = getattr(self.hub, "auth", None)
        principal = self.principal
        # Cheap for a restricted user: entity -> project is cached, then one set lookup.
        scoped = auth is not None and principal is not None and not principal.unrestricted

        event_filter = None
        if wanted is not None or scoped:

            @callback
            def event_filter(event: Event) -> bool:
                entity_id = event.data.get("entity_id")
                if wanted is not None and entity_id not in wanted:
                    return False
                return not scoped or auth.can_see_entity(principal, entity_id)

        self._subscribe(msg_id, EVENT_STATE_CHANGED, forward, event_filter)

    def _cmd_subscribe_events(self, msg: dict[str, Any]) -> None:
        msg_id: int = msg["id"]

        @callback
        def forward(event: Event) -> None:
            self._send({"id": msg_id, "type": "event", "event": event})

        event_filter = None
        if self.principal is not None and not self.principal.unrestricted:

            @callback
            def event_filter(event: Event) -> bool:
                return self._visible(event)

        self._subscribe(msg_id, msg.get("event_type", MATCH_ALL), forward, event_filter)

    def _cmd_unsubscribe(self, msg: dict[str, Any]) -> None:
        remove = self.subscriptions.pop(msg["subscription"], None)
        if remove is None:
            self._send(_error(msg["id"], ERR_NOT_FOUND, f"No subscription {msg['subscription']}"))
            return
        remove()
        self._send(_result(msg["id"]))

    def _cmd_get_states(self, msg: dict[str, Any]) -> None:
        if "entity_ids" in msg:
            states = [s for s in map(self.hub.states.get, msg["entity_ids"]) if s is not None]
        else:
            states = self.hub.states.all()
        auth = getattr(self.hub, "auth", None)
        if self.principal is not None and not self.principal.unrestricted and auth is not None:
            states = [s for s in states if auth.can_see_entity(self.principal, s.entity_id)]
        self._send(_result(msg["id"], states))

    def _cmd_call_service(self, msg: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._call_service(msg), name=f"websocket call_service {self.peer}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_service(self, msg: dict[str, Any]) -> None:
        msg_id: int = msg["id"]
        context = Context(user_id=self.principal.name if self.principal else None)
        auth = getattr(self.hub, "auth", None)
        try:
            if auth is not None:
                with auth.bind(context, self.principal):
                    response = await self.hub.services.async_call(
                        msg["domain"], msg["service"], msg["service_data"], context=context
                    )
            else:
                response = await self.hub.services.async_call(
                    msg["domain"], msg["service"], msg["service_data"], context=context
                )
        except ServiceNotFound as err:
            self._send(_error(msg_id, ERR_NOT_FOUND, str(err)))
        except ServiceValidationError as err:
            self._send(_error(msg_id, ERR_INVALID_FORMAT, str(err)))
        except Unauthorized as err:
            self._send(_error(msg_id, ERR_UNAUTHORIZED, str(err)))
        except ServiceError as err:
            self._send(_error(msg_id, ERR_SERVICE, str(err)))
        except Exception:  # reported to the client, logged here
            _LOGGER.exception(
                "Service %s.%s failed for %s", msg["domain"], msg["service"], self.who
            )
            self._send(_error(msg_id, ERR_INTERNAL, "Internal error (logged on the hub)"))
        else:
            self._send(_result(msg_id, {"context": context.as_dict(), "response": response}))


WEBSOCKET_DESCRIPTION = (__doc__ or "").split("Why it is built")[0].strip()


@routes.get(
    "/api/websocket",
    "Live states and events over a websocket",
    description=WEBSOCKET_DESCRIPTION,
    auth=False,  # authenticates in the protocol (or by the upgrade's bearer header or cookie)
    scope=SCOPED,
    websocket=True,
    responses={101: "Switching to the websocket protocol"},
    tags=("websocket",),
)
async def websocket_api(request: web.Request) -> web.StreamResponse:
    connection = WebSocketConnection(request.app[SERVER], request)
    return await connection.handle()
