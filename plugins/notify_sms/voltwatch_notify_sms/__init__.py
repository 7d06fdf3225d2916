"""Voltwatch notifier plugin `notify_sms`: SMS through a GSM modem and through HTTP gateways.

Provides two notifier platforms (`voltwatch_notifiers`): `sms`, an AT-command modem on a
serial port (CONTRACTS §10; PDU mode, GSM-7 or UCS2, concatenated segments, replies read and
handed to the core to acknowledge alarms), and `sms_http`, any HTTP SMS gateway described by a
templated request. Also `voltwatch simulate modem`, and in the demo site a simulated modem
that the demo user's alarm SMS go to. See docs/plugins/notify_sms.md.
"""

from __future__ import annotations

import logging
from typing import Any

from hub import hookimpl

from .notifiers import SMS_HTTP_SCHEMA, SMS_SCHEMA, SmsHttpNotifier, SmsNotifier
from .simulator import ModemSimulator, add_arguments, show_sent, simulate

__all__ = ["ModemSimulator", "SmsHttpNotifier", "SmsNotifier"]

_LOGGER = logging.getLogger(__name__)
DEMO_PHONE = "+8613800138000"


@hookimpl
def voltwatch_notifiers() -> dict[str, tuple[Any, Any]]:
    return {"sms": (SMS_SCHEMA, SmsNotifier), "sms_http": (SMS_HTTP_SCHEMA, SmsHttpNotifier)}


@hookimpl
def voltwatch_simulators() -> dict[str, Any]:
    return {"modem": (add_arguments, simulate)}


@hookimpl
async def voltwatch_demo_site(demo: Any) -> None:
    """A simulated modem on a pty, an `sms` notifier on it, and the demo user subscribed to
    alarms with the modem's phone number: a demo alarm becomes an SMS the simulator
    "delivers" (its `+CDS` report makes the delivery record `delivered`)."""
    sim = ModemSimulator()
    path = sim.open(str(demo.data_dir / "modem.tty"))
    notify = list(demo.sections.get("notify") or [])
    notify.insert(0, {"platform": "sms", "name": "sms",
                      "modem": {"port": path, "baudrate": 115200}})
    demo.set_section("notify", notify)
    demo.subscribe_demo_user(DEMO_PHONE, kinds=["alarm"])
    demo.start(_demo_modem(sim), name="notify_sms demo modem")
    _LOGGER.info("Demo modem on %s", path)


async def _demo_modem(sim: ModemSimulator) -> None:
    """Shows each SMS the hub hands to the simulated modem; closes it when the demo stops."""
    try:
        await show_sent(sim, prefix="Demo modem: ")
    finally:
        sim.vanish()
