"""The Principal: who is asking, with which role, over which part of the project tree.

Every authenticated request carries one (`hub.http.auth.principal(request)`), whatever
authenticated it: a session cookie, a user's bearer token, or a system token. Handlers and the
service permission check ask it the same two questions: `at_least(role)` and
`scope.can_see(project)`.

A *system* principal (`user_id is None`) comes from a token made without a user
(`create_token(db, name)` with no `user_id`, which only the CLI on the hub's own machine and the
demo do). It acts as super_admin over everything: that is what such tokens were before users
existed, and integrations, tests and the demo rely on it. Prefer user tokens for anything new.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .permissions import SUPER_ADMIN, at_least
from .scope import Scope


@dataclass(frozen=True, slots=True)
class Principal:
    #: The user's name (unique, never renamed), or the token's name for a system token.
    name: str
    role: str
    scope: Scope
    #: None for a system token.
    user_id: str | None = None
    token_id: str | None = None
    #: The session's id (hash) when authenticated by the session cookie.
    session_id: str | None = None
    csrf_token: str | None = None
    ip: str | None = None
    language: str | None = None

    @property
    def is_system(self) -> bool:
        return self.user_id is None

    @property
    def via(self) -> str:
        return "session" if self.session_id else ("token" if self.token_id else "internal")

    def at_least(self, role: str) -> bool:
        return at_least(self.role, role)

    @property
    def unrestricted(self) -> bool:
        return self.scope.unrestricted

    def can_see(self, project: str | None) -> bool:
        return self.scope.can_see(project)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "user_id": self.user_id,
            "projects": self.scope.as_list(),
            "system": self.is_system,
            "via": self.via,
            "token_id": self.token_id,
            "language": self.language,
        }


def system_principal(scope: Scope, name: str, token_id: str | None = None,
                     ip: str | None = None) -> Principal:
    return Principal(name=name, role=SUPER_ADMIN, scope=scope, token_id=token_id, ip=ip)
