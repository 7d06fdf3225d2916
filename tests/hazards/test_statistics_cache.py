"""The home page's statistics are cached, yet never stale: every alarm, acknowledgement and
work order shows in the next answer, and time alone turns a work order overdue."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession

from .conftest import FakeClock, Recorder, install_clock, raise_alarm


async def _report(client: ClientSession, auth: dict[str, str]) -> dict[str, Any]:
    async with client.get("/api/statistics", headers=auth) as response:
        body = await response.json()
        assert response.status == 200, body
        return body


async def test_cached_statistics_follow_every_change(hub: Any, client: ClientSession,
                                                     auth: dict[str, str],
                                                     recorder: Recorder) -> None:
    clock = FakeClock(hub.statistics.clock())
    install_clock(hub, clock)
    hub.alarms.clock = clock
    first = await _report(client, auth)
    assert first["totals"]["alarm"] == 0 and first["workorders"]["created"] == 0
    misses = hub.statistics.misses
    assert await _report(client, auth) == first
    assert hub.statistics.misses == misses  # nothing changed: served from the cache

    record = await raise_alarm(hub, recorder, "arcm-1", timestamp=clock.now)
    report = await _report(client, auth)
    assert report["totals"]["alarm"] == 1
    assert report["by_device"][0]["device_id"] == "arcm-1"

    clock.advance(30)
    await hub.alarms.async_acknowledge([record["id"]])
    report = await _report(client, auth)
    assert report["mtta"]["count"] == 1 and report["mtta"]["seconds"] == 30

    await hub.workorders.async_create(alarm_id=record["id"], assignee="李", due_in=60)
    report = await _report(client, auth)
    assert report["workorders"]["created"] == 1 and report["workorders"]["overdue_now"] == 0
    clock.advance(120)  # no event: the order is overdue by time alone
    report = await _report(client, auth)
    assert report["workorders"]["overdue_now"] == 1
