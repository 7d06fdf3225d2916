"""Roles, the pyramid they form, and which role may call which service.

The pyramid is strict: a higher role can do everything a lower one can, inside its scope. So a
permission is written as the lowest role that has it, and the configuration may also name an
explicit list of roles for the odd site that wants e.g. duty officers (`user`) to mute a
buzzer but not trip a breaker.

Services are matched by `domain.service` first, then by the bare service name, so `trip:`
covers every device platform's trip and `arcm.trip:` one platform's. Anything unnamed needs
`default_service_role` (project_admin): a new plugin's service is never open to `user` until
someone decides it should be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import voluptuous as vol

SUPER_ADMIN = "super_admin"
PLATFORM_ADMIN = "platform_admin"
PROJECT_ADMIN = "project_admin"
USER = "user"

#: Lowest first; a role's rank is its index.
ROLES: tuple[str, ...] = (USER, PROJECT_ADMIN, PLATFORM_ADMIN, SUPER_ADMIN)
RANK: dict[str, int] = {role: index for index, role in enumerate(ROLES)}

#: Words users see for each role (zh-CN, en).
ROLE_WORDS: dict[str, tuple[str, str]] = {
    SUPER_ADMIN: ("超级管理员", "Super admin"),
    PLATFORM_ADMIN: ("平台管理员", "Platform admin"),
    PROJECT_ADMIN: ("项目管理员", "Project admin"),
    USER: ("联网用户", "User"),
}

#: The control actions of CONTRACTS §5 (any device platform): audited always, project_admin+.
CONTROL_SERVICES: frozenset[str] = frozenset(
    {"trip", "close", "reset", "mute", "self_test", "set_parameter"}
)

#: Defaults before the site's `auth.service_roles`; keys as in the configuration.
DEFAULT_SERVICE_ROLES: dict[str, str] = {
    **{name: PROJECT_ADMIN for name in CONTROL_SERVICES},
    "alarm.acknowledge": USER,
    "alarm.handle": USER,
    "alarm.reset": PROJECT_ADMIN,
    "read_parameters": USER,
    # Opening a work order sends someone out: the project's admin decides that.
    "workorder.create": PROJECT_ADMIN,
    # A technician (any role) moves the orders given to them (accept, repair, hand back,
    # comment); below project_admin only those, which `AuthManager` checks per order
    # (hub.core.workorders.assignee_refusal). Everything else needs project_admin.
    "workorder.update": USER,
}


def rank(role: str) -> int:
    return RANK.get(role, -1)


def at_least(role: str, minimum: str) -> bool:
    return rank(role) >= rank(minimum)


def valid_role(value: Any) -> str:
    if value not in RANK:
        raise vol.Invalid(f"unknown role {value!r} (one of: {', '.join(ROLES)})")
    return str(value)


def _role_set(value: str | Iterable[str]) -> frozenset[str]:
    """A role name means that role and every role above it; a list means exactly those."""
    if isinstance(value, str):
        return frozenset(role for role in ROLES if at_least(role, value))
    return frozenset(value)


SERVICE_ROLE = vol.Any(valid_role, vol.All([valid_role], vol.Length(min=1)))


class ServicePolicy:
    """Answers "may this role call that service?" from the defaults plus the site's config."""

    def __init__(
        self,
        overrides: Mapping[str, str | list[str]] | None = None,
        default_role: str = PROJECT_ADMIN,
    ) -> None:
        merged: dict[str, str | list[str]] = {**DEFAULT_SERVICE_ROLES, **(overrides or {})}
        self._roles = {key.lower(): _role_set(value) for key, value in merged.items()}
        self._default = _role_set(default_role)

    def roles_for(self, domain: str, service: str) -> frozenset[str]:
        domain, service = domain.lower(), service.lower()
        found = self._roles.get(f"{domain}.{service}")
        if found is None:
            found = self._roles.get(service)
        return self._default if found is None else found

    def allows(self, role: str, domain: str, service: str) -> bool:
        # super_admin has everything, whatever a configuration says.
        return role == SUPER_ADMIN or role in self.roles_for(domain, service)


def is_control(domain: str, service: str) -> bool:
    return service.lower() in CONTROL_SERVICES
