"""Recorder: batching, flush on stop, events with contexts, exclusions, back-pressure, retries.

No sleeps and no timing assertions: a commit interval of an hour (see `fast_options`) means
commits come only from full batches and explicit flushes; state writes from a test are
synchronous, so they all reach the queue before the writer gets a turn.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.core.context import Context
from hub.storage.database import Database
from hub.storage.recorder import Recorder
from hub.storage.schema import events, state_attributes, states, states_meta

from .conftest import MiniHub, fast_options


async def _count(db: Database, table: Any) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def _commit_counter(db: Database) -> list[int]:
    """Counts real transactions by listening for COMMIT on the engine."""
    counter = [0]

    def on_commit(_conn: Any) -> None:
        counter[0] += 1

    event.listen(db.engine.sync_engine, "commit", on_commit)
    return counter


async def test_many_writes_few_transactions(
    hub: MiniHub, database: Database, recorder: Recorder
) -> None:
    commits = _commit_counter(database)
    for i in range(1000):
        hub.states.async_set(f"sensor.arcm_{i % 50}_current_a", i / 10, {"unit": "A"})
    await recorder.async_flush()

    assert await _count(database, states) == 1000
    assert recorder.batches == 10  # max_batch 100
    # 10 batches + 1 transaction creating the 50 entity ids and the attribute set.
    assert commits[0] == 11
    assert await _count(database, states_meta) == 50
    assert await _count(database, state_attributes) == 1
    assert recorder.stats()["queue_length"] == 0


async def test_history_reads_values_and_timestamps(
    hub: MiniHub, database: Database, recorder: Recorder
) -> None:
    entity = "sensor.arcm_1_residual_current"
    hub.states.async_set(entity, 12, {"unit": "mA"}, timestamp=1000.0)
    hub.states.async_set(entity, 12, {"unit": "mA", "note": "x"}, timestamp=1001.0)
    hub.states.async_set(entity, "unavailable", timestamp=1002.0)
    hub.states.async_set("sensor.other", 5, timestamp=1001.5)
    await recorder.async_flush()

    rows = await recorder.history(entity, 1000.0, 1003.0)
    assert rows == [
        {"state": "12", "value": 12.0, "last_changed": 1000.0, "last_updated": 1000.0},
        {"state": "12", "value": 12.0, "last_changed": 1000.0, "last_updated": 1001.0},
        {"state": "unavailable", "value": None, "last_changed": 1002.0, "last_updated": 1002.0},
    ]
    assert [r["last_updated"] for r in await recorder.history(entity, 1001.0, 1002.0)] == [1001.0]


async def test_stop_flushes_everything(hub: MiniHub, db_url: str, tmp_path: Path) -> None:
    db = Database(db_url, tmp_path)
    await db.open()
    rec = Recorder(hub, db, fast_options())
    await rec.async_start()
    for i in range(250):  # 2.5 batches: the half batch is only written by the final flush
        hub.states.async_set(f"sensor.t_{i % 7}", i)
    hub.bus.async_fire("alarm_raised", {"type": "residual_current_high", "value": 550})
    hub.states.async_remove("sensor.t_0")  # a removal is not a row
    await rec.async_stop()
    await db.close()

    reopened = Database(db_url, tmp_path)
    await reopened.open()
    try:
        assert await _count(reopened, states) == 250
        assert await _count(reopened, events) == 1
    finally:
        await reopened.close()


async def test_events_with_context_and_exclusions(
    hub: MiniHub, database: Database
) -> None:
    rec = Recorder(hub, database, fast_options(exclude_event_types=["noisy_debug"]))
    await rec.async_start()
    try:
        cause = Context(user_id="user-7")
        effect = cause.child()
        hub.bus.async_fire("call_service", {"domain": "arcm", "service": "trip"}, context=effect)
        hub.bus.async_fire("noisy_debug", {"x": 1})
        state = hub.states.async_set("switch.arcm_1_breaker", "off", context=effect)
        hub.states.async_set("switch.arcm_1_breaker", "off")  # unchanged: state_reported only
        await rec.async_flush()

        async with database.engine.connect() as conn:
            ev_rows = (await conn.execute(select(events))).mappings().all()
            st_rows = (await conn.execute(select(states))).mappings().all()
        types = [row["event_type"] for row in ev_rows]
        assert types == ["call_service"]  # no state_changed, state_reported or noisy_debug
        row = ev_rows[0]
        assert row["context_id"] == effect.id
        assert row["context_user_id"] == "user-7"
        assert row["context_parent_id"] == cause.id
        assert row["event_data"] == '{"domain":"arcm","service":"trip"}'
        assert len(st_rows) == 1
        assert st_rows[0]["context_id"] == state.context.id == effect.id
        assert st_rows[0]["context_parent_id"] == cause.id
        assert st_rows[0]["state"] == "off" and st_rows[0]["value"] is None
    finally:
        await rec.async_stop()


async def test_commit_errors_are_retried_nothing_lost(
    hub: MiniHub, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(hub, database, fast_options())
    real_insert = rec._insert_sync
    failures = {"left": 3}

    def flaky_insert(conn: Any, state_rows: Any, event_rows: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("INSERT INTO states", {}, Exception("disk I/O error"))
        real_insert(conn, state_rows, event_rows)

    monkeypatch.setattr(rec, "_insert_sync", flaky_insert)
    await rec.async_start()
    try:
        for i in range(150):
            hub.states.async_set(f"sensor.v_{i % 3}", i)
        hub.bus.async_fire("alarm_cleared", {"id": 1})
        await rec.async_flush()
        assert await _count(database, states) == 150
        assert await _count(database, events) == 1
        assert rec.commit_errors == 3
        assert rec.dropped == 0
        assert not rec.error_event.is_set()
    finally:
        await rec.async_stop()


async def test_a_row_the_database_refuses_is_isolated(
    hub: MiniHub, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(hub, sqlite_database, fast_options())
    real_insert = rec._insert_sync

    def picky_insert(conn: Any, state_rows: Any, event_rows: Any) -> None:
        if any(row[1] == "poison" for row in state_rows):
            raise IntegrityError("INSERT INTO states", {}, Exception("constraint failed"))
        real_insert(conn, state_rows, event_rows)

    monkeypatch.setattr(rec, "_insert_sync", picky_insert)
    await rec.async_start()
    try:
        for i in range(40):
            hub.states.async_set(f"sensor.p_{i}", "poison" if i == 17 else i)
        await rec.async_flush()
        assert await _count(sqlite_database, states) == 39
        assert rec.dropped == 1
    finally:
        await rec.async_stop()


async def test_stalled_sqlite_back_pressure_spool_and_recovery(
    hub: MiniHub,
    sqlite_database: Database,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder(hub, sqlite_database, fast_options(max_batch=10, max_queue=40))
    await rec.async_start()
    hub.states.async_set("sensor.s_0", -1)
    await rec.async_flush()

    # Another process holds the write lock: every commit fails with "database is locked".
    blocker = sqlite3.connect(tmp_path / "voltwatch.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING, logger="hub.storage.recorder"):
            for i in range(200):
                hub.states.async_set(f"sensor.s_{i % 5}", i)
            assert not rec.ready.is_set()  # back-pressure on
            capacity = hub.bus._loop.create_task(rec.wait_capacity())
            flush = hub.bus._loop.create_task(rec.async_flush())
            await rec.error_event.wait()  # the writer tried and failed
            assert rec.queue_length <= 40 + rec.spool_chunk
            assert rec.spooled == 160  # beyond max_queue, in chunks of max_batch
            assert rec.spool_path.exists()
            assert not flush.done() and not capacity.done()
        full_warnings = [r for r in caplog.records if "queue is full" in r.getMessage()]
        assert len(full_warnings) == 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    await flush
    await capacity
    assert await _count(sqlite_database, states) == 201
    stats = rec.stats()
    assert stats["spooled"] == 160 and stats["replayed"] == 160
    assert stats["spool_pending"] == 0 and stats["dropped"] == 0
    assert stats["overflowing"] is False and rec.ready.is_set()
    assert stats["commit_errors"] >= 1
    assert not rec.spool_path.exists() and not rec.replay_path.exists()
    await rec.async_stop()


async def test_database_down_at_stop_keeps_rows_for_next_start(
    hub: MiniHub, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(hub, database, fast_options(stop_timeout=0.05))

    def broken_insert(conn: Any, state_rows: Any, event_rows: Any) -> None:
        raise OperationalError("INSERT INTO states", {}, Exception("server closed"))

    monkeypatch.setattr(rec, "_insert_sync", broken_insert)
    await rec.async_start()
    for i in range(120):
        hub.states.async_set(f"sensor.d_{i % 4}", i)
    hub.bus.async_fire("alarm_raised", {"id": 9})
    await rec.async_stop()  # gives up after stop_timeout; everything goes to the spool
    assert await _count(database, states) == 0
    assert rec.spool_path.exists()

    again = Recorder(hub, database, fast_options())
    await again.async_start()
    try:
        assert again.spool_pending == 121
        await again.async_flush()
        assert await _count(database, states) == 120
        assert await _count(database, events) == 1
        assert not again.spool_path.exists() and not again.replay_path.exists()
    finally:
        await again.async_stop()
