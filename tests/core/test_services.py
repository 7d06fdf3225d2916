"""ServiceRegistry: validation with reasons, permission checks, contexts, responses, handler kinds."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import voluptuous as vol

from hub.core.context import Context
from hub.core.events import EVENT_CALL_SERVICE, EVENT_SERVICE_REGISTERED, EventBus, callback
from hub.core.services import (
    ServiceCall,
    ServiceNotFound,
    ServiceRegistry,
    ServiceValidationError,
    Unauthorized,
)

from .helpers import record

TRIP_SCHEMA = vol.Schema(
    {
        vol.Required("device_id"): str,
        vol.Optional("reason", default="manual"): str,
        vol.Optional("delay", default=0): vol.All(int, vol.Range(min=0, max=60)),
    }
)


class Handler:
    """A @callback service handler that remembers its calls."""

    def __init__(self, response: Any = None) -> None:
        self.calls: list[ServiceCall] = []
        self.response = response

    @callback
    def __call__(self, call: ServiceCall) -> Any:
        self.calls.append(call)
        return self.response


async def test_registering_fires_service_registered(
    bus: EventBus, services: ServiceRegistry
) -> None:
    registered = record(bus, EVENT_SERVICE_REGISTERED)
    services.register("ARCM", "Trip", Handler().__call__, TRIP_SCHEMA)
    assert registered.events[0].data == {"domain": "arcm", "service": "trip"}
    assert services.has_service("arcm", "trip")
    assert services.has_service("Arcm", "TRIP")
    assert list(services.services()) == ["arcm"]
    services.remove("arcm", "trip")
    assert not services.has_service("arcm", "trip")


async def test_data_is_validated_and_defaults_applied(services: ServiceRegistry) -> None:
    handler = Handler()
    services.register("arcm", "trip", handler.__call__, TRIP_SCHEMA)
    await services.async_call("arcm", "trip", {"device_id": "arcm-1"})
    assert handler.calls[0].data == {"device_id": "arcm-1", "reason": "manual", "delay": 0}


async def test_invalid_data_names_the_key_and_reason(services: ServiceRegistry) -> None:
    handler = Handler()
    services.register("arcm", "trip", handler.__call__, TRIP_SCHEMA)
    with pytest.raises(ServiceValidationError) as missing:
        await services.async_call("arcm", "trip", {})
    assert "arcm.trip" in str(missing.value)
    assert "device_id" in str(missing.value)
    assert "required" in str(missing.value)
    assert missing.value.status == 400
    with pytest.raises(ServiceValidationError) as out_of_range:
        await services.async_call("arcm", "trip", {"device_id": "arcm-1", "delay": 600})
    assert "delay" in str(out_of_range.value)
    assert "60" in str(out_of_range.value)
    assert handler.calls == []


async def test_a_plain_dict_schema_is_accepted(services: ServiceRegistry) -> None:
    handler = Handler()
    services.register("notify", "sms", handler.__call__, {vol.Required("message"): str})
    with pytest.raises(ServiceValidationError, match="message"):
        await services.async_call("notify", "sms", {"message": 5})


async def test_unknown_service_raises_service_not_found(services: ServiceRegistry) -> None:
    services.register("arcm", "trip", Handler().__call__)
    with pytest.raises(ServiceNotFound) as err:
        await services.async_call("arcm", "explode")
    assert (err.value.domain, err.value.service, err.value.status) == ("arcm", "explode", 404)
    assert "arcm.explode" in str(err.value)
    with pytest.raises(ServiceNotFound):
        await services.async_call("nosuch", "trip")


async def test_permission_check_sees_the_call_and_can_deny(services: ServiceRegistry) -> None:
    handler = Handler()
    services.register("arcm", "trip", handler.__call__, TRIP_SCHEMA)
    checked: list[ServiceCall] = []

    def only_admins(call: ServiceCall) -> None:
        checked.append(call)
        if call.context.user_id != "admin":
            raise Unauthorized(f"{call.context.user_id} may not call {call.domain}.{call.service}")

    services.permission_check = only_admins
    with pytest.raises(Unauthorized, match="guest may not call arcm.trip"):
        await services.async_call("arcm", "trip", {"device_id": "arcm-1"}, Context(user_id="guest"))
    assert handler.calls == []
    # The check gets the validated data, so it can decide by device.
    assert checked[0].data["device_id"] == "arcm-1"
    assert checked[0].data["reason"] == "manual"
    await services.async_call("arcm", "trip", {"device_id": "arcm-1"}, Context(user_id="admin"))
    assert len(handler.calls) == 1
    assert checked[1] == handler.calls[0]


async def test_async_permission_check_is_awaited(services: ServiceRegistry) -> None:
    handler = Handler()
    services.register("arcm", "trip", handler.__call__)

    async def deny(call: ServiceCall) -> None:
        raise Unauthorized("outside your projects")

    services.permission_check = deny
    with pytest.raises(Unauthorized, match="outside your projects") as err:
        await services.async_call("arcm", "trip")
    assert err.value.status == 403
    assert handler.calls == []


async def test_context_is_passed_to_handler_and_event(
    bus: EventBus, services: ServiceRegistry
) -> None:
    handler = Handler()
    services.register("arcm", "trip", handler.__call__, TRIP_SCHEMA)
    calls = record(bus, EVENT_CALL_SERVICE)
    context = Context(user_id="alice")
    await services.async_call("arcm", "trip", {"device_id": "arcm-1"}, context=context)
    assert handler.calls[0].context is context
    assert calls.events[0].context is context
    assert calls.events[0].data == {
        "domain": "arcm",
        "service": "trip",
        "service_data": {"device_id": "arcm-1", "reason": "manual", "delay": 0},
    }
    # Without a context the call still gets one, so the audit chain never has a hole.
    await services.async_call("arcm", "trip", {"device_id": "arcm-1"})
    assert isinstance(handler.calls[1].context, Context)
    assert handler.calls[1].context is not context


async def test_response_only_when_asked_or_supported(services: ServiceRegistry) -> None:
    services.register("arcm", "trip", Handler({"breaker": "open"}).__call__)
    services.register("arcm", "read", Handler({"value": 300}).__call__, supports_response=True)
    assert await services.async_call("arcm", "trip") is None
    assert await services.async_call("arcm", "trip", return_response=True) == {"breaker": "open"}
    assert await services.async_call("arcm", "read") == {"value": 300}
    handler = Handler()
    services.register("arcm", "mute", handler.__call__)
    await services.async_call("arcm", "mute", return_response=True)
    assert handler.calls[0].return_response is True


async def test_handler_kinds(services: ServiceRegistry) -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    @callback
    def inline(call: ServiceCall) -> str:
        threads["callback"] = threading.get_ident()
        return "callback"

    async def coroutine(call: ServiceCall) -> str:
        threads["coroutine"] = threading.get_ident()
        return "coroutine"

    def blocking(call: ServiceCall) -> str:
        threads["executor"] = threading.get_ident()
        return "executor"

    services.register("kind", "callback", inline, supports_response=True)
    services.register("kind", "coroutine", coroutine, supports_response=True)
    services.register("kind", "executor", blocking, supports_response=True)
    for name in ("callback", "coroutine", "executor"):
        assert await services.async_call("kind", name) == name
    assert threads["callback"] == loop_thread
    assert threads["coroutine"] == loop_thread
    assert threads["executor"] != loop_thread


async def test_handler_errors_reach_the_caller(services: ServiceRegistry) -> None:
    async def failing(call: ServiceCall) -> None:
        raise TimeoutError("arcm-1 did not confirm the trip")

    services.register("arcm", "trip", failing)
    with pytest.raises(TimeoutError, match="did not confirm"):
        await services.async_call("arcm", "trip")
