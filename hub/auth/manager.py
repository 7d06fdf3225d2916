"""`hub.auth`: authentication, the scope of everything, the service permission check, audit.

One object per hub, made at start (after storage, before plugins). It owns:

* resolving a Principal from a session cookie or a bearer token (HTTP and websocket);
* login with lockout and back-off, logout, password change;
* `ServiceRegistry.permission_check`: a service call made on behalf of a principal is checked
  for role (`ServicePolicy`) and for the scope of its target (device_id, entity_id, project,
  alarm ids), and refused with `Unauthorized` naming the reason;
* `ServiceRegistry.call_observer`: control actions and every call a person made are audited
  with their result;
* cheap scope answers for the hot paths (entity -> project and device -> project are cached
  and the caches are dropped when a registry changes).

Which principal made a service call: the HTTP layer binds the request's principal to the
call's Context (`bind`), so a token narrower than its user is checked with its own scope. An
unbound Context whose `user_id` is a user's name is checked as that user. Any other call
(automations, plugins, the alarm engine, system tokens) is the hub acting for itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hub.core.context import Context
from hub.core.events import (
    EVENT_DEVICE_REGISTRY_UPDATED,
    EVENT_ENTITY_REGISTRY_UPDATED,
    Event,
    callback,
)
from hub.core.services import ServiceCall, Unauthorized
from hub.core.workorders import assignee_refusal

from .audit import AuditLog
from .permissions import (
    PROJECT_ADMIN,
    RANK,
    SUPER_ADMIN,
    ServicePolicy,
    at_least,
    is_control,
)
from .principal import Principal, system_principal
from .scope import ProjectTree, Scope
from .sessions import Session, SessionStore
from .settings import auth_settings
from .users import User, UserError, UserStore, check_password, hash_password, verify_password

_LOGGER = logging.getLogger(__name__)

USER_CACHE_TTL = 5.0
#: Failures of one client address are forgotten after this long without another.
IP_WINDOW = 3600.0


class AuthError(Exception):
    """A refusal the client sees as is: 401 (who are you?), 403 (not you), 429 (wait)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(slots=True)
class _IpFailures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


class AuthManager:
    def __init__(self, hub: Any, config: dict[str, Any] | None = None) -> None:
        self.hub = hub
        self.settings = auth_settings(config)
        self.clock = time.time
        self.tree = ProjectTree.from_config(getattr(hub, "config", {}).get("projects"))
        self.policy = ServicePolicy(
            self.settings["service_roles"], self.settings["default_service_role"]
        )
        db = hub.storage
        self.users = UserStore(db)
        self.sessions = SessionStore(db)
        self.audit = AuditLog(db, clock=lambda: self.clock())
        self.everything = Scope(self.tree, None)
        self._bound: dict[str, Principal] = {}
        self._calls: dict[int, Principal | None] = {}
        self._user_cache: dict[str, tuple[User | None, float]] = {}
        self._ip_failures: dict[str, _IpFailures] = {}
        self._entity_project: dict[str, str | None] = {}
        self._unsubs: list[Any] = []

    # -- lifecycle --------------------------------------------------------------------------
    async def async_start(self) -> None:
        for device in self.hub.devices:
            if device.project and device.project not in self.tree:
                self.tree.add(device.project)
        self._unsubs.append(self.hub.bus.listen(EVENT_DEVICE_REGISTRY_UPDATED, self._on_registry))
        self._unsubs.append(self.hub.bus.listen(EVENT_ENTITY_REGISTRY_UPDATED, self._on_registry))
        self.hub.services.permission_check = self.check_service_call
        self.hub.services.call_observer = self.observe_call
        await self.sessions.purge_expired(self.clock())

    async def async_stop(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        if getattr(self.hub.services, "permission_check", None) == self.check_service_call:
            self.hub.services.permission_check = None
            self.hub.services.call_observer = None

    @callback
    def _on_registry(self, event: Event) -> None:
        self._entity_project.clear()
        device_id = event.data.get("device_id")
        if device_id:
            device = self.hub.devices.get(device_id)
            if device is not None and device.project and device.project not in self.tree:
                self.tree.add(device.project)

    # -- principals -------------------------------------------------------------------------
    def scope_for(self, user: User, token_scope: list[str] | None = None) -> Scope:
        base = self.everything if user.unrestricted else Scope(self.tree, user.projects)
        return base.narrow(token_scope)

    def principal_for(self, user: User, *, token_id: str | None = None,
                      token_scope: list[str] | None = None, session: Session | None = None,
                      ip: str | None = None) -> Principal:
        return Principal(
            name=user.name,
            role=user.role,
            scope=self.scope_for(user, token_scope),
            user_id=user.id,
            token_id=token_id,
            session_id=session.id if session else None,
            csrf_token=session.csrf_token if session else None,
            ip=ip,
            language=user.language,
        )

    def system(self, name: str, token_id: str | None = None, ip: str | None = None) -> Principal:
        return system_principal(self.everything, name, token_id, ip)

    async def user(self, user_id: str) -> User | None:
        """A user by id, cached for a few seconds (a CLI change lands within USER_CACHE_TTL)."""
        now = time.monotonic()
        cached = self._user_cache.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        user = await self.users.get(user_id)
        self._user_cache[user_id] = (user, now + USER_CACHE_TTL)
        return user

    def forget_user(self, user_id: str) -> None:
        self._user_cache.pop(user_id, None)
        self._user_cache.pop(f"name:{user_id}", None)

    async def user_by_name(self, name: str) -> User | None:
        key = f"name:{name}"
        now = time.monotonic()
        cached = self._user_cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        user = await self.users.get_by_name(name)
        self._user_cache[key] = (user, now + USER_CACHE_TTL)
        return user

    async def from_token(self, token: str, ip: str | None = None) -> Principal | None:
        from hub.http import tokens

        info = await tokens.verify_token(self.hub.storage, token, now=self.clock())
        if info is None:
            return None
        if info.user_id is None:
            return self.system(info.name, info.id, ip)
        user = await self.user(info.user_id)
        if user is None or user.disabled:
            return None
        return self.principal_for(user, token_id=info.id, token_scope=info.scope, ip=ip)

    async def from_session(self, cookie: str, ip: str | None = None) -> Principal | None:
        session = await self.sessions.get(cookie, self.clock(), self.settings["session_idle"])
        if session is None:
            return None
        user = await self.user(session.user_id)
        if user is None or user.disabled:
            await self.sessions.delete(session.id)
            return None
        return self.principal_for(user, session=session, ip=ip)

    # -- login ------------------------------------------------------------------------------
    def _lock_period(self, failures: int) -> float:
        """Back-off: the first lock lasts `lockout`, each further failure doubles it."""
        extra = max(0, failures - self.settings["max_failures"])
        period = self.settings["lockout"] * math.pow(2, min(extra, 30))
        return min(period, self.settings["max_lockout"])

    async def login(self, name: str, password: str, ip: str | None,
                    user_agent: str | None) -> tuple[str, Session, User]:
        """Check a name and password; a new session (cookie value, row, user) or AuthError."""
        now = self.clock()
        address = ip or "?"
        ip_state = self._ip_failures.get(address)
        if ip_state is not None and now - ip_state.last > IP_WINDOW:
            del self._ip_failures[address]
            ip_state = None
        if ip_state is not None and ip_state.locked_until > now:
            wait = ip_state.locked_until - now
            await self.audit.record("auth.login", "locked", actor=name[:64], ip=ip, target=name[:64],
                                    detail={"reason": "address locked", "retry_after": round(wait)})
            raise AuthError(429, f"Too many failed logins from this address: try again in "
                                 f"{math.ceil(wait)} s", retry_after=wait)
        user = await self.users.get_by_name(name) if name else None
        if user is not None and user.locked_until is not None and user.locked_until > now:
            wait = user.locked_until - now
            await self.audit.record("auth.login", "locked", actor=user.name, actor_role=user.role,
                                    ip=ip, target=user.name,
                                    detail={"reason": "user locked", "retry_after": round(wait)})
            raise AuthError(429, f"Too many failed logins for {user.name}: try again in "
                                 f"{math.ceil(wait)} s", retry_after=wait)
        matches, rehash = await verify_password(user.password_hash if user else None, password)
        if not matches or user is None or user.disabled:
            reason = ("unknown user" if user is None else
                      "wrong password" if not matches else "user disabled")
            await self._login_failed(user, name, address, ip, reason, now)
            raise AuthError(401, "Wrong user name or password (or the account is disabled)")
        changes: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if rehash:
            changes["password_hash"] = await hash_password(password)
        if user.failed_logins or user.locked_until or rehash:
            user = await self.users.update(user.id, **changes) or user
        self.forget_user(user.id)
        cookie, session = await self.sessions.create(
            user.id, now, self.settings["session_lifetime"], ip, user_agent
        )
        await self.audit.record("auth.login", "ok", actor=user.name, actor_role=user.role, ip=ip,
                                target=user.name, detail={"user_agent": (user_agent or "")[:120]})
        return cookie, session, user

    async def _login_failed(self, user: User | None, name: str, address: str, ip: str | None,
                            reason: str, now: float) -> None:
        detail: dict[str, Any] = {"reason": reason}
        if user is not None:
            failures = user.failed_logins + 1
            locked = None
            if failures >= self.settings["max_failures"]:
                locked = now + self._lock_period(failures)
                detail["locked_until"] = locked
            await self.users.record_failure(user.id, locked)
            detail["failures"] = failures
        state = self._ip_failures.setdefault(address, _IpFailures())
        state.count += 1
        state.last = now
        if state.count >= self.settings["ip_max_failures"]:
            extra = max(0, state.count - self.settings["ip_max_failures"])
            state.locked_until = now + min(self.settings["lockout"] * math.pow(2, min(extra, 30)),
                                           self.settings["max_lockout"])
            detail["address_locked_until"] = state.locked_until
        _LOGGER.warning("Failed login for %r from %s: %s", name, address, reason)
        await self.audit.record("auth.login", "failed", actor=(user.name if user else name[:64]),
                                actor_role=user.role if user else None, ip=ip,
                                target=(user.name if user else name[:64]), detail=detail)

    async def logout(self, principal: Principal) -> None:
        if principal.session_id:
            await self.sessions.delete(principal.session_id)
        await self.audit.record("auth.logout", "ok", actor=principal.name,
                                actor_role=principal.role, ip=principal.ip, target=principal.name)
        await self._close_websockets(lambda p: p.session_id == principal.session_id
                                     and principal.session_id is not None)

    async def change_password(self, principal: Principal, old: str, new: str) -> None:
        """Own password: needs the old one (failures count toward the lockout like logins)."""
        if principal.user_id is None:
            raise AuthError(403, "A system token has no password to change")
        user = await self.users.get(principal.user_id)
        if user is None:
            raise AuthError(401, "No such user")
        now = self.clock()
        if user.locked_until is not None and user.locked_until > now:
            raise AuthError(429, "Too many failed attempts: try again later",
                            retry_after=user.locked_until - now)
        matches, _ = await verify_password(user.password_hash, old)
        if not matches:
            await self._login_failed(user, user.name, principal.ip or "?", principal.ip,
                                     "wrong old password", now)
            await self.audit.record("auth.password", "failed", actor=user.name,
                                    actor_role=user.role, ip=principal.ip, target=user.name,
                                    detail={"reason": "wrong old password"})
            raise AuthError(403, "The old password is wrong")
        try:
            check_password(new, self.settings["password_min_length"])
        except UserError as err:
            raise AuthError(400, str(err)) from err
        await self.users.update(user.id, password_hash=await hash_password(new),
                                password_changed_at=now, failed_logins=0, locked_until=None)
        ended = await self.sessions.delete_for_user(user.id, keep=principal.session_id)
        self.forget_user(user.id)
        await self.audit.record("auth.password", "ok", actor=user.name, actor_role=user.role,
                                ip=principal.ip, target=user.name,
                                detail={"other_sessions_ended": ended})

    async def end_user_sessions(self, user_id: str) -> None:
        """After disabling a user or resetting its password: out everywhere, at once."""
        await self.sessions.delete_for_user(user_id)
        self.forget_user(user_id)
        await self._close_websockets(lambda p: p.user_id == user_id)

    async def _close_websockets(self, which: Any) -> None:
        http = getattr(self.hub, "http", None)
        for connection in list(getattr(http, "websockets", ()) or ()):
            principal = getattr(connection, "principal", None)
            if principal is not None and which(principal):
                await connection.close(4001, "signed out")

    # -- where things are -------------------------------------------------------------------
    def device_project(self, device_id: str | None) -> str | None:
        if not device_id:
            return None
        device = self.hub.devices.get(device_id)
        return device.project if device is not None else None

    def entity_project(self, entity_id: str) -> str | None:
        """The project of an entity's device (cached; dropped on any registry change)."""
        try:
            return self._entity_project[entity_id]
        except KeyError:
            pass
        entry = self.hub.entities.get(entity_id)
        device_id = entry.device_id if entry is not None else None
        if device_id is None:
            state = self.hub.states.get(entity_id)
            if state is None:
                return None
            device_id = state.attributes.get("device_id")
        project = self.device_project(device_id)
        self._entity_project[entity_id] = project
        return project

    def can_see_entity(self, principal: Principal, entity_id: str) -> bool:
        return principal.scope.unrestricted or principal.scope.can_see(
            self.entity_project(entity_id)
        )

    def event_visible(self, principal: Principal, event: Event) -> bool:
        """Whether an event on the bus may go to this principal (websocket streams)."""
        if principal.scope.unrestricted:
            return True
        data = event.data
        if not isinstance(data, dict):
            return False
        if "project" in data:
            return principal.scope.can_see(data["project"])
        if data.get("device_id"):
            return principal.scope.can_see(self.device_project(data["device_id"]))
        if data.get("entity_id"):
            return principal.scope.can_see(self.entity_project(data["entity_id"]))
        service_data = data.get("service_data")
        if isinstance(service_data, dict) and (
            service_data.get("device_id") or service_data.get("entity_id")
        ):
            device = service_data.get("device_id")
            if isinstance(device, str):
                return principal.scope.can_see(self.device_project(device))
            entity = service_data.get("entity_id")
            if isinstance(entity, str):
                return principal.scope.can_see(self.entity_project(entity))
        return False  # tied to no project: only for unrestricted principals

    # -- services ---------------------------------------------------------------------------
    @contextmanager
    def bind(self, context: Context, principal: Principal | None) -> Iterator[Context]:
        """Service calls made with `context` inside this block act as `principal`."""
        if principal is None:
            yield context
            return
        key = context.id
        self._bound[key] = principal
        try:
            yield context
        finally:
            self._bound.pop(key, None)

    async def principal_for_context(self, context: Context) -> Principal | None:
        bound = self._bound.get(context.id)
        if bound is not None:
            return bound
        if context.user_id:
            user = await self.user_by_name(context.user_id)
            if user is not None:
                if user.disabled:
                    return Principal(name=user.name, role="disabled", scope=Scope(self.tree, ()),
                                     user_id=user.id)
                return self.principal_for(user)
        return None

    async def call_targets(self, call: ServiceCall) -> list[tuple[str, str | None]]:
        """(what, project) for every thing a call names; scope is checked on each."""
        data = call.data
        found: list[tuple[str, str | None]] = []
        for key in ("device_id", "device_ids"):
            for device_id in _as_list(data.get(key)):
                found.append((f"device {device_id}", self.device_project(str(device_id))))
        for key in ("entity_id", "entity_ids"):
            for entity_id in _as_list(data.get(key)):
                found.append((f"entity {entity_id}", self.entity_project(str(entity_id))))
        for key in ("project", "project_id", "projects"):
            for project in _as_list(data.get(key)):
                found.append((f"project {project}", str(project)))
        if call.domain == "alarm":
            ids = _as_list(data.get("ids")) + _as_list(data.get("id"))
            store = getattr(getattr(self.hub, "alarms", None), "store", None)
            if ids and store is not None:
                for row in await store.get_many([int(i) for i in ids]):
                    found.append((f"alarm {row['id']}", row.get("project")))
        if call.domain == "workorder":
            # An order opened from an alarm belongs to the alarm's project; an update acts on
            # the order's project. Unknown ids name nothing here: the service answers 404.
            store = getattr(getattr(self.hub, "alarms", None), "store", None)
            if data.get("alarm_id") is not None and store is not None:
                for row in await store.get_many([int(data["alarm_id"])]):
                    found.append((f"alarm {row['id']}", row.get("project")))
            if data.get("alarm_ref"):  # the record as raised (it may have no row yet)
                engine = getattr(self.hub, "alarms", None)
                record = engine.by_ref(str(data["alarm_ref"])) if engine is not None else None
                if record is not None:
                    found.append((f"alarm {data['alarm_ref']}", record.project))
            order = await self._workorder(call)
            if order is not None:
                found.append((f"work order {order['id']}", order.get("project")))
        return found

    async def _workorder(self, call: ServiceCall) -> dict[str, Any] | None:
        """The work order a `workorder.update` call names (None for other calls or unknown)."""
        if call.domain != "workorder" or call.service != "update" or "id" not in call.data:
            return None
        store = getattr(getattr(self.hub, "workorders", None), "store", None)
        return await store.get(int(call.data["id"])) if store is not None else None

    async def _check_workorder_call(self, principal: Principal, call: ServiceCall) -> None:
        """What role and scope alone do not say about `workorder.*`.

        A restricted principal's new order must name a device, alarm or project (whose scope
        `call_targets` checks): an order without a project would be invisible to the person
        who opened it. Below project_admin an update is allowed only to the order's assignee,
        and only what `assignee_refusal` lets a technician do: the same rule as the API.
        """
        if call.domain != "workorder":
            return
        data = call.data
        if call.service == "create" and not principal.scope.unrestricted and not any(
            data.get(key) for key in ("device_id", "alarm_id", "alarm_ref", "project")
        ):
            raise Unauthorized(f"A work order opened by {principal.name} must name a device, "
                               "alarm or project inside its scope")
        if call.service == "update" and not principal.at_least(PROJECT_ADMIN):
            order = await self._workorder(call)
            if order is None:
                return
            changes = {key: data[key] for key in ("assignee", "due_at") if key in data}
            reason = assignee_refusal(order, principal.name, status=data.get("status"),
                                      **changes)
            if reason is not None:
                raise Unauthorized(reason)

    async def check_service_call(self, call: ServiceCall) -> None:
        """`ServiceRegistry.permission_check`: role, then the scope of every target."""
        principal = await self.principal_for_context(call.context)
        self._calls[id(call)] = principal
        if principal is None or principal.is_system:
            return
        if principal.role not in RANK:
            raise Unauthorized(f"User {principal.name} is disabled")
        if not self.policy.allows(principal.role, call.domain, call.service):
            allowed = sorted(self.policy.roles_for(call.domain, call.service), key=RANK.__getitem__)
            raise Unauthorized(
                f"Role {principal.role} may not call {call.domain}.{call.service} "
                f"(allowed: {', '.join(allowed) or 'super_admin'})"
            )
        await self._check_workorder_call(principal, call)
        if principal.scope.unrestricted:
            return
        for what, project in await self.call_targets(call):
            if not principal.scope.can_see(project):
                raise Unauthorized(f"{what.capitalize()} is outside the scope of {principal.name}")

    async def observe_call(self, call: ServiceCall, error: BaseException | None) -> None:
        """`ServiceRegistry.call_observer`: audit control actions and everything people call."""
        principal = self._calls.pop(id(call), None)
        if principal is None and not (is_control(call.domain, call.service)
                                      or call.domain == "alarm"):
            return
        if error is None:
            result, detail = "ok", {}
        elif isinstance(error, Unauthorized):
            result, detail = "denied", {"reason": str(error)}
        else:
            result, detail = "failed", {"error": f"{type(error).__name__}: {error}"[:500]}
        targets = [(what, project) for what, project in await self._targets_quiet(call)]
        detail["data"] = _short(call.data)
        if call.context.parent_id:
            detail["parent_context"] = call.context.parent_id
        if principal is not None:
            detail["via"] = principal.via
        # Which worker ran it: the owner for a call forwarded there (hub/core/peers.py).
        leases = getattr(self.hub, "leases", None)
        worker = call.worker or (leases.worker_id if getattr(leases, "shared", False) else None)
        if worker:
            detail["worker"] = worker
        await self.audit.record(
            f"service.{call.domain}.{call.service}",
            result,
            actor=principal.name if principal else (call.context.user_id or "system"),
            actor_role=principal.role if principal else None,
            ip=principal.ip if principal else None,
            target=targets[0][0].split(" ", 1)[1] if targets else None,
            project=next((p for _w, p in targets if p), None),
            detail=detail,
            context_id=call.context.id,
        )

    async def _targets_quiet(self, call: ServiceCall) -> list[tuple[str, str | None]]:
        try:
            return await self.call_targets(call)
        except Exception:  # noqa: BLE001 - an audit entry without a target beats none
            return []

    # -- user management rules -----------------------------------------------------------------
    def may_manage(self, actor: Principal, user: User) -> bool:
        """Admins manage users at or below their own role whose projects lie in their scope."""
        if not actor.at_least("platform_admin"):
            return False
        if actor.role == SUPER_ADMIN and actor.scope.unrestricted:
            return True
        if not at_least(actor.role, user.role) or user.unrestricted:
            return False
        return bool(user.projects) and actor.scope.covers(user.projects)


def _short(data: dict[str, Any]) -> dict[str, Any]:
    """Service data for the audit log: no secrets, nothing huge."""
    out: dict[str, Any] = {}
    for key, value in list(data.items())[:20]:
        if "password" in str(key).lower() or "token" in str(key).lower():
            out[key] = "***"
        elif isinstance(value, str | int | float | bool) or value is None:
            out[key] = value if not isinstance(value, str) else value[:200]
        else:
            text = repr(value)
            out[key] = text[:200]
    return out
