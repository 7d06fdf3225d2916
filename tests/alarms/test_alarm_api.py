"""The alarm API over real sockets: auth, filters and their errors, acknowledge and handle one
or a batch with a note and who did it, clear, the event-log CSV, services and metrics."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientSession

from hub.core.context import Context

from .conftest import Recorder, fire, settle


async def _seed(hub: Any, recorder: Recorder) -> dict[str, int]:
    fire(hub, "arcm-1", "residual_current_high", value=550, unit="mA")
    fire(hub, "arcm-1", "temperature_high_1", value=45, unit="°C")
    fire(hub, "arcm-2", "communication_lost", detail="DTU dtu-1")
    fire(hub, "arcm-3", "probe_open_4")
    fire(hub, "arcm-3", "probe_open_4", False)
    fire(hub, "arcm-2", "tripped")
    raised = await recorder.wait_for("alarm_raised", 5)
    await settle(hub)
    return {f"{r['device_id']}/{r['type']}": r["id"] for r in raised}


async def _get(client: ClientSession, auth: dict[str, str], query: str = "") -> Any:
    async with client.get(f"/api/alarms{query}", headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_alarms_need_a_token(client: ClientSession) -> None:
    for method, path in [("GET", "/api/alarms"), ("GET", "/api/alarms.csv"),
                         ("POST", "/api/alarms/ack"), ("POST", "/api/alarms/1/ack")]:
        async with client.request(method, path) as resp:
            assert resp.status == 401, path
            assert (await resp.json())["status"] == 401


async def test_filters(hub: Any, recorder: Recorder, client: ClientSession,
                      auth: dict[str, str]) -> None:
    ids = await _seed(hub, recorder)
    everything = await _get(client, auth)
    assert len(everything) == 5
    fields = {"id", "kind", "type", "device_id", "entity_id", "project", "area", "location",
              "message", "value", "status", "started_at", "acked_at", "acked_by", "cleared_at"}
    assert fields <= set(everything[0])

    active = await _get(client, auth, "?status=active")
    assert {a["id"] for a in active} == {ids["arcm-1/residual_current_high"],
                                         ids["arcm-1/temperature_high_1"],
                                         ids["arcm-2/communication_lost"]}
    faults = await _get(client, auth, "?kind=fault")
    assert {a["type"] for a in faults} == {"communication_lost", "probe_open_4"}
    events = await _get(client, auth, "?kind=event")
    assert [(e["type"], e["message"], e["status"]) for e in events] == [
        ("tripped", "分闸", "cleared")]
    both = await _get(client, auth, "?kind=alarm,event&status=all")
    assert {a["kind"] for a in both} == {"alarm", "event"}
    # A project includes its sub-projects: arcm-1 hangs in school-1-a under school-1.
    school = await _get(client, auth, "?project=school-1")
    assert {a["device_id"] for a in school} == {"arcm-1", "arcm-2"}
    building = await _get(client, auth, "?project=school-1-a")
    assert {a["device_id"] for a in building} == {"arcm-1"}
    device = await _get(client, auth, "?device=arcm-3")
    assert [a["type"] for a in device] == ["probe_open_4"]
    assert (await _get(client, auth, "?device=arcm-3&status=active")) == []

    now = datetime.now(UTC)
    assert len(await _get(client, auth, f"?since={now.timestamp() - 60}")) == 5
    assert await _get(client, auth, f"?until={now.timestamp() - 3600}") == []
    iso_since = (now.replace(year=now.year - 1)).isoformat()
    assert len(await _get(client, auth, f"?since={iso_since}&limit=2")) == 2  # '+' unencoded
    async with client.get("/api/alarms", params={"since": iso_since, "kind": "fault"},
                          headers=auth) as resp:
        assert len(await resp.json()) == 2

    async with client.get(f"/api/alarms/{ids['arcm-2/communication_lost']}",
                          headers=auth) as resp:
        assert resp.status == 200
        one = await resp.json()
    assert one["message"] == "通讯中断：DTU dtu-1" and one["address"] == "gsm 860000000000001"
    async with client.get("/api/alarms/99999", headers=auth) as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?status=open", "expected active, cleared or all"),
        ("?kind=alarm,warning", "unknown value 'warning'"),
        ("?since=yesterday", "expected an ISO 8601 time"),
        ("?limit=0", "limit"),
        ("?since=200&until=100", "since must be before until"),
    ],
)
async def test_bad_filters_are_400_with_the_reason(
    client: ClientSession, auth: dict[str, str], query: str, reason: str
) -> None:
    async with client.get(f"/api/alarms{query}", headers=auth) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert reason in body["error"], body


async def test_batch_acknowledge_with_note_records_who_and_when(
    hub: Any, recorder: Recorder, client: ClientSession, auth: dict[str, str]
) -> None:
    ids = await _seed(hub, recorder)
    batch = [ids["arcm-1/residual_current_high"], ids["arcm-2/communication_lost"], 424242]
    async with client.post("/api/alarms/ack", json={"ids": batch, "note": "已通知电工"},
                           headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        result = await resp.json()
    assert sorted(r["id"] for r in result["done"]) == sorted(batch[:2])
    assert result["not_found"] == [424242] and result["unchanged"] == []
    for record in result["done"]:
        assert record["acked_by"] == "值班员" and record["note"] == "已通知电工"
        assert record["acknowledged"] and record["acked_at"].endswith("+00:00")
    acked = await recorder.wait_for("alarm_acknowledged", 2)
    assert {a["id"] for a in acked} == set(batch[:2])

    # The engine's copy knows it too, so its next write does not forget the acknowledgement.
    fire(hub, "arcm-1", "residual_current_high", value=551, unit="mA")
    fire(hub, "arcm-1", "residual_current_high", False)
    # (_seed already cleared probe_open_4: wait for this record's clearing, not any.)
    await recorder.wait_for("alarm_cleared", where=lambda d: d["type"] == "residual_current_high")
    rows = await _get(client, auth, "?acknowledged=true")
    assert {r["id"] for r in rows} == set(batch[:2])
    cleared = next(r for r in rows if r["type"] == "residual_current_high")
    assert cleared["status"] == "cleared" and cleared["acked_by"] == "值班员"

    # Acknowledging again keeps the first acknowledgement.
    async with client.post(f"/api/alarms/{batch[0]}/ack", json={"note": "again"},
                           headers=auth) as resp:
        assert resp.status == 200
        again = await resp.json()
    assert again["changed"] is False and again["note"] == "已通知电工"
    async with client.post("/api/alarms/ack", json={"ids": []}, headers=auth) as resp:
        assert resp.status == 400
    async with client.post("/api/alarms/ack", json={"ids": ["x"]}, headers=auth) as resp:
        assert resp.status == 400


async def test_single_ack_handle_and_clear(
    hub: Any, recorder: Recorder, client: ClientSession, auth: dict[str, str]
) -> None:
    ids = await _seed(hub, recorder)
    temp = ids["arcm-1/temperature_high_1"]
    async with client.post(f"/api/alarms/{temp}/ack", headers=auth) as resp:
        assert resp.status == 200
        record = await resp.json()
    assert record["changed"] and record["acked_by"] == "值班员" and record["note"] is None
    async with client.post("/api/alarms/handle",
                           json={"ids": [temp, ids["arcm-3/probe_open_4"]], "note": "更换探头"},
                           headers=auth) as resp:
        assert resp.status == 200
        handled = await resp.json()
    assert len(handled["done"]) == 2
    for record in handled["done"]:
        assert record["handled_by"] == "值班员" and record["note"] == "更换探头"
        assert record["acked_by"] == "值班员"
    assert len(await recorder.wait_for("alarm_handled", 2)) == 2

    async with client.post(f"/api/alarms/{temp}/clear", headers=auth) as resp:
        assert resp.status == 200
        record = await resp.json()
    # the detector still reports it: cleared when it lets go, unless forced
    assert record["status"] == "active" and record["reset_pending"]
    async with client.post(f"/api/alarms/{temp}/clear", json={"force": True},
                           headers=auth) as resp:
        assert resp.status == 200
        record = await resp.json()
    assert record["status"] == "cleared" and record["cleared_by"] == "值班员"
    async with client.post(f"/api/alarms/{temp}/clear", headers=auth) as resp:
        assert resp.status == 409
    async with client.post("/api/alarms/abc/ack", headers=auth) as resp:
        assert resp.status == 400
    async with client.post("/api/alarms/99999/ack", headers=auth) as resp:
        assert resp.status == 404


async def test_acknowledge_service_carries_the_context(hub: Any, recorder: Recorder) -> None:
    ids = await _seed(hub, recorder)
    target = ids["arcm-2/communication_lost"]
    context = Context(user_id="automation:夜班")
    answer = await hub.services.async_call(
        "alarm", "acknowledge", {"ids": [target], "note": "自动确认"}, context=context,
        return_response=True)
    assert answer["done"][0]["acked_by"] == "automation:夜班"
    acked = await recorder.wait_for("alarm_acknowledged")
    event = next(e for e in recorder.events if e.event_type == "alarm_acknowledged")
    assert acked[0]["id"] == target and event.context is context


async def test_event_log_csv(hub: Any, recorder: Recorder, client: ClientSession,
                             auth: dict[str, str]) -> None:
    ids = await _seed(hub, recorder)
    async with client.get("/api/alarms.csv?device=arcm-1,arcm-2", headers=auth) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in resp.headers["Content-Disposition"]
        raw = await resp.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(rows[0])[:9] == ["类型", "时间", "设备名称", "设备类型", "通讯地址", "探测器地址",
                                 "区域", "位置", "备注"]
    residual = next(r for r in rows if r["报警类型"] == "residual_current_high")
    assert residual["类型"] == "报警" and residual["备注"] == "剩余电流过大 550mA"
    assert residual["设备名称"] == "配电箱1" and residual["通讯地址"] == "modbus_tcp 127.0.0.1:5020"
    assert residual["探测器地址"] == "1" and residual["区域"] == "一层"
    assert residual["位置"] == "配电室" and residual["状态"] == "未恢复"
    # The hub's time zone (Asia/Shanghai), not UTC.
    started = hub.alarms.get_active("arcm-1", "residual_current_high").started_at
    shanghai = datetime.fromtimestamp(started, UTC).astimezone().tzinfo
    assert shanghai is not None
    from zoneinfo import ZoneInfo
    assert residual["时间"] == datetime.fromtimestamp(
        started, ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")
    comm = next(r for r in rows if r["报警类型"] == "communication_lost")
    assert comm["类型"] == "故障" and comm["通讯地址"] == "gsm 860000000000001"
    assert next(r for r in rows if r["报警类型"] == "tripped")["类型"] == "事件"
    assert {r["设备编号"] for r in rows} == {"arcm-1", "arcm-2"}

    async with client.get("/api/alarms.csv?lang=en&kind=fault", headers=auth) as resp:
        raw = await resp.read()
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(rows[0])[:3] == ["Kind", "Time", "Device name"]
    assert {r["Kind"] for r in rows} == {"Fault"}
    probe = next(r for r in rows if r["Type"] == "probe_open_4")
    assert probe["Remark"] == "Temperature probe 4 open" and probe["Status"] == "cleared"
    async with client.get("/api/alarms.csv?lang=fr", headers=auth) as resp:
        assert resp.status == 400
    assert ids


async def test_metrics_and_openapi(hub: Any, recorder: Recorder, client: ClientSession,
                                   auth: dict[str, str]) -> None:
    await _seed(hub, recorder)
    async with client.get("/metrics", headers=auth) as resp:
        text = await resp.text()
    assert 'voltwatch_alarms_active{kind="alarm"} 2' in text
    assert 'voltwatch_alarms_active{kind="fault"} 1' in text
    assert "voltwatch_alarms_raised_total 5" in text
    async with client.get("/api/openapi.json") as resp:
        paths = (await resp.json())["paths"]
    assert {"/api/alarms", "/api/alarms.csv", "/api/alarms/ack",
            "/api/alarms/{alarm_id}/ack"} <= set(paths)
    params = {p["name"] for p in paths["/api/alarms"]["get"]["parameters"]}
    assert {"status", "kind", "project", "device", "since", "until"} <= params
