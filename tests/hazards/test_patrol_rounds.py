"""Patrols: templates over HTTP, rounds generated when due and never twice (also across
restarts and concurrent generators), completion with per-item results where a failed item
opens a linked work order, overdue rounds reminded, and the local-calendar arithmetic."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import ClientSession

from hub.core.patrols import latest_index, occurrence
from hub.http import tokens

from .conftest import FakeClock, hazard_config, patch_clocks, start_hub

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str, zone: ZoneInfo = SHANGHAI) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


async def _call(client: ClientSession, auth: dict[str, str], method: str, path: str,
                body: Any = None, status: int = 200) -> Any:
    async with client.request(method, path, json=body, headers=auth) as resp:
        data = await resp.json()
        assert resp.status == status, data
        return data


TEMPLATE = {
    "name": "配电室日常巡检", "project": "school-1", "period": "daily",
    "start_at": "2026-03-01T08:00:00+08:00", "allowed": "4h", "assignee": "巡检员张",
    "items": ["柜门关闭", {"name": "电缆温度", "device_id": "arcm-2"}, "灭火器在位"],
}


async def test_generation_survives_restarts_without_duplicates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(at("2026-03-05T10:00:00"))
    patch_clocks(monkeypatch, clock)
    hub = await start_hub(tmp_path, hazard_config())
    try:
        token = await tokens.create_token(hub.storage, "主管")
        auth = {"Authorization": f"Bearer {token}"}
        async with ClientSession(base_url=hub.http.url) as client:
            template = await _call(client, auth, "POST", "/api/patrols/templates", TEMPLATE,
                                   status=201)
            assert template["items"][1] == {"name": "电缆温度", "device_id": "arcm-2"}
            assert template["next_due_at"] == "2026-03-06T00:00:00+00:00"  # 08:00 local
            rounds = await _call(client, auth, "GET", "/api/patrols")
            listed = await _call(client, auth, "GET", "/api/patrols/templates?project=school-1")
            assert [t["id"] for t in listed] == [template["id"]]
            bad = await _call(client, auth, "POST", "/api/patrols/templates",
                              {**TEMPLATE, "period": "interval"}, status=400)
            assert "interval" in bad["error"]
        # the hub was "down" since March 1: only the current round is generated
        assert len(rounds) == 1
        assert rounds[0]["scheduled_at"] == "2026-03-05T00:00:00+00:00"
        assert rounds[0]["due_at"] == "2026-03-05T04:00:00+00:00"
        assert rounds[0]["assignee"] == "巡检员张" and rounds[0]["status"] == "pending"
        assert rounds[0]["overdue"] is False
        # two generators at once (a timer and an API call) still make nothing twice
        await asyncio.gather(*(hub.patrols.async_generate() for _ in range(5)))
    finally:
        await hub.async_stop()

    for _restart in range(2):  # restarts on the same day: nothing new
        hub = await start_hub(tmp_path, hazard_config())
        await hub.async_stop()

    clock.now = at("2026-03-06T08:00:00")  # the next round is due
    for _restart in range(2):
        hub = await start_hub(tmp_path, hazard_config())
        try:
            await hub.patrols.async_generate()
            rows = await hub.patrols.store.instances(_query())
        finally:
            await hub.async_stop()
        assert [r["scheduled_at"] for r in rows] == [at("2026-03-06T08:00:00"),
                                                     at("2026-03-05T08:00:00")]


def _query() -> Any:
    from hub.storage.patrol_store import PatrolQuery

    return PatrolQuery()


async def test_completion_opens_work_orders_for_failed_items(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(at("2026-03-05T09:00:00"))
    patch_clocks(monkeypatch, clock)
    hub = await start_hub(tmp_path, hazard_config())
    try:
        token = await tokens.create_token(hub.storage, "巡检员张")
        auth = {"Authorization": f"Bearer {token}"}
        async with ClientSession(base_url=hub.http.url) as client:
            await _call(client, auth, "POST", "/api/patrols/templates", TEMPLATE, status=201)
            round_ = (await _call(client, auth, "GET", "/api/patrols?status=pending"))[0]
            path = f"/api/patrols/{round_['id']}/complete"
            missing = await _call(client, auth, "POST", path,
                                  {"results": [{"item": "柜门关闭", "ok": True}]}, status=400)
            assert "no result for: 电缆温度, 灭火器在位" in missing["error"]
            unknown = await _call(client, auth, "POST", path,
                                  {"results": [{"item": "屋顶", "ok": True}]}, status=400)
            assert "unknown checklist item '屋顶'" in unknown["error"]
            done = await _call(client, auth, "POST", path, {"results": [
                {"item": "柜门关闭", "ok": True},
                {"item": 1, "ok": False, "note": "电缆接头发烫 70°C"},
                {"item": "灭火器在位", "ok": False, "note": "灭火器过期"},
            ]})
            assert done["status"] == "completed" and done["completed_by"] == "巡检员张"
            assert done["failed_count"] == 2 and done["late"] is False
            orders = done["workorders"]
            assert [o["patrol_item"] for o in orders] == ["电缆温度", "灭火器在位"]
            assert all(o["patrol_id"] == round_["id"] and o["source"] == "patrol"
                       for o in orders)
            assert orders[0]["device_id"] == "arcm-2" and orders[0]["project"] == "school-1"
            assert orders[0]["title"] == "巡检不合格：电缆温度（配电室日常巡检）"
            assert orders[0]["description"] == "电缆接头发烫 70°C"
            linked = await _call(client, auth, "GET",
                                 f"/api/workorders?patrol_id={round_['id']}")
            assert sorted(o["id"] for o in linked) == sorted(o["id"] for o in orders)
            shown = await _call(client, auth, "GET", f"/api/patrols/{round_['id']}")
            assert [r.get("workorder_id") for r in shown["results"]] == [
                None, orders[0]["id"], orders[1]["id"]]
            again = await _call(client, auth, "POST", path,
                                {"results": [{"item": 0, "ok": True}]}, status=409)
            assert "already completed" in again["error"]
    finally:
        await hub.async_stop()


async def test_overdue_round_is_reminded_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(at("2026-03-05T09:00:00"))
    patch_clocks(monkeypatch, clock)
    hub = await start_hub(tmp_path, hazard_config())
    try:
        template = await hub.patrols.async_create_template(
            {**TEMPLATE, "start_at": at("2026-03-01T08:00:00"), "allowed": 4 * 3600.0})
        rows = await hub.patrols.store.instances(_query())
        clock.now = at("2026-03-05T11:59:00")
        assert await hub.reminders.async_check() == []
        clock.now = at("2026-03-05T12:01:00")
        fired = await hub.reminders.async_check()
        assert [(f["reason"], f["project"], f["ids"]) for f in fired] == [
            ("patrol_overdue", "school-1", [rows[0]["id"]])]
        assert fired[0]["message"] == "1 个巡检任务已超期"
        assert await hub.reminders.async_check() == []
        assert template["enabled"] is True
    finally:
        await hub.async_stop()


def test_rounds_follow_the_local_calendar() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    daily = {"start_at": at("2026-03-27T09:00:00", berlin), "period": "daily"}
    # 09:00 local on both sides of the DST change of 2026-03-29
    assert occurrence(daily, 3, berlin) == at("2026-03-30T09:00:00", berlin)
    assert occurrence(daily, 2, berlin) - occurrence(daily, 1, berlin) == 23 * 3600
    monthly = {"start_at": at("2026-01-31T10:00:00"), "period": "monthly"}
    assert [datetime.fromtimestamp(occurrence(monthly, k, SHANGHAI), SHANGHAI).date().isoformat()
            for k in range(4)] == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]
    assert latest_index(monthly, at("2026-03-31T09:59:59"), SHANGHAI) == 1
    assert latest_index(monthly, at("2026-03-31T10:00:00"), SHANGHAI) == 2
    assert latest_index(monthly, at("2026-01-01T00:00:00"), SHANGHAI) == -1
    every = {"start_at": 1000.0, "period": "interval", "interval": 8 * 3600.0}
    assert latest_index(every, 1000.0 + 8 * 3600 * 100 + 5, SHANGHAI) == 100
