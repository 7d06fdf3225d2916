"""The core REST endpoints (CONTRACTS §5): health, states, services, plugins, the API document.

Handlers receive validated input (`request[BODY]`, `request[QUERY]`) and raise `ApiError` or a
`ServiceError` for the client to see; the server's error middleware turns those into the one
JSON error shape, so no handler formats errors itself.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from hub.core.context import Context

from .openapi import voluptuous_to_json_schema
from .routes import BODY, HUB, QUERY, SERVER, TOKEN, ApiError, RouteTable, json_response

routes = RouteTable()

_STATE_REF = {"$ref": "#/components/schemas/State"}


@routes.get(
    "/api/health",
    "Liveness check",
    description="Answers without a token so load balancers and `make run` can poll it.",
    auth=False,
    response_schema={
        "type": "object",
        "properties": {"status": {"const": "ok"}},
        "required": ["status"],
    },
    tags=("meta",),
)
async def health(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


@routes.get(
    "/api/states",
    "Current state of every entity",
    query_schema=vol.Schema(
        {vol.Optional("domain", description="only entities of this domain, e.g. sensor"): str}
    ),
    response_schema={"type": "array", "items": _STATE_REF},
    tags=("states",),
)
async def get_states(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    domain = request[QUERY].get("domain")
    return json_response(hub.states.all(domain))


@routes.get(
    "/api/states/{entity_id}",
    "Current state of one entity",
    responses={200: "The state"},
    response_schema=_STATE_REF,
    tags=("states",),
)
async def get_state(request: web.Request) -> web.StreamResponse:
    entity_id = request.match_info["entity_id"]
    state = request.app[HUB].states.get(entity_id)
    if state is None:
        raise ApiError(404, f"Entity {entity_id} not found")
    return json_response(state)


@routes.get(
    "/api/services",
    "Registered services by domain, with the JSON schema of their data",
    response_schema={
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "domain": {"type": "string"},
                "services": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "description": {"type": "string"},
                            "supports_response": {"type": "boolean"},
                            "fields": {"type": "object", "description": "JSON schema"},
                        },
                    },
                },
            },
        },
    },
    tags=("services",),
)
async def get_services(request: web.Request) -> web.StreamResponse:
    registry = request.app[HUB].services.services()
    out = []
    for domain in sorted(registry):
        services: dict[str, Any] = {}
        for name in sorted(registry[domain]):
            service = registry[domain][name]
            services[name] = {
                "description": service.description,
                "supports_response": service.supports_response,
                "fields": voluptuous_to_json_schema(service.schema)
                if service.schema is not None
                else {"type": "object"},
            }
        out.append({"domain": domain, "services": services})
    return json_response(out)


@routes.post(
    "/api/services/{domain}/{service}",
    "Call a service",
    description=(
        "The body is the service data, validated by the service's own schema (see "
        "`GET /api/services`). The call is recorded with the token's name as the user. "
        "Control services answer after the device confirmed the change."
    ),
    body_schema=vol.Schema(dict),
    body_optional=True,
    responses={200: "Done; `response` holds the service's answer when it has one"},
    response_schema={
        "type": "object",
        "properties": {
            "context": {"type": "object", "description": "audit context of the call"},
            "response": {"description": "the service's response, or null"},
        },
    },
    tags=("services",),
)
async def call_service(request: web.Request) -> web.StreamResponse:
    token = request[TOKEN]
    context = Context(user_id=token.audit_user if token is not None else None)
    # ServiceNotFound (404), ServiceValidationError (400), Unauthorized (403) and other
    # ServiceErrors are rendered by the error middleware with their message.
    response = await request.app[HUB].services.async_call(
        request.match_info["domain"],
        request.match_info["service"],
        request[BODY],
        context=context,
    )
    return json_response({"context": context.as_dict(), "response": response})


@routes.get(
    "/api/plugins",
    "Loaded plugins with their versions and hooks, and plugins that failed",
    response_schema={
        "type": "object",
        "properties": {
            "plugins": {"type": "array", "items": {"type": "object"}},
            "failures": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "stage": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    tags=("meta",),
)
async def get_plugins(request: web.Request) -> web.StreamResponse:
    plugins = request.app[HUB].plugins
    return json_response(
        {
            "plugins": [info.as_dict() for info in plugins.list_plugins()],
            "failures": [
                {"name": f.name, "stage": f.stage, "reason": f.reason} for f in plugins.failures
            ],
        }
    )


@routes.get(
    "/api/openapi.json",
    "This document",
    description="Generated from the server's route table, including plugin routes.",
    auth=False,
    response_schema={"type": "object"},
    tags=("meta",),
)
async def openapi_document(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[SERVER].openapi())
