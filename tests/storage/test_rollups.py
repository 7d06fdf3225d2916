"""Rollups (5 min, 1 h, 1 day) written by the recorder with each batch, on SQLite and PostgreSQL.

The expected aggregates are computed here from the readings the test wrote, independently of
hub/storage/rollups.py (plain grouping by bucket start, local midnight through zoneinfo), and
compared row for row with what the database holds: any lost, doubled or misplaced reading
changes a count, a sum, a min, a max or a last value.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hub.storage.database import Database
from hub.storage.recorder import Recorder
from hub.storage.schema import state_rollups, states_meta

from .conftest import MiniHub, fast_options

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 1, 22, 57, tzinfo=ZONE).timestamp()  # crosses local midnight


def _bucket(ts: float, resolution: int) -> float:
    if resolution == 86400:
        local = datetime.fromtimestamp(ts, ZONE)
        return datetime(local.year, local.month, local.day, tzinfo=ZONE).timestamp()
    return float(int(ts // resolution) * resolution)


def expected(readings: list[tuple[str, float, float]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(entity, resolution, bucket) -> (count, sum, min, max, last) from (entity, ts, value)."""
    groups: dict[tuple[Any, ...], list[tuple[float, float]]] = defaultdict(list)
    for entity, ts, value in readings:
        for resolution in (300, 3600, 86400):
            groups[(entity, resolution, _bucket(ts, resolution))].append((ts, value))
    out = {}
    for key, items in groups.items():
        values = [v for _, v in items]
        last = max(items, key=lambda item: item[0])[1]
        out[key] = (len(values), round(sum(values), 3), min(values), max(values), last)
    return out


async def stored(db: Database) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    r, m = state_rollups.c, states_meta.c
    query = select(m.entity_id, r.resolution, r.bucket_ts, r.value_count, r.value_sum,
                   r.value_min, r.value_max, r.value_last).join(
        states_meta, m.metadata_id == r.metadata_id)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {(e, res, b): (n, round(s, 3), lo, hi, last) for e, res, b, n, s, lo, hi, last in rows}


@pytest.fixture
async def recorder(hub: MiniHub, database: Database) -> AsyncIterator[Recorder]:
    rec = Recorder(hub, database, fast_options(time_zone="Asia/Shanghai"))
    await rec.async_start()
    try:
        yield rec
    finally:
        await rec.async_stop()


def write(hub: MiniHub, readings: list[tuple[str, float, float]]) -> None:
    for entity, ts, value in readings:
        hub.states.async_set(entity, value, timestamp=ts)


def one_minute_readings(count: int, entities: int = 3, seed: int = 1) -> list[tuple[str, float, float]]:
    """One reading a minute per entity; an entity's consecutive values always differ."""
    rng = random.Random(seed)
    return [
        (f"sensor.arcm_{i % entities}_residual_current", T0 + 60.0 * (i // entities) + i % entities,
         round(rng.uniform(0, 500), 1) + 1000 * (i // entities % 2))
        for i in range(count)
    ]


async def test_rollups_equal_the_aggregates_of_the_readings(
    hub: MiniHub, database: Database, recorder: Recorder
) -> None:
    readings = one_minute_readings(1500)  # 500 minutes of 3 entities, 15 batches, 2 local days
    write(hub, readings)
    await recorder.async_flush()

    want = expected(readings)
    assert await stored(database) == want
    days = {key[2] for key in want if key[1] == 86400}
    assert len(days) == 2, "the readings cross local midnight in Asia/Shanghai"
    assert recorder.stats()["rollup_rows_written"] >= len(want)


async def test_a_failed_commit_does_not_count_its_batch_twice(
    hub: MiniHub, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction fails after rows and rollups were written in it: both roll back."""
    rec = Recorder(hub, database, fast_options(time_zone="Asia/Shanghai"))
    real_insert = rec._insert_sync
    failures = {"left": 2}

    def insert_then_fail(conn: Any, state_rows: Any, event_rows: Any) -> None:
        real_insert(conn, state_rows, event_rows)
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("COMMIT", {}, Exception("connection lost"))

    monkeypatch.setattr(rec, "_insert_sync", insert_then_fail)
    await rec.async_start()
    try:
        readings = one_minute_readings(450)
        write(hub, readings)
        await rec.async_flush()
        assert rec.commit_errors == 2
        assert await stored(database) == expected(readings)
    finally:
        await rec.async_stop()


async def test_restart_and_late_readings_merge_into_existing_buckets(
    hub: MiniHub, database: Database
) -> None:
    readings = one_minute_readings(600, entities=2, seed=2)
    first, second = readings[:301], readings[301:]
    late = [("sensor.arcm_0_residual_current", T0 + 30.0, 999.0),  # older than all but one
            ("sensor.arcm_1_residual_current", T0 - 7200.0, -5.0)]  # a bucket of its own
    for batch in (first, second + late):
        rec = Recorder(hub, database, fast_options(time_zone="Asia/Shanghai"))
        await rec.async_start()
        try:
            write(hub, batch)
            await rec.async_flush()
        finally:
            await rec.async_stop()
    assert await stored(database) == expected(readings + late)


async def test_only_finite_numbers_are_rolled_up(
    hub: MiniHub, database: Database, recorder: Recorder
) -> None:
    entity = "sensor.arcm_0_temperature_1"
    for i, value in enumerate(["20.5", "on", "nan", "inf", "unavailable", "21.5"]):
        hub.states.async_set(entity, value, timestamp=T0 + i)
    await recorder.async_flush()
    rows = await stored(database)
    assert rows[(entity, 300, _bucket(T0, 300))] == (2, 42.0, 20.5, 21.5, 21.5)
    assert len(rows) == 3


async def test_rollups_can_be_switched_off(hub: MiniHub, database: Database) -> None:
    rec = Recorder(hub, database, fast_options(rollups=False))
    await rec.async_start()
    try:
        write(hub, one_minute_readings(30))
        await rec.async_flush()
        assert await stored(database) == {}
        assert rec.states_written == 30
    finally:
        await rec.async_stop()
