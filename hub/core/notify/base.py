"""What a notifier is, what it is given and how it says it failed.

A notifier plugin (`voltwatch_notifiers`) provides platforms; each entry of `notify:` in
configuration.yaml makes one notifier instance with its own name, e.g. a modem `sms` and an
HTTP gateway `sms_gateway`. The core (`hub.notify`, hub/core/notify/manager.py) owns queues,
retries, failover, delivery records, subscriptions and escalation; a notifier only sends one
message to one recipient and says how that went. That split is what lets a failing notifier
never swallow the others: it can only fail its own delivery, which the core then hands on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import voluptuous as vol

from ..config import duration

if TYPE_CHECKING:
    from hub.hub import Hub

STATUS_QUEUED = "queued"
STATUS_SENDING = "sending"
STATUS_SENT = "sent"
STATUS_FAILED = "failed"
STATUS_DELIVERED = "delivered"
STATUS_HELD = "held"
STATUS_SUMMARISED = "summarised"
STATUSES = (STATUS_QUEUED, STATUS_SENDING, STATUS_SENT, STATUS_FAILED, STATUS_DELIVERED,
            STATUS_HELD, STATUS_SUMMARISED)

KIND_ALARM = "alarm"
KIND_SUMMARY = "summary"
KIND_ESCALATION = "escalation"
KIND_MANUAL = "manual"

EVENT_NOTIFICATION = "notification_delivery"  # data: the delivery record, on every change
EVENT_NOTIFY_REPLY = "notification_reply"  # data: sender, text, channel, alarm_id, action


@dataclass(slots=True)
class OutgoingMessage:
    """One message to one recipient (a phone number for SMS notifiers)."""

    recipient: str
    text: str
    title: str | None = None
    delivery_id: int | None = None
    alarm_id: int | None = None
    language: str = "zh-CN"
    severity: str | None = None


@dataclass(slots=True)
class SendResult:
    """What the channel answered: a message reference (modem `+CMGS: <mr>`, gateway id)."""

    reference: str | None = None
    #: True when the channel already confirmed delivery to the handset (rare).
    delivered: bool = False


class DeliveryError(Exception):
    """A send that did not work, with the reason users see in the delivery record.

    `retryable` False means trying the same channel again cannot help (a malformed number):
    the core goes straight to the next channel. `unavailable` means the channel itself is
    gone (the modem's port vanished): the core fails over at once without burning retries.
    """

    def __init__(self, reason: str, *, retryable: bool = True, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.unavailable = unavailable


class Notifier(ABC):
    """One configured channel. Subclasses implement `async_send`; the rest is optional."""

    platform: str = ""

    def __init__(self, hub: Hub, config: dict[str, Any]) -> None:
        self.hub = hub
        self.config = config
        self.name: str = config["name"]

    @property
    def available(self) -> bool:
        """False while the channel cannot send at all (the core then fails over at once)."""
        return True

    @property
    def healthy(self) -> bool | None:
        """Did the channel pass its last health check (a modem answering `AT`)? None for a
        channel that has no such check (an HTTP gateway is judged by its sends)."""
        return None

    @property
    def checked_at(self) -> float | None:
        """When that health check ran (unix seconds), or None."""
        return None

    @property
    def last_error(self) -> str | None:
        """The channel's own latest trouble (port lost, no answer), or None; the core adds
        the latest failed send on top of this in `GET /api/notifications/notifiers`."""
        return None

    async def async_start(self) -> None:
        """Open connections; must not raise for a device that is merely absent (report it
        through `available` and keep trying in the background)."""

    async def async_stop(self) -> None:
        """Close connections."""

    @abstractmethod
    async def async_send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; raise DeliveryError with the reason when it did not go out."""

    def status(self) -> dict[str, Any]:
        """What `GET /api/notifications/notifiers` shows about this channel."""
        return {"name": self.name, "platform": self.platform, "available": self.available}


# Keys every `notify:` entry has, whatever its platform.
NOTIFIER_COMMON: dict[Any, Any] = {
    vol.Required("platform"): str,
    vol.Required("name"): vol.All(str, vol.Match(r"^[a-z][a-z0-9_]{0,31}$",
                                                 msg="lower-case letters, digits and _")),
    # the next channel when this one fails for good; default: the next entry of `notify:`
    vol.Optional("fallback"): vol.Any(None, str),
    vol.Optional("retries", default=2): vol.All(int, vol.Range(min=0, max=20)),
    vol.Optional("retry_backoff", default=2.0): vol.All(duration, vol.Range(min=0, max=3600)),
    vol.Optional("timeout", default=30.0): vol.All(duration, vol.Range(min=0.1, max=600)),
}


def _hhmm(value: Any) -> str:
    text = str(value).strip()
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise vol.Invalid(f"expected a time of day such as 22:00, got {value!r}")
    hour, minute = int(parts[0]), int(parts[1])
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise vol.Invalid(f"expected a time of day such as 22:00, got {value!r}")
    return f"{hour:02d}:{minute:02d}"


HHMM = _hhmm

# The core's `notifications:` section: rate limit and escalation (docs/notifications.md).
NOTIFICATIONS_SCHEMA = vol.Schema(
    {
        vol.Optional("rate_limit", default={}): vol.Schema({
            # at most `max` messages per recipient in `window`; the rest become one summary
            vol.Optional("max", default=5): vol.All(int, vol.Range(min=1, max=1000)),
            vol.Optional("window", default=300.0): vol.All(duration, vol.Range(min=1)),
        }),
        vol.Optional("escalation", default={}): vol.Schema({
            vol.Optional("enabled", default=True): bool,
            # delay before each level: [to project admins, to platform admins]
            vol.Optional("delays", default=[600.0, 1800.0]): [vol.All(duration,
                                                                       vol.Range(min=0))],
            vol.Optional("roles", default=["project_admin", "platform_admin"]): [
                vol.In(("user", "project_admin", "platform_admin", "super_admin"))],
            vol.Optional("kinds", default=["alarm"]): [vol.In(("alarm", "fault", "event"))],
        }),
        # seconds a delivery record's write may take before the message goes out anyway
        # (a stalled database); the record is written, in order, when the database answers
        vol.Optional("store_timeout", default=2.0): vol.All(duration, vol.Range(min=0.1,
                                                                                max=60)),
        # reply words that acknowledge the alarm a recipient was last sent
        vol.Optional("ack_words", default=["1", "确认", "ok", "OK"]): [str],
    }
)
