"""The core REST endpoints (CONTRACTS §5): health, states, services, plugins, the API document.

Handlers receive validated input (`request[BODY]`, `request[QUERY]`) and raise `ApiError` or a
`ServiceError` for the client to see; the server's error middleware turns those into the one
JSON error shape, so no handler formats errors itself.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from .auth import acting_as, can_see_entity, principal, require_entity
from .openapi import voluptuous_to_json_schema
from .routes import (
    AUTHENTICATED,
    BODY,
    HUB,
    PUBLIC,
    QUERY,
    SCOPED,
    SERVER,
    ApiError,
    RouteTable,
    json_response,
)

routes = RouteTable()

_STATE_REF = {"$ref": "#/components/schemas/State"}


@routes.get(
    "/api/health",
    "Liveness check",
    description="Answers without a token so load balancers and `make run` can poll it.",
    auth=False,
    scope=PUBLIC,
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
    "Current state of every entity (in my scope)",
    scope=SCOPED,
    query_schema=vol.Schema(
        {vol.Optional("domain", description="only entities of this domain, e.g. sensor"): str}
    ),
    response_schema={"type": "array", "items": _STATE_REF},
    tags=("states",),
)
async def get_states(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    domain = request[QUERY].get("domain")
    states = hub.states.all(domain)
    if not principal(request).unrestricted:
        states = [s for s in states if can_see_entity(request, s.entity_id)]
    return json_response(states)


@routes.get(
    "/api/states/{entity_id}",
    "Current state of one entity",
    scope=SCOPED,
    responses={200: "The state"},
    response_schema=_STATE_REF,
    tags=("states",),
)
async def get_state(request: web.Request) -> web.StreamResponse:
    entity_id = request.match_info["entity_id"]
    state = request.app[HUB].states.get(entity_id)
    if state is None:
        raise ApiError(404, f"Entity {entity_id} not found")
    await require_entity(request, entity_id)
    return json_response(state)


@routes.get(
    "/api/services",
    "Registered services by domain, with the JSON schema of their data",
    scope=AUTHENTICATED,
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
        "`GET /api/services`). The call is made as the signed-in user (or the token's "
        "name for a system token): checked against the role allowed to call the service and "
        "against the user's scope for every device, entity, project or alarm it names (403 "
        "with the reason), and audited. Control services answer after the device confirmed "
        "the change."
    ),
    scope=SCOPED,
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
    # ServiceNotFound (404), ServiceValidationError (400), Unauthorized (403) and other
    # ServiceErrors are rendered by the error middleware with their message.
    with acting_as(request) as context:
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
    scope=AUTHENTICATED,
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
    scope=PUBLIC,
    response_schema={"type": "object"},
    tags=("meta",),
)
async def openapi_document(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[SERVER].openapi())


# -- the registry: devices and projects (CONTRACTS §5) ----------------------------------------
_DEVICE_SCHEMA = {
    "type": "object",
    "properties": {
        name: {"type": kind}
        for name, kind in [
            ("id", "string"), ("name", "string"), ("platform", "string"), ("profile", "string"),
            ("project", "string"), ("area", "string"), ("location", "string"),
            ("online", ["boolean", "null"]), ("manufacturer", "string"), ("model", "string"),
            ("firmware", "string"), ("source", "string"),
            ("entities", "array"),
        ]
    },
}


def _online(hub: Any, device_id: str) -> bool | None:
    """From the device's `binary_sensor.<obj>_online` entity; None when it has none yet."""
    for entry in hub.entities.for_device(device_id):
        if entry.entity_id.startswith("binary_sensor.") and entry.entity_id.endswith("_online"):
            state = hub.states.get(entry.entity_id)
            if state is None or state.state not in ("on", "off"):
                return None
            return state.state == "on"
    return None


def _device_dict(hub: Any, device: Any) -> dict[str, Any]:
    return {
        "id": device.id, "name": device.display_name, "platform": device.platform,
        "profile": device.profile, "project": device.project, "area": device.area,
        "location": device.location, "online": _online(hub, device.id),
        "manufacturer": device.manufacturer, "model": device.model,
        "firmware": device.firmware, "source": device.source,
        "entities": sorted(e.entity_id for e in hub.entities.for_device(device.id)),
    }


@routes.get(
    "/api/devices",
    "Devices (in my scope) with project, area, location and online",
    description="The link (addresses, ports, IMEI) is not shown: it is configuration.",
    scope=SCOPED,
    query_schema=vol.Schema({vol.Optional("project", description="includes sub-projects"): str}),
    response_schema={"type": "array", "items": _DEVICE_SCHEMA},
    tags=("registry",),
)
async def get_devices(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    who = principal(request)
    wanted = request[QUERY].get("project")
    under: frozenset[str] | None = None
    if wanted is not None:
        from .auth import require_project

        await require_project(request, wanted)
        under = hub.auth.tree.subtree([wanted]) if getattr(hub, "auth", None) else {wanted}
    devices = [
        _device_dict(hub, d) for d in sorted(hub.devices, key=lambda d: d.id)
        if who.scope.can_see(d.project) and (under is None or d.project in under)
    ]
    return json_response(devices)


@routes.get(
    "/api/devices/{device_id}",
    "One device",
    scope=SCOPED,
    response_schema=_DEVICE_SCHEMA,
    tags=("registry",),
)
async def get_device(request: web.Request) -> web.StreamResponse:
    return json_response(_device_dict(request.app[HUB], await device_in_scope(request)))


async def device_in_scope(request: web.Request) -> Any:
    """The registry entry of `{device_id}`: 404 when unknown, 403 outside the caller's scope."""
    from .auth import require_device

    device_id = request.match_info["device_id"]
    device = request.app[HUB].devices.get(device_id)
    if device is None:
        raise ApiError(404, f"Device {device_id} not found")
    await require_device(request, device_id)
    return device


def _position(tree: Any, project_id: str) -> dict[str, float]:
    """`lat`/`lon` when the configuration gives them (the web UI's map)."""
    found = getattr(tree, "positions", {}).get(project_id)
    return {"lat": found[0], "lon": found[1]} if found else {}


@routes.get(
    "/api/projects",
    "The project tree (in my scope): id, name, parent, children, devices, online counts",
    description=(
        "A flat list, parents before children. A user sees its own nodes and everything "
        "below them; `parent` is null for a node whose parent it may not see."
    ),
    scope=SCOPED,
    response_schema={"type": "array", "items": {"type": "object"}},
    tags=("registry",),
)
async def get_projects(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    who = principal(request)
    manager = getattr(hub, "auth", None)
    if manager is None:
        return json_response([])
    tree = manager.tree
    devices_by_project: dict[str, list[Any]] = {}
    for device in hub.devices:
        if device.project:
            devices_by_project.setdefault(device.project, []).append(device)
    out: list[dict[str, Any]] = []

    def walk(parent: str | None, depth: int) -> None:
        for project_id in tree.children(parent):
            if who.scope.can_see(project_id):
                devices = devices_by_project.get(project_id, [])
                online = [_online(hub, d.id) for d in devices]
                out.append({
                    "id": project_id, "name": tree.names.get(project_id, project_id),
                    "parent": parent if who.scope.can_see(parent) else None, "depth": depth,
                    "children": [c for c in tree.children(project_id)],
                    "devices": sorted(d.id for d in devices),
                    "online": sum(1 for o in online if o is True),
                    "offline": sum(1 for o in online if o is False),
                    **_position(tree, project_id),
                })
            walk(project_id, depth + 1)

    walk(None, 0)
    return json_response(out)
