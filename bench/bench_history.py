"""History: one year of 1-minute readings of one entity (525,600 rows), ingest and chart query.

(a) Raw baseline: the 525,600 rows, pre-built, inserted into `states` of a fresh SQLite file
    (migrated, so WAL, synchronous=NORMAL and the same indexes) with SQLAlchemy Core
    `insert(states)` executemany, BATCH rows per transaction, through the async engine.
(b) Recorder with rollups on (the default): 525,600 `StateMachine.async_set` calls with the
    readings' own timestamps one minute apart, the recorder writing BATCH-row batches with
    their 5 min / 1 h / 1 d rollups in the same transactions, until `async_flush()` returns.
    The producer yields after every BATCH writes and honours back-pressure, as in
    bench_recorder. A second run with `rollups: false` shows what the rollups themselves cost.
    (a), (b) and the rollups-off run alternate ROUNDS times (2) and the best of each counts.
(c) The 1-year chart: `History.points()` for the year with the resolution the API would choose
    (1d) and for 1h (8,760 points), each including the JSON encoding the API does; median of
    REPEAT runs. Baseline: the same 1d chart computed from raw rows (GROUP BY day over the
    525,600 readings), same run, same file.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import Result, Timer
from sqlalchemy import func, insert, select

from hub.core.context import ulid_now
from hub.core.events import EventBus
from hub.core.states import StateMachine
from hub.http.routes import dumps
from hub.storage.database import Database
from hub.storage.history import choose_resolution
from hub.storage.recorder import Recorder
from hub.storage.schema import state_rollups, states, states_meta

N = int(__import__("os").environ.get("BENCH_HISTORY_N", 525_600))
BATCH = 1000
REPEAT = 15
ROUNDS = int(__import__("os").environ.get("BENCH_HISTORY_ROUNDS", 2))
ENTITY = "sensor.arcm_1_residual_current"
ATTRS = {"unit_of_measurement": "mA", "device_class": "current", "friendly_name": "剩余电流"}
END = 1_798_761_600.0  # 2027-01-01T00:00:00Z; the year of readings ends here
START = END - N * 60.0


class _Hub:
    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.time_zone = "Asia/Shanghai"
        self.bus = EventBus()
        self.bus.bind_loop(asyncio.get_running_loop())
        self.states = StateMachine(self.bus)


def _value(i: int) -> float:
    return round(30 + (i * 7919 % 2000) / 10, 1) + (i % 2) * 0.05  # never equal to the last


async def _count(db: Database, table: Any) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _raw(tmp: Path, name: str) -> float:
    db = Database(f"sqlite+aiosqlite:///{name}.db", tmp)
    await db.open()
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(states_meta), [{"entity_id": ENTITY}])
        rows = [
            {"metadata_id": 1, "state": str(_value(i)), "value": _value(i), "attributes_id": None,
             "last_changed_ts": None, "last_updated_ts": START + i * 60.0,
             "context_id": ulid_now(), "context_user_id": None, "context_parent_id": None}
            for i in range(N)
        ]
        with Timer() as timer:
            for offset in range(0, N, BATCH):
                async with db.engine.begin() as conn:
                    await conn.execute(insert(states), rows[offset : offset + BATCH])
        assert await _count(db, states) == N
    finally:
        await db.close()
    return N / timer.elapsed


async def _ingest(tmp: Path, name: str, rollups: bool) -> tuple[float, Database, Recorder]:
    hub = _Hub(tmp)
    db = Database(f"sqlite+aiosqlite:///{name}.db", tmp)
    await db.open()
    # Raw readings kept: the year lies in the past and the raw GROUP BY baseline reads them.
    recorder = Recorder(hub, db, {"max_batch": BATCH, "commit_interval": 1.0,
                                  "rollups": rollups, "retention": {"raw": None}})
    await recorder.async_start()
    hub.states.async_set(ENTITY, -1, ATTRS, timestamp=START - 2 * 86400)  # outside the year
    await recorder.async_flush()
    async_set = hub.states.async_set
    values = [_value(i) for i in range(N)]  # built before the clock, as the raw rows are
    with Timer() as timer:
        for i in range(N):
            async_set(ENTITY, values[i], ATTRS, timestamp=START + i * 60.0)
            if i % BATCH == BATCH - 1:
                await asyncio.sleep(0)
                if not recorder.ready.is_set():
                    await recorder.wait_capacity()
        await recorder.async_flush()
    assert recorder.states_written == N + 1, recorder.stats()
    return N / timer.elapsed, db, recorder


async def _median_ms(call: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


async def _main() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # Alternated and repeated, best of each: on a shared machine the load changes between
        # runs, and a ratio of two runs minutes apart would measure the neighbours.
        raw = plain = with_rollups = 0.0
        for attempt in range(ROUNDS):
            raw = max(raw, await _raw(tmp, f"raw{attempt}"))
            rate, plain_db, plain_rec = await _ingest(tmp, f"plain{attempt}", rollups=False)
            plain = max(plain, rate)
            await plain_rec.async_stop()
            await plain_db.close()
            rate, db, recorder = await _ingest(tmp, f"rollups{attempt}", rollups=True)
            with_rollups = max(with_rollups, rate)
            if attempt < ROUNDS - 1:
                await recorder.async_stop()
                await db.close()
        try:
            rollup_rows = await _count(db, state_rollups)
            reader = recorder.reader
            resolution = choose_resolution(START, END, reader.keep, now=END)
            assert resolution == "1d" or N < 525_600, resolution

            async def chart(res: str) -> Any:
                points = await reader.points(ENTITY, START, END, res)
                return points, dumps({"entity_id": ENTITY, "points": points})

            day_ms, (day_points, _) = await _median_ms(lambda: chart("1d"))
            hour_ms, (hour_points, _) = await _median_ms(lambda: chart("1h"))
            assert sum(p["count"] for p in day_points) == N, "every reading is in a day bucket"
            assert sum(p["count"] for p in hour_points) == N

            s = states.c
            meta_id = select(states_meta.c.metadata_id).where(
                states_meta.c.entity_id == ENTITY).scalar_subquery()
            day = func.floor((s.last_updated_ts + 8 * 3600) / 86400)
            by_day = (
                select(day, func.avg(s.value), func.min(s.value), func.max(s.value),
                       func.count())
                .where(s.metadata_id == meta_id, s.last_updated_ts >= START, s.last_updated_ts < END)
                .group_by(day)
            )

            async def raw_chart() -> Any:
                async with db.engine.connect() as conn:
                    rows = (await conn.execute(by_day)).all()
                return rows, dumps([list(row) for row in rows])

            raw_ms, (raw_rows, _) = await _median_ms(raw_chart)
            assert sum(row[4] for row in raw_rows) == N, (sum(row[4] for row in raw_rows), raw_rows[:3])
        finally:
            await recorder.async_stop()
            await db.close()
    print(f"history: {rollup_rows:,} rollup rows for {N:,} readings; "
          f"1d chart {len(day_points)} points, 1h chart {len(hour_points)} points",
          file=sys.stderr)
    base = "SQLAlchemy Core insert() executemany, async engine (aiosqlite)"
    raw_base = "same 1d chart from raw rows (GROUP BY day)"
    return [
        Result(
            name=f"history ingest rows/s, SQLite, {N:,} 1-minute readings, rollups on",
            value=with_rollups, unit="rows/s", baseline=raw, baseline_name=base,
            target=">= 0.5x raw", met=with_rollups >= 0.5 * raw,
        ),
        Result(
            name=f"history ingest rows/s, SQLite, {N:,} readings, rollups off (information)",
            value=plain, unit="rows/s", baseline=raw, baseline_name=base, target="-", met=None,
        ),
        Result(
            name=f"history 1-year chart query (auto = 1d, {len(day_points)} points), median",
            value=day_ms, unit="ms", baseline=raw_ms, baseline_name=raw_base,
            target="<= 100 ms", met=day_ms <= 100,
        ),
        Result(
            name=f"history 1-year chart query at 1h ({len(hour_points):,} points), median",
            value=hour_ms, unit="ms", baseline=raw_ms, baseline_name=raw_base,
            target="- (information)", met=None,
        ),
    ]


def run() -> list[Result]:
    return asyncio.run(_main())


if __name__ == "__main__":
    for result in run():
        print(result.row())
