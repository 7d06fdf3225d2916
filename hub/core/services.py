"""Services: the verbs of the hub (`arcm.trip`, `notify.sms`, `workorder.create`).

Every call carries a Context (who asked, and what caused it), is checked by the permission
hook before the handler runs, and has its data validated by the service's voluptuous schema so
a handler never sees malformed input. A handler may return a response (a control call answers
with the device's confirmed read-back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import voluptuous as vol
from voluptuous.humanize import humanize_error

from .context import Context
from .events import EVENT_CALL_SERVICE, EVENT_SERVICE_REGISTERED, EventBus, Job, JobType

_LOGGER = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base for failures a caller should see (HTTP maps these to 4xx/5xx with the reason)."""

    status = 500


class ServiceNotFound(ServiceError):
    status = 404

    def __init__(self, domain: str, service: str) -> None:
        super().__init__(f"Service {domain}.{service} not found")
        self.domain = domain
        self.service = service


class ServiceValidationError(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 403


class CallElsewhere(ServiceError):
    """The handler cannot run here: another worker (`owner`) holds what it drives.

    With several workers (issue 12) the registry's `forwarder` runs the same call on `owner`
    and answers with its result, so a caller never sees this unless forwarding is impossible.
    `forwardable` is False once the handler already sent something (ownership moved in the
    middle of the call): repeating it elsewhere could run a command twice, so the 409 stands.
    """

    status = 409

    def __init__(self, message: str, owner: str, *, forwardable: bool = True) -> None:
        super().__init__(message)
        self.owner = owner
        self.forwardable = forwardable


@dataclass(slots=True)
class ServiceCall:
    domain: str
    service: str
    data: dict[str, Any]
    context: Context
    return_response: bool = False
    #: The worker that ran the handler when it was not this one (a forwarded call), for the
    #: audit; None: this worker.
    worker: str | None = None
    #: True on the owner running a call another worker forwarded: it is never forwarded again.
    forwarded: bool = False


ServiceHandler = Callable[[ServiceCall], Any]
PermissionCheck = Callable[[ServiceCall], Awaitable[None] | None]
#: Told how every call that passed validation ended (None: it returned; else the exception,
#: `Unauthorized` when refused), so the auth layer can audit control actions with their result.
CallObserver = Callable[[ServiceCall, BaseException | None], Awaitable[None] | None]
#: Runs a call on the worker named (hub/core/peers.py): (call, the data as the caller gave it,
#: owner) -> the owner's response; raises the owner's error.
Forwarder = Callable[[ServiceCall, dict[str, Any], str], Awaitable[Any]]


@dataclass(slots=True)
class Service:
    domain: str
    service: str
    job: Job[Any]
    schema: vol.Schema | None
    supports_response: bool = False
    description: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


class ServiceRegistry:
    """Register and call services. `permission_check` and `call_observer` are set by the auth
    layer (hub/auth); without them every call is allowed and nothing is audited. `forwarder`
    is set by `hub.peers`: a handler raising `CallElsewhere` has its call run on the owner."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._services: dict[str, dict[str, Service]] = {}
        self.permission_check: PermissionCheck | None = None
        self.call_observer: CallObserver | None = None
        self.forwarder: Forwarder | None = None

    def register(
        self,
        domain: str,
        service: str,
        handler: ServiceHandler,
        schema: vol.Schema | None = None,
        supports_response: bool = False,
        description: str = "",
    ) -> None:
        domain, service = domain.lower(), service.lower()
        if isinstance(schema, dict):
            schema = vol.Schema(schema)
        self._services.setdefault(domain, {})[service] = Service(
            domain, service, Job(handler, f"{domain}.{service}"), schema, supports_response,
            description,
        )
        self._bus.async_fire(EVENT_SERVICE_REGISTERED, {"domain": domain, "service": service})

    def remove(self, domain: str, service: str) -> None:
        self._services.get(domain, {}).pop(service, None)

    def has_service(self, domain: str, service: str) -> bool:
        return service.lower() in self._services.get(domain.lower(), {})

    def services(self) -> dict[str, dict[str, Service]]:
        return {domain: dict(services) for domain, services in self._services.items()}

    async def async_call(
        self,
        domain: str,
        service: str,
        data: dict[str, Any] | None = None,
        context: Context | None = None,
        return_response: bool = False,
    ) -> Any:
        """Validate, authorise and run a service; returns its response (or None)."""
        domain, service = domain.lower(), service.lower()
        entry = self._services.get(domain, {}).get(service)
        if entry is None:
            raise ServiceNotFound(domain, service)
        context = context or Context()
        payload = _validated(entry, dict(data or {}))
        call = ServiceCall(domain, service, payload, context, return_response)
        try:
            try:
                result = await self._authorised_call(entry, call)
            except CallElsewhere as err:
                if self.forwarder is None or not err.forwardable:
                    raise
                # Authorised here; the owner runs it as the same user, in the same context.
                result = await self.forwarder(call, dict(data or {}), err.owner)
        except (Exception, asyncio.CancelledError) as err:  # a cancelled trip is audited too
            await self._observe(call, err)
            raise
        await self._observe(call, None)
        return result

    async def async_call_forwarded(self, domain: str, service: str, data: dict[str, Any],
                                   context: Context, return_response: bool = False) -> Any:
        """Run a call another worker forwarded (hub/core/peers.py) on this one, the owner.

        That worker authorised it and audits it (once, with the caller's principal), so
        neither the permission check nor the observer runs here. The data is validated again
        (it crossed a wire). A `CallElsewhere` here is raised as is: a forwarded call is never
        forwarded again, so ownership moving mid-call cannot make a loop.
        """
        domain, service = domain.lower(), service.lower()
        entry = self._services.get(domain, {}).get(service)
        if entry is None:
            raise ServiceNotFound(domain, service)
        payload = _validated(entry, dict(data))
        call = ServiceCall(domain, service, payload, context, return_response, forwarded=True)
        return await self._run(entry, call)

    async def _observe(self, call: ServiceCall, error: BaseException | None) -> None:
        if self.call_observer is None:
            return
        try:
            observed = self.call_observer(call, error)
            if asyncio.iscoroutine(observed):
                await observed
        except Exception:  # an observer must not change the call's outcome
            _LOGGER.exception("Service call observer failed for %s.%s", call.domain, call.service)

    async def _authorised_call(self, entry: Service, call: ServiceCall) -> Any:
        if self.permission_check is not None:
            checked = self.permission_check(call)
            if asyncio.iscoroutine(checked):
                await checked
        return await self._run(entry, call)

    async def _run(self, entry: Service, call: ServiceCall) -> Any:
        domain, service, payload, context = call.domain, call.service, call.data, call.context
        return_response = call.return_response
        self._bus.async_fire(
            EVENT_CALL_SERVICE,
            {"domain": domain, "service": service, "service_data": payload},
            context=context,
        )
        job = entry.job
        if job.job_type is JobType.COROUTINE:
            result = await job.target(call)
        elif job.job_type is JobType.CALLBACK:
            result = job.target(call)
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, job.target, call)
        _LOGGER.debug("Service %s.%s called (context %s)", domain, service, context.id)
        return result if (return_response or entry.supports_response) else None


def _validated(entry: Service, payload: dict[str, Any]) -> dict[str, Any]:
    """The data as the service's schema makes it, or ServiceValidationError saying why."""
    if entry.schema is None:
        return payload
    try:
        return entry.schema(payload)  # type: ignore[no-any-return]
    except vol.Invalid as err:
        raise ServiceValidationError(
            f"Invalid data for {entry.domain}.{entry.service}: {humanize_error(payload, err)}"
        ) from err
