"""GET /api/statistics checked against records created at known times: counts by kind, type,
project, device and local day, MTTA and MTTR, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import ClientSession

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.http import tokens

from .conftest import FakeClock, Recorder, hazard_config, install_clock, settle, start_hub

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    """A local (Asia/Shanghai) time as unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


async def _raise(hub: Any, recorder: Recorder, device_id: str, type_: str, when: float,
                 **kwargs: Any) -> dict[str, Any]:
    before = len(recorder.of("alarm_raised"))
    condition = Condition.create(device_id, type_, True, timestamp=when, **kwargs)
    hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
    record = (await recorder.wait_for("alarm_raised", before + 1))[-1]
    await settle(hub)
    return record


async def test_month_statistics(tmp_path: Path, db_url: str) -> None:
    hub = await start_hub(tmp_path, hazard_config(db_url))
    try:
        recorder = Recorder(hub, "alarm_raised")
        # arcm-1 is in school-1-a (under school-1), arcm-2 in school-1, arcm-3 in hospital-1
        first = await _raise(hub, recorder, "arcm-1", "residual_current_high",
                             at("2026-03-01T00:30:00"), value=550, unit="mA")  # UTC: Feb 28
        second = await _raise(hub, recorder, "arcm-1", "temperature_high_1",
                              at("2026-03-15T12:00:00"), value=85, unit="°C")
        fault = await _raise(hub, recorder, "arcm-2", "communication_lost",
                             at("2026-03-31T23:30:00"))  # UTC: still March 31
        await _raise(hub, recorder, "arcm-2", "tripped", at("2026-03-15T13:00:00"))
        await _raise(hub, recorder, "arcm-3", "probe_open_1", at("2026-03-20T08:00:00"))
        await _raise(hub, recorder, "arcm-3", "over_voltage", at("2026-04-01T00:10:00"))  # April
        await _raise(hub, recorder, "arcm-3", "smoke", at("2026-02-28T23:50:00"))  # February

        # acknowledged after 60 s, 300 s and 1200 s: MTTA 520 s over three
        for record, delay in ((first, 60), (second, 300), (fault, 1200)):
            hub.alarms.clock = lambda t=record["started_at"], d=delay: (
                datetime.fromisoformat(t).timestamp() + d)
            await hub.alarms.async_acknowledge([record["id"]])

        clock = FakeClock(at("2026-03-10T10:00:00"))
        install_clock(hub, clock)
        fixed, _ = await hub.workorders.async_create(alarm_id=first["id"], assignee="李")
        clock.advance(1800)
        await hub.workorders.async_update(fixed["id"], status="accepted")
        clock.advance(5400)  # repaired 2 h after it was opened
        await hub.workorders.async_update(fixed["id"], status="repaired")
        clock.now = at("2026-03-20T09:00:00")
        slow, _ = await hub.workorders.async_create(device_id="arcm-3", title="探头", assignee="王")
        await hub.workorders.async_update(slow["id"], status="accepted")
        clock.advance(4 * 3600)  # repaired after 4 h
        await hub.workorders.async_update(slow["id"], status="repaired")
        cancelled, _ = await hub.workorders.async_create(device_id="arcm-2", title="误报")
        await hub.workorders.async_update(cancelled["id"], status="closed", note="误报")
        clock.now = at("2026-04-02T09:00:00")
        await hub.workorders.async_create(device_id="arcm-2", title="四月", due_in=3600)

        token = await tokens.create_token(hub.storage, "统计")
        auth = {"Authorization": f"Bearer {token}"}
        async with ClientSession(base_url=hub.http.url) as client:
            async with client.get("/api/statistics?month=2026-03", headers=auth) as resp:
                report = await resp.json()
                assert resp.status == 200, report
            async with client.get("/api/statistics?month=2026-03&project=school-1",
                                  headers=auth) as resp:
                school = await resp.json()
            async with client.get("/api/statistics?month=2026-03&project=hospital-1&top=1",
                                  headers=auth) as resp:
                hospital = await resp.json()
            async with client.get("/api/statistics?month=2026-13", headers=auth) as resp:
                assert resp.status == 400
                assert "YYYY-MM" in (await resp.json())["error"]
            async with client.get("/api/statistics", headers=auth) as resp:
                assert resp.status == 200
                assert (await resp.json())["month"] == "2026-04"  # the clock's month
    finally:
        await hub.async_stop()

    assert report["month"] == "2026-03" and report["time_zone"] == "Asia/Shanghai"
    assert report["since"] == "2026-02-28T16:00:00+00:00"
    assert report["until"] == "2026-03-31T16:00:00+00:00"
    assert report["totals"] == {"alarm": 2, "fault": 2, "event": 1, "total": 5}
    assert {(r["kind"], r["type"]): r["count"] for r in report["by_type"]} == {
        ("alarm", "residual_current_high"): 1, ("alarm", "temperature_high_1"): 1,
        ("fault", "communication_lost"): 1, ("fault", "probe_open_1"): 1,
        ("event", "tripped"): 1}
    assert {r["project"]: (r["alarm"], r["fault"], r["event"], r["total"])
            for r in report["by_project"]} == {
        "school-1-a": (2, 0, 0, 2), "school-1": (0, 1, 1, 2), "hospital-1": (0, 1, 0, 1)}
    assert [(d["device_id"], d["total"]) for d in report["by_device"]] == [
        ("arcm-1", 2), ("arcm-2", 2), ("arcm-3", 1)]
    assert report["by_device"][0]["device_name"] == "配电箱1"
    daily = {d["date"]: (d["alarm"], d["fault"], d["event"]) for d in report["daily"]}
    assert len(report["daily"]) == 31
    assert daily["2026-03-01"] == (1, 0, 0)  # 00:30 local, though still Feb 28 in UTC
    assert daily["2026-03-15"] == (1, 0, 1)
    assert daily["2026-03-20"] == (0, 1, 0)
    assert daily["2026-03-31"] == (0, 1, 0)
    assert sum(sum(v) for v in daily.values()) == 5
    assert report["mtta"]["count"] == 3 and report["mtta"]["seconds"] == 520.0
    assert report["mtta"]["by_kind"] == {"alarm": {"seconds": 180.0, "count": 2},
                                         "fault": {"seconds": 1200.0, "count": 1}}
    assert report["mttr"] == {"seconds": 3 * 3600.0, "count": 2}  # (2 h + 4 h) / 2
    assert report["workorders"]["created"] == 3
    assert report["workorders"]["by_status"] == {"repaired": 2, "closed": 1}

    assert school["totals"] == {"alarm": 2, "fault": 1, "event": 1, "total": 4}
    assert school["mtta"]["count"] == 3 and school["mttr"]["count"] == 1
    assert hospital["totals"] == {"alarm": 0, "fault": 1, "event": 0, "total": 1}
    assert hospital["mttr"] == {"seconds": 4 * 3600.0, "count": 1}
    assert hospital["mtta"] == {"seconds": None, "count": 0, "by_kind": {}}
    assert len(hospital["by_device"]) == 1
