"""Work orders over real HTTP: the lifecycle with who and when, illegal transitions refused
with the reason, opening one from an alarm (API and service, no duplicates), comments,
filters, and repairing an order marking its alarm handled."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession

from .conftest import FakeClock, Recorder, raise_alarm


async def _post(client: ClientSession, auth: dict[str, str], path: str, body: Any,
                status: int = 201) -> Any:
    async with client.post(path, json=body, headers=auth) as resp:
        data = await resp.json()
        assert resp.status == status, data
        return data


async def _patch(client: ClientSession, auth: dict[str, str], order_id: int, body: Any,
                 status: int = 200) -> Any:
    async with client.patch(f"/api/workorders/{order_id}", json=body, headers=auth) as resp:
        data = await resp.json()
        assert resp.status == status, data
        return data


async def _get(client: ClientSession, auth: dict[str, str], path: str) -> Any:
    async with client.get(path, headers=auth) as resp:
        data = await resp.json()
        assert resp.status == 200, data
        return data


async def test_workorders_need_a_token(client: ClientSession) -> None:
    for method, path in [("GET", "/api/workorders"), ("POST", "/api/workorders"),
                         ("PATCH", "/api/workorders/1"), ("POST", "/api/workorders/1/photos"),
                         ("GET", "/api/statistics"), ("GET", "/api/patrols")]:
        async with client.request(method, path) as resp:
            assert resp.status == 401, path


async def test_lifecycle_with_history_and_illegal_transitions(
        hub: Any, clock: FakeClock, recorder: Recorder, client: ClientSession,
        auth: dict[str, str]) -> None:
    order = await _post(client, auth, "/api/workorders",
                        {"device_id": "arcm-2", "title": "更换剩余电流互感器", "due": "4h",
                         "priority": "high"})
    assert order["created"] is True
    assert order["status"] == "created" and order["project"] == "school-1"
    assert order["created_by"] == "值班员" and order["priority"] == "high"
    assert order["allowed"] == ["dispatched", "closed"]
    order_id = order["id"]
    created_at = clock.now
    assert order["due_at"] is not None

    # created -> repaired is not a step of the lifecycle: 409 with the reason
    refused = await _patch(client, auth, order_id, {"status": "repaired"}, status=409)
    assert "cannot go from created to repaired" in refused["error"]
    # dispatching needs someone to dispatch to
    refused = await _patch(client, auth, order_id, {"status": "dispatched"}, status=409)
    assert "no assignee" in refused["error"]
    # an unknown status is a 400 from the schema
    await _patch(client, auth, order_id, {"status": "done"}, status=400)

    clock.advance(60)
    dispatched = await _patch(client, auth, order_id, {"assignee": "李师傅"})
    assert dispatched["status"] == "dispatched" and dispatched["assignee"] == "李师傅"
    clock.advance(120)
    accepted = await _patch(client, auth, order_id, {"status": "accepted", "note": "马上到"})
    assert accepted["status"] == "accepted"
    refused = await _patch(client, auth, order_id, {"status": "verified"}, status=409)
    assert "cannot go from accepted to verified" in refused["error"]
    clock.advance(3600)
    repaired = await _patch(client, auth, order_id, {"status": "repaired", "note": "已更换"})
    assert repaired["status"] == "repaired"
    clock.advance(60)
    verified = await _patch(client, auth, order_id, {"status": "verified"})
    closed = await _patch(client, auth, order_id, {"status": "closed"})
    assert verified["status"] == "verified"
    assert closed["status"] == "closed" and closed["resolution"] == "repaired"
    assert closed["allowed"] == []
    refused = await _patch(client, auth, order_id, {"status": "accepted"}, status=409)
    assert "cannot go from closed to accepted" in refused["error"]

    detail = await _get(client, auth, f"/api/workorders/{order_id}")
    steps = [(e["action"], e["from_status"], e["to_status"]) for e in detail["history"]]
    assert steps == [
        ("created", None, "created"),
        ("assigned", None, None),
        ("transition", "created", "dispatched"),
        ("transition", "dispatched", "accepted"),
        ("transition", "accepted", "repaired"),
        ("transition", "repaired", "verified"),
        ("transition", "verified", "closed"),
    ]
    assert {e["user"] for e in detail["history"]} == {"值班员"}
    notes = {e["to_status"]: e["note"] for e in detail["history"] if e["action"] == "transition"}
    assert notes["accepted"] == "马上到" and notes["repaired"] == "已更换"
    from datetime import datetime

    def ts(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    assert ts(detail["created_at"]) == created_at
    assert ts(detail["dispatched_at"]) == created_at + 60
    assert ts(detail["accepted_at"]) == created_at + 180
    assert ts(detail["repaired_at"]) == created_at + 3780

    updates = recorder.of("workorder_updated")
    assert [u["to_status"] for u in updates if "transition" in u["actions"]] == [
        "dispatched", "accepted", "repaired", "verified", "closed"]
    assert recorder.of("workorder_created")[0]["workorder"]["id"] == order_id


async def test_cancel_needs_a_note_and_rework_goes_back(
        hub: Any, clock: FakeClock, client: ClientSession, auth: dict[str, str]) -> None:
    order = await _post(client, auth, "/api/workorders",
                        {"title": "配电室门锁损坏", "assignee": "王工"})
    assert order["status"] == "dispatched"  # an assignee at creation dispatches it
    refused = await _patch(client, auth, order["id"], {"status": "closed"}, status=400)
    assert "note" in refused["error"]
    cancelled = await _patch(client, auth, order["id"],
                             {"status": "closed", "note": "重复工单"})
    assert cancelled["resolution"] == "cancelled"

    other = await _post(client, auth, "/api/workorders", {"title": "温度探头松动",
                                                          "assignee": "王工"})
    await _patch(client, auth, other["id"], {"status": "accepted"})
    await _patch(client, auth, other["id"], {"status": "repaired"})
    rework = await _patch(client, auth, other["id"], {"status": "accepted",
                                                     "note": "复查仍有告警"})
    assert rework["status"] == "accepted" and rework["repaired_at"] is None
    # a new assignee on an accepted order sends it back to dispatched
    handed = await _patch(client, auth, other["id"], {"assignee": "赵工"})
    assert handed["status"] == "dispatched" and handed["assignee"] == "赵工"
    refused = await _patch(client, auth, other["id"], {"assignee": None}, status=409)
    assert "assignee" in refused["error"]

    comment = await _post(client, auth, f"/api/workorders/{other['id']}/comments",
                          {"text": "需要带梯子"})
    assert comment["action"] == "comment" and comment["user"] == "值班员"
    detail = await _get(client, auth, f"/api/workorders/{other['id']}")
    assert [c["note"] for c in detail["comments"]] == ["需要带梯子"]


async def test_from_an_alarm_by_api_and_by_service_without_duplicates(
        hub: Any, clock: FakeClock, recorder: Recorder, client: ClientSession,
        auth: dict[str, str]) -> None:
    alarm = await raise_alarm(hub, recorder)
    order = await _post(client, auth, "/api/workorders", {"alarm_id": alarm["id"]})
    assert order["alarm_id"] == alarm["id"]
    assert order["device_id"] == "arcm-1" and order["project"] == "school-1-a"
    assert order["title"] == "剩余电流过大 550mA"
    assert "配电箱1" in order["description"]
    again = await _post(client, auth, "/api/workorders", {"alarm_id": alarm["id"]}, status=200)
    assert again["created"] is False and again["id"] == order["id"]

    # an automation's service call gets the same open order, not a second one
    async with client.post("/api/services/workorder/create",
                           json={"alarm_id": alarm["id"], "assignee": "李师傅", "due": "2h"},
                           headers=auth) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    assert answer["response"]["id"] == order["id"]
    assert answer["response"]["created"] is False

    other = await raise_alarm(hub, recorder, "arcm-2", "temperature_high_1", value=85,
                              unit="°C")
    created = await hub.services.async_call(
        "workorder", "create", {"alarm_id": other["id"], "assignee": "李师傅", "due": "2h"})
    assert created["created"] is True and created["status"] == "dispatched"
    assert created["source"] == "automation" and created["alarm_id"] == other["id"]
    assert created["title"] == "温度1过大 85.0°C"

    missing = await _post(client, auth, "/api/workorders", {"alarm_id": 99999}, status=404)
    assert "Alarm 99999 not found" in missing["error"]
    unknown = await _post(client, auth, "/api/workorders", {"device_id": "nope"}, status=404)
    assert "Device nope not found" in unknown["error"]
    await _post(client, auth, "/api/workorders", {"alarm_id": 1, "device_id": "arcm-1"},
                status=400)

    listed = await _get(client, auth, f"/api/workorders?alarm_id={alarm['id']}")
    assert [o["id"] for o in listed] == [order["id"]]


async def test_repair_marks_the_alarm_handled(
        hub: Any, clock: FakeClock, recorder: Recorder, client: ClientSession,
        auth: dict[str, str]) -> None:
    alarm = await raise_alarm(hub, recorder)
    order = await _post(client, auth, "/api/workorders",
                        {"alarm_id": alarm["id"], "assignee": "李师傅"})
    await _patch(client, auth, order["id"], {"status": "accepted"})
    await _patch(client, auth, order["id"], {"status": "repaired"})
    handled = await recorder.wait_for("alarm_handled")
    assert handled[0]["id"] == alarm["id"]
    assert handled[0]["handled_by"] == "值班员"
    assert f"#{order['id']}" in handled[0]["note"]


async def test_filters(hub: Any, clock: FakeClock, client: ClientSession,
                       auth: dict[str, str]) -> None:
    late = await _post(client, auth, "/api/workorders",
                       {"device_id": "arcm-1", "title": "A", "assignee": "李", "due": "1h"})
    soon = await _post(client, auth, "/api/workorders",
                       {"device_id": "arcm-3", "title": "B", "due": "1d"})
    clock.advance(2 * 3600)
    overdue = await _get(client, auth, "/api/workorders?overdue=true")
    assert [o["id"] for o in overdue] == [late["id"]] and overdue[0]["overdue"] is True
    assert [o["id"] for o in await _get(client, auth, "/api/workorders?overdue=false")] == [
        soon["id"]]
    assert [o["id"] for o in await _get(client, auth, "/api/workorders?project=school-1")] == [
        late["id"]]  # arcm-1 is in school-1-a, a sub-project
    assert [o["id"] for o in await _get(client, auth, "/api/workorders?assignee=李")] == [
        late["id"]]
    assert [o["id"] for o in await _get(client, auth, "/api/workorders?device=arcm-3")] == [
        soon["id"]]
    assert len(await _get(client, auth, "/api/workorders?status=open")) == 2
    assert await _get(client, auth, "/api/workorders?status=closed") == []
    async with client.get("/api/workorders?status=nope", headers=auth) as resp:
        assert resp.status == 400
        assert "unknown value 'nope'" in (await resp.json())["error"]


async def test_handled_alarm_opens_an_order_only_when_configured(
        tmp_path: Any, client: ClientSession, auth: dict[str, str], hub: Any,
        recorder: Recorder) -> None:
    from .conftest import hazard_config, start_hub

    # the default hub: handling an alarm does nothing to work orders
    alarm = await raise_alarm(hub, recorder)
    await _post(client, auth, f"/api/alarms/{alarm['id']}/handle", {"note": "已处理"},
                status=200)
    assert await hub.workorders.store.any_for_alarm(alarm["id"]) is False

    other = await start_hub(tmp_path / "other", hazard_config(
        workorders={"on_alarm_handled": "create"}))
    try:
        events = Recorder(other, "alarm_raised", "alarm_handled", "workorder_created")
        record = await raise_alarm(other, events)
        await other.alarms.async_handle([record["id"]], "现场已断电")
        created = await events.wait_for("workorder_created")
        order = created[0]["workorder"]
        assert order["alarm_id"] == record["id"] and order["source"] == "alarm"
        # a second handling (already handled) does not open another
        await other.alarms.async_handle([record["id"]], "again")
        await other.bus.async_drain()
        assert len(events.of("workorder_created")) == 1
    finally:
        await other.async_stop()
