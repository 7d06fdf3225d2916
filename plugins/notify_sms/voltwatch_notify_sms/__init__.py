"""Voltwatch notifier plugin `notify_sms`: SMS through a GSM modem and through HTTP gateways.

Provides two notifier platforms (`voltwatch_notifiers`): `sms`, an AT-command modem on a
serial port (CONTRACTS §10; PDU mode, GSM-7 or UCS2, concatenated segments, replies read and
handed to the core to acknowledge alarms), and `sms_http`, any HTTP SMS gateway described by a
templated request. Also `voltwatch simulate modem`. See docs/plugins/notify_sms.md.
"""

from __future__ import annotations

from typing import Any

from hub import hookimpl

from .notifiers import SMS_HTTP_SCHEMA, SMS_SCHEMA, SmsHttpNotifier, SmsNotifier
from .simulator import ModemSimulator, add_arguments, simulate

__all__ = ["ModemSimulator", "SmsHttpNotifier", "SmsNotifier"]


@hookimpl
def voltwatch_notifiers() -> dict[str, tuple[Any, Any]]:
    return {"sms": (SMS_SCHEMA, SmsNotifier), "sms_http": (SMS_HTTP_SCHEMA, SmsHttpNotifier)}


@hookimpl
def voltwatch_simulators() -> dict[str, Any]:
    return {"modem": (add_arguments, simulate)}
