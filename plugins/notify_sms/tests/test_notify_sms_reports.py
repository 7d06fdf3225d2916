"""Delivery reports (+CDS) and multi-part replies, over the real serial path (a pty whose
master is the simulated modem). Every wait is on an event or a record change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
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

from hub.http.tokens import create_token


async def test_alarm_sms_reaches_delivered_by_status_report(tmp_path: Path) -> None:
    hub, sim = await hub_with_modem(tmp_path)
    try:
        assert "AT+CNMI=2,1,0,1,0" in sim.commands
        await subscriber(hub)
        seen = Deliveries(hub)
        alarm_id = await raise_alarm(hub)
        (message,) = await sim.wait_sent(1)
        assert all(segment.status_report for segment in message.segments)
        done = await seen.wait(lambda d: d["status"] == "delivered")
        assert done["alarm_id"] == alarm_id and done["channel"] == "sms"
        assert done["reference"] == str(message.segments[0].mr) == done["reports"]
        row = await hub.notify.store.get_delivery(done["id"])
        assert row["status"] == "delivered"
        assert hub.notify.notifiers["sms"].modem.reports_received == 1
    finally:
        await hub.async_stop()
        sim.close()


async def test_long_message_is_delivered_only_when_every_segment_is(tmp_path: Path) -> None:
    hub, sim = await hub_with_modem(tmp_path)
    try:
        seen = Deliveries(hub)
        sim.report_next(0)
        sim.report_next(None)  # the second segment's report is late
        sim.report_next(0)
        text = "剩余电流过大" * 25  # 150 UCS2 characters: 3 segments
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": text})
        (message,) = await sim.wait_sent(1)
        assert len(message.segments) == 3
        await sim.wait_reports(2)
        first, second, third = (s.mr for s in message.segments)
        partial = await seen.wait(lambda d: (d["reports"] or "").count(",") == 1)
        assert partial["status"] == "sent"
        assert partial["reference"] == f"{first},{second},{third}"
        assert sorted(partial["reports"].split(",")) == sorted([str(first), str(third)])
        sim.emit_report(second, PHONE, 0)
        done = await seen.wait(lambda d: d["status"] == "delivered")
        assert done["id"] == partial["id"]
    finally:
        await hub.async_stop()
        sim.close()


async def test_failed_report_fails_the_record_and_tries_the_next_channel(tmp_path: Path
                                                                         ) -> None:
    gateway = Gateway()
    await gateway.start()
    hub, sim = await hub_with_modem(tmp_path, gateway)
    try:
        await subscriber(hub)
        seen = Deliveries(hub)
        sim.report_next(0x21)  # temporary: the network keeps trying
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "t"})
        (message,) = await sim.wait_sent(1)
        noted = await seen.wait(lambda d: d["status"] == "sent" and d["reason"])
        assert noted["reason"] == "delivery report: recipient busy (TP-ST 0x21)"
        sim.emit_report(message.segments[0].mr, PHONE, 0x41)  # gives up: incompatible
        failed = await seen.wait(lambda d: d["status"] == "failed")
        assert failed["id"] == noted["id"] and failed["channel"] == "sms"
        assert failed["reason"] == "delivery report: incompatible destination (TP-ST 0x41)"
        sent = await seen.wait(lambda d: d["status"] == "sent" and d["channel"] == "sms_gateway")
        assert sent["fallback_of"] == failed["id"]
        (request,) = await gateway.wait(1)
        assert request["json"]["Text"] == "t"
    finally:
        await hub.async_stop()
        sim.close()
        await gateway.stop()


async def test_unreadable_report_is_counted_and_changes_nothing(tmp_path: Path) -> None:
    hub, sim = await hub_with_modem(tmp_path)
    try:
        seen = Deliveries(hub)
        sim.report_next(None)
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "a"})
        first = await seen.wait(lambda d: d["status"] == "sent")
        sim.write_raw("\r\n+CDS: 9\r\nZZ01\r\n")  # not hex: counted, logged, dropped
        sim.write_raw("\r\n+CDS: 25\r\n0006\r\n")  # truncated
        # a report for a reference nobody sent is kept aside, not applied to anything
        sim.emit_report(200, "+8613999999999", 0)
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "b"})
        second = await seen.wait(lambda d: d["status"] == "delivered")
        modem = hub.notify.notifiers["sms"].modem
        assert modem.bad_reports == 2 and second["id"] != first["id"]
        assert (await hub.notify.store.get_delivery(first["id"]))["status"] == "sent"
    finally:
        await hub.async_stop()
        sim.close()


def _acks(hub: Any) -> Any:
    return events(hub, "alarm_acknowledged")


async def test_multipart_reply_out_of_order_is_reassembled_then_acknowledges(
        tmp_path: Path) -> None:
    hub, sim = await hub_with_modem(tmp_path)
    try:
        await subscriber(hub)
        replies = events(hub, "notification_reply")
        seen = Deliveries(hub)
        alarm_id = await raise_alarm(hub)
        await seen.wait(lambda d: d["status"] == "delivered")
        acked = _acks(hub)
        # "确认" in two UCS2 parts, 16-bit reference, second part first
        sim.inject_multipart(PHONE, ["确", "认"], order=[2, 1], ref16=True)
        await acked.wait(lambda d: d.get("id") == alarm_id)
        reply = await replies.wait(lambda r: True)
        assert reply["text"] == "确认" and reply["action"] == "acknowledged"
        modem = hub.notify.notifiers["sms"].modem
        assert len(modem.reassembler) == 0 and not sim.storage

        # GSM-7 parts with an 8-bit reference, three of them in a scrambled order
        second = await raise_alarm(hub, type_="over_voltage")
        await seen.wait(lambda d: d["status"] == "delivered" and d["alarm_id"] == second)
        sim.inject_multipart(PHONE, ["O", "", "K"], order=[3, 1, 2])
        await acked.wait(lambda d: d.get("id") == second)
        await replies.wait(lambda r: r["alarm_id"] == second)
        assert [r["text"] for r in replies.events] == ["确认", "OK"]
    finally:
        await hub.async_stop()
        sim.close()


async def test_incomplete_multipart_set_expires_with_a_counted_drop(tmp_path: Path) -> None:
    hub, sim = await hub_with_modem(tmp_path, multipart_timeout=0.05)
    try:
        await subscriber(hub)
        seen = Deliveries(hub)
        alarm_id = await raise_alarm(hub)
        await seen.wait(lambda d: d["status"] == "delivered")
        modem = hub.notify.notifiers["sms"].modem
        sim.inject_multipart(PHONE, ["确", "认", "!"], order=[1, 3])  # part 2 never comes
        await asyncio.wait_for(modem.multipart_dropped.wait(), 10)
        assert modem.reassembler.dropped == 1 and len(modem.reassembler) == 0
        rows = await hub.alarms.store.get_many([alarm_id])
        assert rows[0]["acked_at"] is None  # half a reply acknowledges nothing
        status = {n["name"]: n for n in hub.notify.status()}["sms"]
        assert status["details"]["multipart_dropped"] == 1
        # the modem goes on: a whole reply still acknowledges
        acked = _acks(hub)
        sim.inject_reply(PHONE, "1")
        await acked.wait(lambda d: d.get("id") == alarm_id)
    finally:
        await hub.async_stop()
        sim.close()


async def test_notifiers_endpoint_shows_health_errors_counts_and_queue(tmp_path: Path) -> None:

    sim = ModemSimulator()
    hub = await start_hub(tmp_path, [sms_entry(sim.open(), retry_backoff=3600.0)],
                          http={"port": 0})
    try:
        await wait_modem(hub)
        token = await create_token(hub.storage, "ops")
        url = f"{hub.http.url}/api/notifications/notifiers"
        seen = Deliveries(hub)
        sim.fail_next("cms:500")  # this one waits an hour for its retry: queue depth 1
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "x"})
        await seen.wait(lambda d: d["status"] == "queued" and d["attempts"] == 1)
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "y"})
        await seen.wait(lambda d: d["status"] == "delivered")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.get(url) as resp:
                assert resp.status == 200
                (sms,) = await resp.json()
            assert sms["name"] == "sms" and sms["platform"] == "sms"
            assert sms["healthy"] is True and sms["checked_at"]
            assert sms["last_error"] == "modem: +CMS ERROR: 500" and sms["last_error_at"]
            assert (sms["sent"], sms["failed"], sms["delivered"], sms["queue_depth"]) == (
                1, 0, 1, 1)
            assert sms["details"]["delivery_reports"] is True
            assert sms["details"]["reports_received"] == 1

            modem = hub.notify.notifiers["sms"].modem
            sim.vanish()
            await modem._lost.wait()
            async with http.get(url) as resp:
                (sms,) = await resp.json()
            assert sms["healthy"] is False and sms["available"] is False
            assert sms["last_error"].startswith("port lost")
    finally:
        await hub.async_stop()


async def test_modem_refusing_status_reports_still_sends(tmp_path: Path) -> None:
    sim = ModemSimulator()
    sim.refuse.add("AT+CNMI=2,1,0,1,0")
    hub = await start_hub(tmp_path, [sms_entry(sim.open())])
    try:
        await wait_modem(hub)
        assert sim.commands[-1] == "AT+CNMI=2,1,0,0,0"
        modem = hub.notify.notifiers["sms"].modem
        assert modem.reports_enabled is False
        seen = Deliveries(hub)
        await hub.services.async_call("notify", "sms", {"target": [PHONE], "message": "x"})
        sent = await seen.wait(lambda d: d["status"] == "sent")
        (message,) = await sim.wait_sent(1)
        assert not message.segments[0].status_report and sim.reports == []
        assert sent["reports"] is None
    finally:
        await hub.async_stop()
        sim.close()
