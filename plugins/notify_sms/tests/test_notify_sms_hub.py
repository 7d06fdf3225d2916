"""The notify_sms plugin in a real Hub, over the real serial path: pyserial opens the slave
side of a pty whose master is the simulated modem. No sleeps: every wait is on an event,
bounded by a timeout that only limits a failure."""

from __future__ import annotations

from pathlib import Path

from notify_sms_testkit import (
    PHONE,
    Deliveries,
    Gateway,
    events,
    hub_with_modem,
    raise_alarm,
    sms_entry,
    start_hub,
    subscriber,
    wait_modem,
)
from voltwatch_notify_sms.simulator import ModemSimulator


async def test_alarm_sms_in_chinese_and_reply_acknowledges(tmp_path: Path) -> None:
    hub, sim = await hub_with_modem(tmp_path)
    try:
        await subscriber(hub)
        seen = Deliveries(hub)
        alarm_id = await raise_alarm(hub)
        (message,) = await sim.wait_sent(1)
        assert message.number == PHONE
        assert message.text.startswith("【Voltwatch】报警：第一中学 教学楼A 配电室 配电箱1 剩余电流过大 550mA")
        assert message.text.endswith("，回复1确认")
        assert message.segments[0].dcs == 8
        sent = await seen.wait(lambda d: d["status"] == "sent")
        assert sent["alarm_id"] == alarm_id and sent["channel"] == "sms"
        assert any(c.startswith("AT+CMGS=") for c in sim.commands)

        acked = events(hub, "alarm_acknowledged")
        replied = events(hub, "notification_reply")  # fired once the reply is audited
        sim.inject_reply(PHONE, "1")
        await acked.wait(lambda d: d.get("id") == alarm_id)
        await replied.wait(lambda d: d.get("alarm_id") == alarm_id)
        rows = await hub.alarms.store.get_many([alarm_id])
        assert rows[0]["acked_by"] == "duty" and rows[0]["acked_at"] is not None
        from hub.auth.audit import AuditQuery

        audit = await hub.auth.audit.query(AuditQuery(action_prefixes=["notify.reply_ack"]))
        assert audit and audit[0]["detail"]["sender"] == PHONE and audit[0]["actor"] == "duty"
        assert any(c.startswith("AT+CMGR=") for c in sim.commands)
        assert any(c.startswith("AT+CMGD=") for c in sim.commands)
        assert not sim.storage
    finally:
        await hub.async_stop()
        sim.close()


async def test_modem_error_is_recorded_retried_then_sent(tmp_path: Path) -> None:
    hub, sim = await hub_with_modem(tmp_path)
    try:
        seen = Deliveries(hub)
        sim.fail_next("cms:500")
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "test 1"})
        retry = await seen.wait(lambda d: d["status"] == "queued" and d["attempts"] == 1)
        assert retry["reason"] == "modem: +CMS ERROR: 500"
        done = await seen.wait(lambda d: d["status"] == "sent")
        assert done["attempts"] == 2 and done["id"] == retry["id"]
        assert [m.text for m in sim.sent] == ["test 1"]
    finally:
        await hub.async_stop()
        sim.close()


async def test_modem_errors_exhaust_retries_then_gateway(tmp_path: Path) -> None:
    gateway = Gateway()
    await gateway.start()
    hub, sim = await hub_with_modem(tmp_path, gateway)
    try:
        seen = Deliveries(hub)
        sim.fail_next("error", 2)
        await hub.services.async_call("notify", "send", {"target": [PHONE], "message": "告警"})
        failed = await seen.wait(lambda d: d["status"] == "failed")
        assert failed["channel"] == "sms" and failed["reason"] == "modem: ERROR"
        assert failed["attempts"] == 2
        sent = await seen.wait(lambda d: d["status"] == "sent")
        assert sent["channel"] == "sms_gateway" and sent["fallback_of"] == failed["id"]
        assert sent["reference"] == "biz-1"
        (request,) = await gateway.wait(1)
        assert request["json"] == {"PhoneNumbers": PHONE, "Text": "告警"}
    finally:
        await hub.async_stop()
        sim.close()
        await gateway.stop()


async def test_wrong_number_goes_straight_to_next_channel(tmp_path: Path) -> None:
    gateway = Gateway()
    await gateway.start()
    hub, sim = await hub_with_modem(tmp_path, gateway)
    try:
        seen = Deliveries(hub)
        await hub.services.async_call("notify", "sms", {"target": ["12ab"], "message": "x"})
        failed = await seen.wait(lambda d: d["status"] == "failed" and d["channel"] == "sms")
        assert failed["attempts"] == 1 and "invalid phone number" in failed["reason"]
        again = await seen.wait(lambda d: d["status"] == "failed"
                                and d["channel"] == "sms_gateway")
        assert "invalid phone number" in again["reason"]
        assert gateway.requests == [] and sim.sent == []
    finally:
        await hub.async_stop()
        sim.close()
        await gateway.stop()


async def test_modem_gone_fails_over_to_gateway(tmp_path: Path) -> None:
    gateway = Gateway()
    await gateway.start()
    hub, sim = await hub_with_modem(tmp_path, gateway)
    try:
        await subscriber(hub)
        seen = Deliveries(hub)
        modem = hub.notify.notifiers["sms"].modem
        sim.vanish()
        await modem._lost.wait()
        alarm_id = await raise_alarm(hub)
        failed = await seen.wait(lambda d: d["status"] == "failed" and d["channel"] == "sms")
        assert "unavailable" in failed["reason"] or "port lost" in failed["reason"]
        sent = await seen.wait(lambda d: d["status"] == "sent")
        assert sent["channel"] == "sms_gateway" and sent["alarm_id"] == alarm_id
        (request,) = await gateway.wait(1)
        assert "剩余电流过大 550mA" in request["json"]["Text"]
    finally:
        await hub.async_stop()
        await gateway.stop()


async def test_gateway_500_then_success(tmp_path: Path) -> None:
    gateway = Gateway()
    await gateway.start()
    gateway.answers = [(500, {"Code": "ServiceUnavailable"})]
    from notify_sms_testkit import start_hub as start

    hub = await start(tmp_path, [gateway.entry()])
    try:
        seen = Deliveries(hub)
        await hub.services.async_call("notify", "sms_gateway",
                                      {"target": [PHONE], "message": "hello"})
        retry = await seen.wait(lambda d: d["status"] == "queued" and d["attempts"] == 1)
        assert retry["reason"].startswith("gateway HTTP 500")
        sent = await seen.wait(lambda d: d["status"] == "sent")
        assert sent["attempts"] == 2
        requests = await gateway.wait(2)
        assert requests[1]["headers"]["X-Key"] == f"k-{sent['id']}"
    finally:
        await hub.async_stop()
        await gateway.stop()


async def test_gateway_refusal_in_json_is_a_failure(tmp_path: Path) -> None:
    gateway = Gateway()
    await gateway.start()
    gateway.answers = [(200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL"})] * 2
    from notify_sms_testkit import start_hub as start

    hub = await start(tmp_path, [gateway.entry()])
    try:
        seen = Deliveries(hub)
        await hub.services.async_call("notify", "send", {"target": [PHONE], "message": "x"})
        failed = await seen.wait(lambda d: d["status"] == "failed")
        assert "MOBILE_NUMBER_ILLEGAL" in failed["reason"] and failed["attempts"] == 2
    finally:
        await hub.async_stop()
        await gateway.stop()


async def test_restart_resumes_queued_deliveries(tmp_path: Path) -> None:
    sim = ModemSimulator()
    path = sim.open()
    hub = await start_hub(tmp_path, [sms_entry(path, retry_backoff=3600.0)])
    try:
        await wait_modem(hub)
        seen = Deliveries(hub)
        sim.fail_next("silent")
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "later"})
        queued = await seen.wait(lambda d: d["status"] == "queued" and d["attempts"] == 1)
        assert "no answer" in queued["reason"]
    finally:
        await hub.async_stop()
    hub = await start_hub(tmp_path, [sms_entry(path)])
    try:
        (message,) = await sim.wait_sent(1)
        assert message.text == "later"
        seen = Deliveries(hub)
        row = await hub.notify.store.get_delivery(queued["id"])
        if row["status"] != "sent":
            row = await seen.wait(lambda d: d["id"] == queued["id"] and d["status"] == "sent")
        assert row["status"] == "sent"
    finally:
        await hub.async_stop()
        sim.close()
