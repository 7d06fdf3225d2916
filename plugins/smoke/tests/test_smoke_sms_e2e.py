"""End to end (issue #9, item 5): a smoke alarm a detector publishes on Mosquitto becomes an
alarm record and an SMS through the simulated modem, and the reply "1" acknowledges it.

Everything on the path is real: a private Mosquitto, a plain aiomqtt client standing in for
the detector (or its vendor's bridge), a started Hub on SQLite with the mqtt, smoke and
notify_sms plugins, and the `sms` notifier speaking AT commands through pyserial to the modem
simulator on a pty. No sleeps: every wait is on a bus event or the simulator, bounded by a
timeout that only limits a failure.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from smoke_testkit import WAIT, EventWaiter, hub_config, plugins, ready, smoke_device
from voltwatch_mqtt.testing import MosquittoBroker, find_mosquitto
from voltwatch_notify_sms.simulator import ModemSimulator

from hub.hub import Hub

# Copied from plugins/notify_sms/tests/notify_sms_testkit.py (PHONE, sms_entry): that module
# is importable only when pytest has put its directory on sys.path, which it does not when
# this directory runs on its own.
PHONE = "+8613800138000"


def sms_entry(port: str, **extra: Any) -> dict[str, Any]:
    return {"platform": "sms", "name": "sms", "modem": {"port": port, "baudrate": 115200},
            "retries": 1, "retry_backoff": 0.01, "command_timeout": 1.0, "send_timeout": 1.0,
            "health_interval": 30.0, **extra}


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (make test installs it with apt-get)")
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


async def test_smoke_alarm_on_mqtt_becomes_alarm_record_and_sms_and_reply_acknowledges(
        tmp_path: Path, broker: MosquittoBroker) -> None:
    sim = ModemSimulator()
    port = sim.open()
    try:
        await _run(tmp_path, broker, sim, port)
    finally:
        sim.close()


async def _run(tmp_path: Path, broker: MosquittoBroker, sim: ModemSimulator, port: str) -> None:
    config = hub_config(tmp_path, broker, [smoke_device()], notify=[sms_entry(port)])
    hub = Hub(tmp_path, config=config, plugin_manager=plugins("notify_sms"))
    raised = EventWaiter(hub, "alarm_raised")
    deliveries = EventWaiter(hub, "notification_delivery")
    acknowledged = EventWaiter(hub, "alarm_acknowledged")
    replies = EventWaiter(hub, "notification_reply")
    await hub.async_start()
    try:
        assert hub.plugins.failures == []
        await ready(hub)
        await asyncio.wait_for(hub.notify.notifiers["sms"].modem.connected_event.wait(), WAIT)

        # The duty officer of the canteen: a phone, and a subscription to its project (what
        # POST /api/subscriptions stores).
        user = await hub.auth.users.create("duty", "user", None, projects=["school-1-b"],
                                           phone=PHONE)
        await hub.notify.store.insert_subscription({
            "user_id": user.id, "projects": ["school-1-b"], "kinds": [],
            "min_severity": "info", "channels": [], "quiet_start": None, "quiet_end": None,
            "language": None, "enabled": True, "created_at": 0.0, "created_by": "test"})

        # The detector (or its bridge) publishes, as a real one does: no hub code involved.
        async with aiomqtt.Client(broker.host, broker.port, identifier="smoke-1") as detector:
            await detector.publish("voltwatch/dev/smoke-1/event",
                                   json.dumps({"event": "smoke_alarm", "state": "active"}),
                                   qos=1)

        # 1. The alarm record.
        record = await raised.wait(lambda r: r["type"] == "smoke")
        assert record["kind"] == "alarm" and record["severity"] == "critical"
        assert record["message"] == "烟雾报警" and record["device_id"] == "smoke-1"
        assert record["project"] == "school-1-b" and record["location"] == "厨房"
        assert record["device_name"] == "厨房烟感"
        await hub.alarms.async_flush()
        stored = await hub.alarms.store.get(record["id"])
        assert stored["type"] == "smoke" and stored["status"] == "active"
        assert stored["severity"] == "critical" and stored["message"] == "烟雾报警"
        assert stored["acked_at"] is None

        # 2. One SMS to the subscriber's phone, decoded by the simulator's own decoder.
        (message,) = await sim.wait_sent(1, timeout=WAIT)
        assert message.number == PHONE
        assert "烟雾报警" in message.text
        assert "厨房烟感" in message.text and "厨房" in message.text
        assert message.text.startswith("【Voltwatch】报警：第一中学 食堂 厨房 厨房烟感 烟雾报警 ")
        assert message.text.endswith("，回复1确认")
        assert message.segments[0].dcs == 8  # UCS2: Chinese does not fit GSM-7

        # 3. The delivery record says sent, on the modem, for this alarm.
        sent = await deliveries.wait(lambda d: d["status"] == "sent")
        assert sent["alarm_id"] == record["id"] and sent["channel"] == "sms"
        assert sent["recipient"] == PHONE and sent["user_name"] == "duty"
        assert sent["severity"] == "critical" and sent["message"] == message.text
        row = await hub.notify.store.get_delivery(sent["id"])
        # (The modem's delivery report may already have moved it on to "delivered".)
        assert row["status"] in ("sent", "delivered") and row["sent_at"] is not None

        # 4. The reply "1" from that phone acknowledges the alarm, in the user's name.
        sim.inject_reply(PHONE, "1")
        acked = await acknowledged.wait(lambda r: r["id"] == record["id"])
        assert acked["acked_by"] == "duty"
        reply = await replies.wait(lambda r: r["sender"] == PHONE)
        assert reply["action"] == "acknowledged" and reply["alarm_id"] == record["id"]
        stored = await hub.alarms.store.get(record["id"])
        assert stored["acked_at"] is not None and stored["acked_by"] == "duty"
        assert stored["status"] == "active"  # acknowledged, not cleared: the smoke is still there

        assert [e.data["type"] for e in raised.seen] == ["smoke"]
        assert len(sim.sent) == 1
        assert [d.data["status"] for d in deliveries.seen
                if d.data["status"] in ("failed", "held")] == []
    finally:
        await hub.async_stop()
