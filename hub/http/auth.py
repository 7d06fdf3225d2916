"""What a request handler asks about its caller: who, which role, which projects.

Every endpoint uses these (and only these) so that "who is the request user" and "may they
see this" have one answer in the whole API:

* `principal(request)` — the `Principal` (401 if the route was public and nobody signed in);
* `request_user(request)` — the name to record as the actor (`acked_by`, work-order fields,
  `Context.user_id`);
* `require_role(request, role)` — 403 unless that role or above;
* `require_project(request, project_id)` / `require_device(...)` / `require_entity(...)` —
  403 when the thing lies outside the caller's scope, audited as `access.denied`;
* `visible_projects(request)` — the set for an SQL `IN` filter (None = no restriction);
* `context_for(request)` and `acting_as(request)` — a Context for a service call, bound to the
  principal so `ServiceRegistry.permission_check` checks the call with this principal's scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from hub.auth.principal import Principal
from hub.core.context import Context

from .routes import HUB, PRINCIPAL, ApiError


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    if found is None:
        raise ApiError(401, "Sign in first (session cookie or Authorization: Bearer <token>)")
    return found


def request_user(request: web.Request) -> str | None:
    found = request.get(PRINCIPAL)
    return found.name if found is not None else None


def auth_manager(request: web.Request) -> Any:
    return getattr(request.app[HUB], "auth", None)


async def deny(request: web.Request, message: str, target: str | None = None,
               project: str | None = None) -> ApiError:
    """A 403 with its reason, written to the audit log; raise what it returns."""
    who = request.get(PRINCIPAL)
    manager = auth_manager(request)
    if manager is not None:
        await manager.audit.record(
            "access.denied", "denied",
            actor=who.name if who else None, actor_role=who.role if who else None,
            ip=request.remote, target=target, project=project,
            detail={"reason": message, "method": request.method, "path": request.path},
        )
    return ApiError(403, message)


async def require_role(request: web.Request, role: str) -> Principal:
    who = principal(request)
    if not who.at_least(role):
        raise await deny(request, f"Needs role {role} or above (you are {who.role})")
    return who


async def require_project(request: web.Request, project_id: str | None,
                          what: str | None = None) -> None:
    who = principal(request)
    if not who.scope.can_see(project_id):
        label = what or f"Project {project_id}"
        raise await deny(request, f"{label} is outside the scope of {who.name}",
                         target=what or project_id, project=project_id)


async def require_projects(request: web.Request, project_ids: Iterable[str]) -> None:
    for project_id in project_ids:
        await require_project(request, project_id)


def device_project(request: web.Request, device_id: str) -> str | None:
    manager = auth_manager(request)
    if manager is not None:
        return manager.device_project(device_id)
    device = request.app[HUB].devices.get(device_id)
    return device.project if device is not None else None


def entity_project(request: web.Request, entity_id: str) -> str | None:
    manager = auth_manager(request)
    return manager.entity_project(entity_id) if manager is not None else None


async def require_device(request: web.Request, device_id: str) -> None:
    await require_project(request, device_project(request, device_id), f"Device {device_id}")


async def require_entity(request: web.Request, entity_id: str) -> None:
    who = principal(request)
    if who.scope.unrestricted:
        return
    await require_project(request, entity_project(request, entity_id), f"Entity {entity_id}")


def visible_projects(request: web.Request) -> frozenset[str] | None:
    """Every project the caller may see, or None when it may see everything."""
    return principal(request).scope.allowed()


def can_see(request: web.Request, project_id: str | None) -> bool:
    return principal(request).scope.can_see(project_id)


def can_see_entity(request: web.Request, entity_id: str) -> bool:
    who = principal(request)
    if who.scope.unrestricted:
        return True
    return who.scope.can_see(entity_project(request, entity_id))


def context_for(request: web.Request) -> Context:
    return Context(user_id=request_user(request))


@contextmanager
def acting_as(request: web.Request) -> Iterator[Context]:
    """A Context for service calls made on behalf of this request's principal."""
    context = context_for(request)
    manager = auth_manager(request)
    if manager is None:
        yield context
        return
    with manager.bind(context, request.get(PRINCIPAL)):
        yield context
