"""The `workorders:` and `reminders:` sections of configuration.yaml (issue #5: hazards).

Kept apart from config.py so the hazard features own their settings; config.py merges these
into its core sections when it validates (a local import there, because this module uses
config.py's `duration`).
"""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol

from .config import duration

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|k|mb|m)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1024, "m": 1 << 20, "mb": 1 << 20}

DEFAULT_MAX_PHOTO_SIZE = 5 << 20
DEFAULT_MAX_PHOTOS = 50
DEFAULT_DUE = 24 * 3600.0
DEFAULT_REMINDER_INTERVAL = 60.0
DEFAULT_ALARM_DELAY = 600.0


def byte_size(value: Any) -> int:
    """`5MB`, `512KB`, `5242880`: a size in bytes (binary units, as file managers show them)."""
    if isinstance(value, bool):
        raise vol.Invalid("expected a size such as 5MB, 512KB or a number of bytes")
    if isinstance(value, int | float):
        number = float(value)
        unit = None
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise vol.Invalid(f"expected a size such as 5MB, 512KB or a number of bytes, got {value!r}")
        number, unit = float(match.group(1)), match.group(2)
    size = int(number * _SIZE_UNITS[unit.lower() if unit else None])
    if size < 1:
        raise vol.Invalid("a size must be at least 1 byte")
    return size


WORKORDERS_SCHEMA = vol.Schema(
    {
        # photos: stored under <config>/uploads/workorders/<id>/, JPEG/PNG/WebP only
        vol.Optional("max_photo_size", default=DEFAULT_MAX_PHOTO_SIZE): vol.All(
            byte_size, vol.Range(max=100 << 20)
        ),
        vol.Optional("max_photos", default=DEFAULT_MAX_PHOTOS): vol.All(
            int, vol.Range(min=1, max=1000)
        ),
        # due time of a work order created without one; 0 means none (never overdue)
        vol.Optional("default_due", default=DEFAULT_DUE): duration,
        # what handling an alarm (alarm_handled) does to work orders: nothing by default;
        # `create` opens one for a handled alarm that has none yet
        vol.Optional("on_alarm_handled", default="none"): vol.In(("none", "create")),
        # mark the linked alarm handled when its work order is repaired
        vol.Optional("handle_alarm_on_repair", default=True): bool,
    }
)

REMINDERS_SCHEMA = vol.Schema(
    {
        vol.Optional("enabled", default=True): bool,
        # how often the hub looks for what is overdue (one cheap indexed query per reason)
        vol.Optional("interval", default=DEFAULT_REMINDER_INTERVAL): vol.All(
            duration, vol.Range(min=0.01, max=3600)
        ),
        # an active alarm unacknowledged this long gets a reminder
        vol.Optional("alarm_unacknowledged", default=DEFAULT_ALARM_DELAY): duration,
        vol.Optional("alarm_kinds", default=["alarm", "fault"]): [
            vol.In(("alarm", "fault", "event"))
        ],
        # repeat a reminder this often while the condition lasts; 0: once per crossing
        vol.Optional("repeat", default=0.0): duration,
    }
)

def _hazard_analysis(value: Any) -> Any:
    from .hazard_analysis import CONFIG_SCHEMA  # issue 11: trend forecasts (隐患预警)

    return CONFIG_SCHEMA(value)


HAZARD_SECTIONS: dict[str, Any] = {
    "workorders": WORKORDERS_SCHEMA,
    "reminders": REMINDERS_SCHEMA,
    "hazard_analysis": _hazard_analysis,
}
