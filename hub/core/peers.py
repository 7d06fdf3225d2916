"""`hub.peers`: a control call reaching a worker that does not own the device runs on the owner.

With several workers (issue 12) a GSM DTU is connected to exactly one of them (the lease in
hub/core/leases.py). A user's `arcm.trip` lands on whichever worker the load balancer picked;
when that one's handler raises `CallElsewhere(owner=...)` (the device platform's
`DeviceElsewhere`), the service registry hands the call to `Peers.forward`, which sends it to
the owner and answers with the owner's real result or error: the caller sees what a local call
would have given, never the 409.

* The calling worker has authorised the call (permission check with the caller's principal)
  and audits it, once, naming the worker that ran it. The owner runs it as the same user in
  the same Context (same id, user, parent), so the owner's events (the `tripped` record) chain
  to that audit entry; it checks no permission and audits nothing itself.
* A forwarded call is never forwarded again (`ServiceRegistry.async_call_forwarded`): when
  ownership moved meanwhile, the owner's 409 comes back as the answer.
* No answer within `hub.forward_timeout` -> `PeerTimeout` (504, naming the worker, the result
  unknown). A request carries its deadline; an owner receiving it late (it was away from the
  broker) does not run it, so a breaker never trips minutes after the caller gave up.
* The core imports no plugin: the wire is a `PeerTransport` a plugin sets as
  `hub.peers.transport` (the mqtt plugin: plugins/mqtt/voltwatch_mqtt/peers.py). Without one,
  the 409 naming the owner stands.

Wire format (a plain dict; the transport adds its correlation id and reply address):
request `{"v": 1, "domain", "service", "data", "context": {"id", "user_id", "parent_id"},
"return_response", "from", "deadline"}` (deadline: unix seconds); reply `{"ok": true,
"result": ...}` or `{"ok": false, "status": int, "error": class name, "message": str}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from .context import Context
from .services import (
    CallElsewhere,
    ServiceCall,
    ServiceError,
    ServiceNotFound,
    ServiceValidationError,
    Unauthorized,
)

_LOGGER = logging.getLogger(__name__)

VERSION = 1
DEFAULT_TIMEOUT = 15.0


class PeerTransport(Protocol):
    """What a plugin provides to carry calls between workers."""

    async def request(self, worker: str, message: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        """Send `message` to `worker` and return its reply; raise TimeoutError after `timeout`
        seconds without one, `PeerUnavailable` when the request could not be sent at all."""
        ...


class PeerUnavailable(ServiceError):
    """The request could not be sent (the transport is down): it did not run anywhere."""

    status = 503


class PeerTimeout(ServiceError):
    """The owner did not answer in time: whether the command ran is unknown."""

    status = 504


class ForwardedError(ServiceError):
    """The owner's error, with its status and message as the owner gave them."""

    def __init__(self, message: str, status: int, error: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


#: Owner errors rebuilt as their own class, so the websocket answers the same error code.
_KINDS: dict[str, type[ServiceError]] = {
    "ServiceValidationError": ServiceValidationError,
    "Unauthorized": Unauthorized,
}


class Peers:
    """This worker's side of forwarding: `forward` (the registry's forwarder) and `serve`."""

    def __init__(self, hub: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.hub = hub
        self.timeout = timeout
        self.transport: PeerTransport | None = None
        # Counters for /metrics (docs/operations.md): calls sent and their outcomes; calls run
        # for another worker, and those refused because they arrived after their deadline.
        self.forwarded = 0
        self.forward_failed = 0
        self.forward_timeouts = 0
        self.served = 0
        self.served_late = 0

    @property
    def worker_id(self) -> str:
        return str(self.hub.leases.worker_id)

    # -- the calling worker ---------------------------------------------------------------
    async def forward(self, call: ServiceCall, data: dict[str, Any], owner: str) -> Any:
        """Run `call` on `owner` (`data` as the caller gave it) and answer as it did."""
        what = f"{call.domain}.{call.service}"
        transport = self.transport
        if transport is None:
            raise CallElsewhere(
                f"{what} must run on worker {owner}, which holds the device's link, and this "
                "worker has no transport to it (the mqtt plugin carries calls between "
                "workers)", owner, forwardable=False)
        if owner == self.worker_id:  # a stale view of the lease; never send to oneself
            raise CallElsewhere(f"{what}: the device's link is changing hands; try again",
                                owner, forwardable=False)
        context = call.context
        message = {
            "v": VERSION, "domain": call.domain, "service": call.service, "data": data,
            "context": {"id": context.id, "user_id": context.user_id,
                        "parent_id": context.parent_id},
            "return_response": call.return_response, "from": self.worker_id,
            "deadline": time.time() + self.timeout,
        }
        _LOGGER.info("%s (context %s, user %s) forwarded to worker %s, the owner", what,
                     context.id, context.user_id, owner)
        self.forwarded += 1
        # For the audit: the worker that ran it, or may have (reset below when never sent).
        call.worker = owner
        try:
            reply = await transport.request(owner, message, self.timeout)
        except TimeoutError:
            self.forward_timeouts += 1
            _LOGGER.warning("%s (context %s) forwarded to worker %s: no answer within %gs",
                            what, context.id, owner, self.timeout)
            raise PeerTimeout(
                f"{what} was forwarded to worker {owner}, which holds the device's link, and "
                f"it did not answer within {self.timeout:g}s: whether the command ran is "
                "unknown") from None
        except PeerUnavailable:  # not sent: it ran nowhere else
            self.forward_failed += 1
            call.worker = None
            raise
        except ServiceError:  # sent and lost on the way (PeerTimeout): the result is unknown
            self.forward_failed += 1
            raise
        if reply.get("ok") is True:
            return reply.get("result")
        self.forward_failed += 1
        raise _error_from(reply, owner)

    # -- the owner ------------------------------------------------------------------------
    async def serve(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run a forwarded call here and return the reply (never raises)."""
        try:
            domain, service = str(request["domain"]), str(request["service"])
            data = request.get("data") or {}
            ctx = request.get("context") or {}
            deadline = float(request["deadline"])
            if request.get("v") != VERSION or not isinstance(data, dict):
                raise ValueError(f"unsupported request (version {request.get('v')!r})")
            context = Context(user_id=ctx.get("user_id"), parent_id=ctx.get("parent_id"),
                              id=ctx.get("id"))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            return _reply_error(400, "ServiceValidationError", f"Malformed forwarded call: {err}")
        sender = request.get("from", "?")
        if time.time() > deadline:
            self.served_late += 1
            _LOGGER.warning("%s.%s from worker %s (context %s) arrived after its deadline; "
                            "not run", domain, service, sender, context.id)
            return _reply_error(504, "PeerTimeout", f"{domain}.{service} reached worker "
                                f"{self.worker_id} after the caller's deadline; not run")
        self.served += 1
        _LOGGER.info("%s.%s forwarded by worker %s (context %s, user %s)", domain, service,
                     sender, context.id, context.user_id)
        try:
            result = await self.hub.services.async_call_forwarded(
                domain, service, data, context, bool(request.get("return_response")))
        except ServiceError as err:
            return _reply_error(err.status, type(err).__name__, str(err))
        except asyncio.CancelledError:
            raise
        except Exception:  # reported to the caller like a local 500; the details are here
            _LOGGER.exception("Forwarded call %s.%s from worker %s failed", domain, service,
                              sender)
            return _reply_error(500, "Exception", f"Internal error running {domain}.{service} "
                                f"on worker {self.worker_id} (logged there)")
        return {"ok": True, "result": result}

    def stats(self) -> dict[str, float]:
        return {
            "peers_forwarded_total": float(self.forwarded),
            "peers_forward_failed_total": float(self.forward_failed),
            "peers_forward_timeouts_total": float(self.forward_timeouts),
            "peers_served_total": float(self.served),
            "peers_served_late_total": float(self.served_late),
        }


def _reply_error(status: int, error: str, message: str) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": error, "message": message}


def _error_from(reply: dict[str, Any], owner: str) -> ServiceError:
    """The owner's error as the caller must see it: the same status and message."""
    message = str(reply.get("message") or f"worker {owner} gave no reason")
    error = str(reply.get("error") or "ServiceError")
    try:
        status = int(reply.get("status") or 500)
    except (TypeError, ValueError):
        status = 500
    if error == "ServiceNotFound":
        found = ServiceNotFound("?", "?")
        found.args = (message,)
        return found
    kind = _KINDS.get(error)
    if kind is not None and kind.status == status:
        return kind(message)
    return ForwardedError(message, status, error)
