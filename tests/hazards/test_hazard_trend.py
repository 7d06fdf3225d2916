"""Hazard analysis: a rising daily peak forecast to reach its setpoint raises 隐患预警, once.

A real hub: two weeks of hourly readings written through the state machine with their own
timestamps, committed by the real recorder with their rollups; the analyzer reads the daily
rollups, and the warning becomes an event record through the real alarm engine.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from hub.core.hazard_analysis import HazardAnalyzer, fit_trend
from hub.storage.alarm_store import AlarmQuery
from hub.storage.rollups import DayStarts

RISING = "sensor.arcm_1_residual_current"
FLAT = "sensor.arcm_1_temperature_1"
NOISY = "sensor.arcm_3_residual_current"


def test_fit_trend_is_least_squares() -> None:
    points = [(i * 86400.0, 10 + 2.0 * i) for i in range(10)]
    slope, last, r2 = fit_trend(points)  # type: ignore[misc]
    assert abs(slope - 2.0) < 1e-9 and abs(last - 28.0) < 1e-9 and abs(r2 - 1.0) < 1e-9
    assert fit_trend(points[:1]) is None


async def _history(hub: Any, now: float) -> None:
    today = DayStarts(hub.recorder.reader.zone)(now)
    for day in range(14, 0, -1):
        start = today - day * 86400
        index = 14 - day
        for hour in range(24):
            ts = start + hour * 3600 + 60
            wave = (hour % 12) * 2.0  # the load cycle; each day's peak is its base + 22
            hub.states.async_set(RISING, 100 + 10 * index + wave, {"device_id": "arcm-1"},
                                 timestamp=ts)
            hub.states.async_set(FLAT, 40 + wave / 10, {"device_id": "arcm-1"}, timestamp=ts)
            zigzag = 150 + (60 if index % 2 else 0) + index + wave
            hub.states.async_set(NOISY, zigzag, {"device_id": "arcm-3"}, timestamp=ts)
    await hub.recorder.async_flush()


async def _warnings(hub: Any) -> list[dict[str, Any]]:
    await hub.alarms.async_flush()
    return await hub.alarms.store.query(AlarmQuery(types=["hazard_warning"]))


async def test_rising_peak_warns_once_with_its_evidence(hub: Any) -> None:
    now = time.time()
    await _history(hub, now)

    fired = await hub.hazard_analysis.analyse(now=now)
    assert [c.entity_id for c in fired] == [RISING]
    records = await _warnings(hub)
    assert len(records) == 1
    record = records[0]
    assert record["kind"] == "event" and record["device_id"] == "arcm-1"
    assert record["entity_id"] == RISING
    # peaks 122, 132, … 252 over 14 complete days: +10 mA/day, 300 mA in about 5 days
    assert "剩余电流日峰值近14天持续上升 +10.0mA/天" in record["message"], record["message"]
    assert "预计约5天后达到报警设定值300mA" in record["message"]
    assert "expected to reach the alarm setpoint 300mA in about 5 days" in record["message_en"]

    assert await hub.hazard_analysis.analyse(now=now + 3600) == [], "not again within 7 days"
    # A restart: the new analyzer learns the earlier warning from the event records.
    again = HazardAnalyzer(hub, {}, hub.hazard_analysis.peaks, hub.hazard_analysis.recent)
    assert await again.analyse(now=now + 7200) == []
    assert len(await _warnings(hub)) == 1


STEPPED = "sensor.arcm_2_residual_current"
STEADY = "sensor.arcm_2_temperature_2"


async def test_a_step_against_the_daily_load_profile_warns(hub: Any) -> None:
    """Eight days of a daily load cycle; the last three hours jump 90 mA above their hours."""
    now = time.time()
    last = (now // 3600) * 3600 - 3600  # the last complete hour
    hours = [last - 3600 * k for k in range(8 * 24, -1, -1)]
    for n, start in enumerate(hours):
        local_hour = datetime.fromtimestamp(start, hub.recorder.reader.zone).hour
        profile = 40 + (20 if 8 <= local_hour < 20 else 0) + (n * 7 % 5)  # day load, jitter
        jump = 90 if start > last - 3 * 3600 else 0
        hub.states.async_set(STEPPED, profile + jump, {"device_id": "arcm-2"},
                             timestamp=start + 60)
        hub.states.async_set(STEADY, 30 + profile / 10, {"device_id": "arcm-2"},
                             timestamp=start + 60)
    await hub.recorder.async_flush()

    fired = await hub.hazard_analysis.analyse(now=now)
    assert [c.entity_id for c in fired] == [STEPPED]
    message = (await _warnings(hub))[0]["message"]
    assert "剩余电流近3小时较同时段基线突升 +" in message, message
    rise = float(message.split("突升 +")[1].split("mA")[0])
    assert 85 <= rise <= 95, message


NIGHT = "sensor.arcm_3_residual_current"
NIGHT_LOAD = "sensor.arcm_3_current_a"


async def test_leakage_rising_at_night_with_low_load_warns(hub: Any) -> None:
    """Day leakage flat at 100 mA; night leakage 20 → 59 mA over 14 nights at 1 A of load."""
    now = time.time()
    zone = hub.recorder.reader.zone
    today = DayStarts(zone)(now)
    for day in range(14, 0, -1):
        start = today - day * 86400
        for hour in range(24):
            ts = start + hour * 3600 + 60
            local = datetime.fromtimestamp(ts, zone).hour
            night = local < 5
            leak = 20 + 3 * (14 - day) + hour * 0.01 if night else 100 + hour * 0.01
            load = 1.0 + hour * 0.001 if night else 8.0 + hour * 0.001
            hub.states.async_set(NIGHT, leak, {"device_id": "arcm-3"}, timestamp=ts)
            hub.states.async_set(NIGHT_LOAD, load, {"device_id": "arcm-3"}, timestamp=ts)
    await hub.recorder.async_flush()

    fired = await hub.hazard_analysis.analyse(now=now)
    assert [c.entity_id for c in fired] == [NIGHT]
    message = (await _warnings(hub))[0]["message"]
    # 13 or 14 nights: the 14-day window ends now, so the oldest night is in it before 5 a.m.
    assert re.search(r"夜间低负载时段（负载约1\.0A，白天约8\.0A）剩余电流近1[34]夜持续上升 "
                     r"\+3\.0mA/夜（现约59\.0mA）", message), message
