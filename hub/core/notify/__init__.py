"""Notifications: notifier plugins, delivery records, subscriptions, escalation.

See docs/notifications.md. `hub.notify` is the `NotifyManager` once the hub started.
"""

from .base import (
    EVENT_NOTIFICATION,
    EVENT_NOTIFY_REPLY,
    NOTIFICATIONS_SCHEMA,
    STATUSES,
    DeliveryError,
    Notifier,
    OutgoingMessage,
    SendResult,
)
from .manager import NotifyManager, delivery_dict, phone_forms

__all__ = [
    "EVENT_NOTIFICATION",
    "EVENT_NOTIFY_REPLY",
    "NOTIFICATIONS_SCHEMA",
    "STATUSES",
    "DeliveryError",
    "Notifier",
    "NotifyManager",
    "OutgoingMessage",
    "SendResult",
    "delivery_dict",
    "phone_forms",
]
