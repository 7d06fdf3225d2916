"""Fault drill of issue 12: the GSM modem is pulled mid-operation.

The `sms` notifier (a simulated modem on a pty, opened through a stable symlink the way udev
names a USB modem) is the first channel, the HTTP gateway the fallback. The modem sends one
alarm, is unplugged (both pty ends close, the path dangles), the next alarm goes out through
the gateway with the failure recorded under a reason that names the port, and once the modem
is plugged back in (a new pty behind the same path) the third alarm goes through it again.
No sleeps: every wait is on an event, bounded by a timeout that only limits a failure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from notify_sms_testkit import (
    PHONE,
    TIMEOUT,
    Deliveries,
    Gateway,
    raise_alarm,
    sms_entry,
    start_hub,
    subscriber,
    wait_modem,
)
from voltwatch_notify_sms.simulator import ModemSimulator


async def test_pulled_modem_fails_over_to_gateway_and_is_used_again(tmp_path: Path) -> None:
    gateway = Gateway()
    await gateway.start()
    sim = ModemSimulator()
    port = str(tmp_path / "ttyModem")  # what a udev rule gives: a name that outlives the tty
    sim.open(link=port)
    hub = await start_hub(tmp_path, [sms_entry(port), gateway.entry()])
    try:
        await wait_modem(hub)
        modem = hub.notify.notifiers["sms"].modem
        await subscriber(hub)
        seen = Deliveries(hub)

        # 1. The modem works: the first alarm's SMS goes through it.
        first = await raise_alarm(hub, type_="residual_current_high")
        (message,) = await sim.wait_sent(1, timeout=TIMEOUT)
        assert message.number == PHONE
        sent = await seen.wait(lambda d: d["status"] == "sent" and d["alarm_id"] == first)
        assert sent["channel"] == "sms"

        # 2. Pulled: the next alarm fails on the modem, naming its port, and the gateway
        # delivers it.
        sim.vanish()
        await asyncio.wait_for(modem._lost.wait(), TIMEOUT)
        second = await raise_alarm(hub, type_="temperature_high_1", value=95)
        failed = await seen.wait(lambda d: d["status"] == "failed" and d["alarm_id"] == second)
        assert failed["channel"] == "sms"
        assert port in failed["reason"] and "unavailable" in failed["reason"], failed["reason"]
        rescued = await seen.wait(lambda d: d["status"] == "sent" and d["alarm_id"] == second)
        assert rescued["channel"] == "sms_gateway" and rescued["fallback_of"] == failed["id"]
        (request,) = await gateway.wait(1)
        assert request["json"]["PhoneNumbers"] == PHONE
        row = await hub.notify.store.get_delivery(failed["id"])
        assert row["status"] == "failed" and port in row["reason"]
        status = hub.notify.notifiers["sms"].status()
        assert status["available"] is False and port in status["last_error"]

        # 3. Plugged back in: the modem reopens the same path and takes the next alarm again.
        sim.open(link=port)
        await wait_modem(hub)
        third = await raise_alarm(hub, type_="over_voltage", value=280)
        again = await seen.wait(lambda d: d["status"] == "sent" and d["alarm_id"] == third)
        assert again["channel"] == "sms" and again.get("fallback_of") is None
        messages = await sim.wait_sent(2, timeout=TIMEOUT)
        assert [m.number for m in messages] == [PHONE, PHONE]
        assert len(gateway.requests) == 1  # the gateway carried only the alarm of the gap
        assert [d["alarm_id"] for d in seen.events if d["status"] == "failed"] == [second]
    finally:
        await hub.async_stop()
        sim.close()
        await gateway.stop()
