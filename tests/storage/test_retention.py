"""Retention: each level purged after its own period, in small batches, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from hub.storage.database import Database
from hub.storage.recorder import Recorder
from hub.storage.schema import events, state_rollups, states

from .conftest import MiniHub, fast_options

DAY = 86400.0
NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15), so ages are exact


async def _count(db: Database, table: Any, *where: Any) -> int:
    async with db.engine.connect() as conn:
        query = select(func.count()).select_from(table)
        for clause in where:
            query = query.where(clause)
        return int((await conn.execute(query)).scalar_one())


def _rollups(db: Database, resolution: int) -> Any:
    return _count(db, state_rollups, state_rollups.c.resolution == resolution)


@pytest.fixture
async def recorder(hub: MiniHub, database: Database) -> AsyncIterator[Recorder]:
    rec = Recorder(hub, database, fast_options(purge_batch=100, time_zone="UTC"))
    await rec.async_start()
    try:
        yield rec
    finally:
        await rec.async_stop()


async def test_each_level_is_purged_after_its_own_period(
    hub: MiniHub, database: Database, recorder: Recorder
) -> None:
    entity = "sensor.arcm_1_residual_current"
    # One reading every 6 hours, from 800 days ago until now: each 5m/1h bucket holds one.
    ages = [i * 0.25 for i in range(3200, -1, -1)]
    for n, age in enumerate(ages):
        hub.states.async_set(entity, n, timestamp=NOW - age * DAY)
    hub.bus.async_fire("alarm_cleared", {"id": 1}, time_fired=NOW - 40 * DAY)
    hub.bus.async_fire("alarm_cleared", {"id": 2}, time_fired=NOW - 1 * DAY)
    await recorder.async_flush()
    assert await _count(database, states) == len(ages)

    transactions = [0]
    event.listen(database.engine.sync_engine, "commit", lambda conn: transactions.__setitem__(
        0, transactions[0] + 1))
    deleted = await recorder.purger.purge_once(now=NOW)

    raw_old = sum(1 for age in ages if age > 30)
    five_old = sum(1 for age in ages if age > 365)
    assert deleted["raw"] == raw_old
    assert deleted["5m"] == five_old and deleted["1h"] == 0 and deleted["1d"] == 0
    assert deleted["events"] == 1
    assert await _count(database, states) == len(ages) - raw_old
    assert await _count(database, states, states.c.last_updated_ts < NOW - 30 * DAY) == 0
    assert await _count(database, events) == 1
    assert await _rollups(database, 300) == len(ages) - five_old
    assert await _rollups(database, 3600) == len(ages)  # 5 years by default
    # In batches of purge_batch (100) rows: never one long transaction.
    assert transactions[0] >= raw_old // 100 + five_old // 100
    assert recorder.stats()["purged_raw"] == raw_old

    again = await recorder.purger.purge_once(now=NOW)
    assert not any(again.values()), "a second purge finds nothing"


async def test_forever_keeps_a_level(hub: MiniHub, database: Database) -> None:
    options = fast_options(retention={"raw": 3600.0, "5m": None, "1h": 7200.0, "1d": None})
    rec = Recorder(hub, database, options)
    await rec.async_start()
    try:
        for i in range(10):
            hub.states.async_set("sensor.x", i, timestamp=NOW - 10 * DAY + i * 3600)
        await rec.async_flush()
        deleted = await rec.purger.purge_once(now=NOW)
        assert deleted["raw"] == 10 and deleted["1h"] == 10
        assert "5m" not in deleted and "1d" not in deleted
        assert await _rollups(database, 300) == 10
    finally:
        await rec.async_stop()
