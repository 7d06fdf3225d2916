"""The `auth:` section of configuration.yaml (validated with the core sections).

```yaml
auth:
  session_lifetime: 12h        # a session ends this long after login, whatever happens
  session_idle: 2h             # ... or after this long without a request
  max_failures: 5              # failed logins of one user before it is locked
  lockout: 1m                  # first lock; doubles with every further failure ...
  max_lockout: 1h              # ... up to this
  ip_max_failures: 20          # the same for one client address (any user names)
  password_min_length: 8
  default_service_role: project_admin   # services not named below
  service_roles:               # lowest role allowed, or an exact list of roles
    trip: platform_admin       # every platform's trip
    arcm.mute: [user, project_admin, platform_admin]
```
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from hub.core.config import duration

from .permissions import PROJECT_ADMIN, SERVICE_ROLE, valid_role

AUTH_SCHEMA = vol.Schema(
    {
        vol.Optional("session_lifetime", default=12 * 3600.0): vol.All(
            duration, vol.Range(min=60)
        ),
        vol.Optional("session_idle", default=2 * 3600.0): vol.All(duration, vol.Range(min=60)),
        vol.Optional("max_failures", default=5): vol.All(int, vol.Range(min=1, max=100)),
        vol.Optional("lockout", default=60.0): vol.All(duration, vol.Range(min=1)),
        vol.Optional("max_lockout", default=3600.0): vol.All(duration, vol.Range(min=1)),
        vol.Optional("ip_max_failures", default=20): vol.All(int, vol.Range(min=1, max=10_000)),
        vol.Optional("password_min_length", default=8): vol.All(int, vol.Range(min=6, max=128)),
        vol.Optional("default_service_role", default=PROJECT_ADMIN): valid_role,
        vol.Optional("service_roles", default=dict): {str: SERVICE_ROLE},
    }
)


def auth_settings(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Validated settings with defaults (idempotent on an already validated section)."""
    return AUTH_SCHEMA(dict(raw or {}))
