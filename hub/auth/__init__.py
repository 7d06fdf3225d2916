"""Users, roles, the project-tree scope, sessions and the audit log (issue #6).

`hub.auth` (an `AuthManager`) is made by the Hub after storage opens; the HTTP layer reaches
it through `hub.http.auth`. See docs/security.md.
"""

from __future__ import annotations

from .manager import AuthError, AuthManager
from .permissions import PLATFORM_ADMIN, PROJECT_ADMIN, ROLES, SUPER_ADMIN, USER
from .principal import Principal
from .scope import ProjectTree, Scope

__all__ = [
    "PLATFORM_ADMIN",
    "PROJECT_ADMIN",
    "ROLES",
    "SUPER_ADMIN",
    "USER",
    "AuthError",
    "AuthManager",
    "Principal",
    "ProjectTree",
    "Scope",
]
