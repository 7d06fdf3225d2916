"""GET /api/history/{entity_id}: raw points and rollups, resolution by span, CSV, errors.

A real hub (SQLite), readings written through the state machine with their own timestamps and
committed by the real recorder; the API is called over the socket.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import ClientSession

ENTITY = "sensor.arcm_1_residual_current"
ZONE = ZoneInfo("Asia/Shanghai")  # the hub's default time zone


async def _get(client: ClientSession, auth: dict[str, str], query: str = "",
               entity: str = ENTITY) -> tuple[int, Any]:
    async with client.get(f"/api/history/{entity}{query}", headers=auth) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def _readings(hub: Any) -> tuple[float, list[tuple[float, float]]]:
    """Every 10 minutes for the last 3 days (values 0, 1, 2, …); returns (now, readings)."""
    now = time.time()
    start = now - 3 * 86400
    readings = [(start + i * 600, float(i)) for i in range(432)]
    for ts, value in readings:
        hub.states.async_set(ENTITY, value, {"unit_of_measurement": "mA"}, timestamp=ts)
    hub.states.async_set(ENTITY, "unavailable", timestamp=now - 1)
    await hub.recorder.async_flush()
    return now, readings


async def test_resolution_is_chosen_by_span(hub: Any, client: ClientSession,
                                            auth: dict[str, str]) -> None:
    now, _ = await _readings(hub)
    cases = [(3 * 3600, "raw"), (2 * 86400, "5m"), (30 * 86400, "1h"), (365 * 86400, "1d")]
    for span, resolution in cases:
        status, body = await _get(client, auth, f"?start={now - span}&end={now}")
        assert status == 200, body
        assert body["resolution"] == resolution, (span, body["resolution"])
        assert set(body) == {"entity_id", "resolution", "start", "end", "points"}
        assert body["entity_id"] == ENTITY
    # Raw readings are kept 30 days: an hour a week ago is still raw …
    status, body = await _get(client, auth, f"?start={now - 7 * 86400}&end={now - 7 * 86400 + 3600}")
    assert body["resolution"] == "raw"
    # … and a day three months ago comes from 5-minute rollups, raw being purged by then.
    status, body = await _get(client, auth, f"?start={now - 90 * 86400}&end={now - 89 * 86400}")
    assert body["resolution"] == "5m" and body["points"] == []


async def test_raw_points_carry_value_and_state(hub: Any, client: ClientSession,
                                                auth: dict[str, str]) -> None:
    now, readings = await _readings(hub)
    status, body = await _get(client, auth, f"?start={now - 3600}&end={now}&resolution=raw")
    assert status == 200
    points = body["points"]
    expected = [r for r in readings if r[0] >= now - 3600]
    assert [p["mean"] for p in points[:-1]] == [v for _, v in expected]
    first = points[0]
    assert first["min"] == first["max"] == first["last"] == first["mean"] and first["count"] == 1
    assert abs(datetime.fromisoformat(first["t"]).timestamp() - expected[0][0]) < 1e-5
    assert first["t"].endswith("+08:00")
    assert points[-1]["state"] == "unavailable" and points[-1]["mean"] is None


async def test_rollup_points_aggregate_their_bucket(hub: Any, client: ClientSession,
                                                    auth: dict[str, str]) -> None:
    now, readings = await _readings(hub)
    status, body = await _get(client, auth, f"?start={now - 4 * 86400}&end={now}&resolution=1h")
    assert status == 200 and body["resolution"] == "1h"
    by_hour: dict[float, list[float]] = {}
    for ts, value in readings:
        by_hour.setdefault(ts // 3600 * 3600, []).append(value)
    assert len(body["points"]) == len(by_hour)
    for point in body["points"]:
        values = by_hour[datetime.fromisoformat(point["t"]).timestamp()]
        assert point["count"] == len(values)
        assert point["min"] == min(values) and point["max"] == max(values)
        assert point["last"] == values[-1]
        assert abs(point["mean"] - sum(values) / len(values)) < 1e-9

    status, body = await _get(client, auth, f"?start={now - 10 * 86400}&end={now}&resolution=1d")
    days = [datetime.fromisoformat(p["t"]) for p in body["points"]]
    assert all(d.hour == 0 and d.minute == 0 and d.utcoffset().total_seconds() == 8 * 3600
               for d in days), "a day starts at local midnight"
    assert sum(p["count"] for p in body["points"]) == len(readings)


async def test_csv_export(hub: Any, client: ClientSession, auth: dict[str, str]) -> None:
    now, readings = await _readings(hub)
    async with client.get(f"/api/history/{ENTITY}?start={now - 86400}&end={now}"
                          "&resolution=5m&format=csv", headers=auth) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/csv")
        assert f"{ENTITY}_5m.csv" in resp.headers["Content-Disposition"]
        text = (await resp.read()).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["t", "mean", "min", "max", "last", "count", "state"]
    assert sum(int(row["count"]) for row in rows) == sum(
        1 for ts, _ in readings if ts >= (now - 86400) // 300 * 300)


async def test_errors_name_the_cause(hub: Any, client: ClientSession,
                                     auth: dict[str, str]) -> None:
    status, body = await _get(client, auth, entity="sensor.nothing_here")
    assert status == 404 and "sensor.nothing_here" in body["error"]
    status, body = await _get(client, auth, "?start=2026-01-02&end=2026-01-01")
    assert status == 400 and "start must be before end" in body["error"]
    status, body = await _get(client, auth, "?resolution=10m")
    assert status == 400 and "resolution" in body["error"]
    status, body = await _get(client, auth, "?start=yesterday")
    assert status == 400 and "start" in body["error"]
    async with client.get(f"/api/history/{ENTITY}") as resp:
        assert resp.status == 401
