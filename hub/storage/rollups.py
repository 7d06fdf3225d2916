"""Rollups at 5 minutes, 1 hour and 1 day, added by the recorder in each batch's transaction.

Why this way rather than a periodic job over new raw rows:

* The aggregate of a batch is committed in the same transaction as the batch's raw rows. A
  batch is either in the database with its rollups or not at all, so a crash, a retry, a
  replayed spool or a restart can neither lose nor double-count a reading, and there is no
  watermark to keep consistent with the rows it covers.
* Readings that arrive late (a device's own timestamp, a spool replayed after an outage) land
  in their own, older buckets: the upsert merges them there.
* Each level keeps count, sum, min, max and the last value with its time, so merging two
  partial aggregates of one bucket is exact (`mean = sum / count` when read). The 1-hour and
  1-day aggregates of a batch are built from its 5-minute ones in memory, so a batch costs one
  upsert per (entity, bucket) touched, not per reading: a batch of 1000 one-minute readings of
  one entity writes about 220 rollup rows.

Only finite numeric values are rolled up (`states.value`); text states such as `on` stay raw.
5-minute and 1-hour buckets start at multiples of their length in unix time (every real time
zone offset is a multiple of 15 minutes, so they are also local 5-minute marks); a 1-day
bucket starts at local midnight in the hub's time zone, so a day in a chart is the day its
users lived (a DST day simply holds 23 or 25 hours).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert

from .bulk import executemany, values_statement
from .schema import ROLLUP_1D, ROLLUP_1H, ROLLUP_5M, state_rollups

#: Resolution names of the API and the configuration, and their bucket length in seconds.
RESOLUTIONS: dict[str, int] = {"5m": ROLLUP_5M, "1h": ROLLUP_1H, "1d": ROLLUP_1D}

COLUMNS = (
    "metadata_id",
    "resolution",
    "bucket_ts",
    "value_count",
    "value_sum",
    "value_min",
    "value_max",
    "value_last",
    "last_ts",
)
# Where the recorder's state rows keep what a rollup needs (recorder._STATE_COLUMNS).
_META, _VALUE, _UPDATED = 0, 2, 5

#: [count, sum, min, max, last, last_ts]
Aggregate = list[Any]


def upsert_statement(dialect_name: str) -> Insert:
    """INSERT … ON CONFLICT DO UPDATE that merges an aggregate into the stored one.

    Written with CASE rather than min()/max()/greatest() so one text works on SQLite and
    PostgreSQL; every right-hand side reads the row as it was before the update.
    """
    module = postgresql if dialect_name == "postgresql" else sqlite
    stmt = values_statement(module.insert(state_rollups), COLUMNS)
    new, old = stmt.excluded, state_rollups.c
    newer = new.last_ts >= old.last_ts
    return stmt.on_conflict_do_update(
        index_elements=[old.metadata_id, old.resolution, old.bucket_ts],
        set_={
            "value_count": old.value_count + new.value_count,
            "value_sum": old.value_sum + new.value_sum,
            "value_min": case((new.value_min < old.value_min, new.value_min), else_=old.value_min),
            "value_max": case((new.value_max > old.value_max, new.value_max), else_=old.value_max),
            "value_last": case((newer, new.value_last), else_=old.value_last),
            "last_ts": case((newer, new.last_ts), else_=old.last_ts),
        },
    )


class DayStarts:
    """Local midnight (unix seconds) of the day holding a moment.

    Batches arrive in time order, so the day of the previous call almost always holds the
    next moment too: one comparison, and zoneinfo only once per new day.
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._start = 0.0
        self._end = 0.0

    def __call__(self, moment: float) -> float:
        if self._start <= moment < self._end:
            return self._start
        local = datetime.fromtimestamp(moment, self.zone)
        day = datetime(local.year, local.month, local.day, tzinfo=self.zone)
        start = day.timestamp()
        end = datetime.fromordinal(day.toordinal() + 1).replace(tzinfo=self.zone).timestamp()
        self._start, self._end = start, end
        return start


def _merge(into: dict[tuple[int, float], Aggregate], key: tuple[int, float], agg: Aggregate) -> None:
    have = into.get(key)
    if have is None:
        into[key] = agg.copy()
        return
    have[0] += agg[0]
    have[1] += agg[1]
    have[2] = min(have[2], agg[2])
    have[3] = max(have[3], agg[3])
    if agg[5] >= have[5]:
        have[4] = agg[4]
        have[5] = agg[5]


def aggregate(rows: Iterable[tuple[Any, ...]], day_start: DayStarts) -> list[tuple[Any, ...]]:
    """The rollup rows (COLUMNS order) of a batch of recorder state rows, all three levels.

    This loop runs once per reading, on the event loop, inside the recorder's commit; it is
    written for speed (measured: about a third of the time of grouping into lists first):
    consecutive readings of one entity usually share their 5-minute bucket, so the dict is
    consulted only when the key changes; `value - value` is 0.0 (false) for a finite number
    and NaN (true) for NaN and ±inf, which are left out. The 1-hour and 1-day aggregates are
    merged from the 5-minute ones (a few hundred per batch, not a thousand readings).
    """
    five: dict[tuple[int, float], Aggregate] = {}
    get = five.get
    length = ROLLUP_5M
    last_key: tuple[int, float] | None = None
    agg: Aggregate = []
    for row in rows:
        value = row[2]  # _VALUE, _META, _UPDATED spelled out in this loop
        if value is None or value - value:
            continue
        ts = row[5]
        key = (row[0], ts // length)
        if key != last_key:
            found = get(key)
            if found is None:
                five[key] = [1, value, value, value, value, ts]
                last_key, agg = key, five[key]
                continue
            last_key, agg = key, found
        agg[0] += 1
        agg[1] += value
        if value < agg[2]:
            agg[2] = value
        elif value > agg[3]:
            agg[3] = value
        if ts >= agg[5]:
            agg[4] = value
            agg[5] = ts
    if not five:
        return []
    hour: dict[tuple[int, float], Aggregate] = {}
    day: dict[tuple[int, float], Aggregate] = {}
    out: list[tuple[Any, ...]] = []
    add = out.append
    for (meta, slot), agg in five.items():
        bucket = slot * length
        add((meta, ROLLUP_5M, bucket, *agg))
        _merge(hour, (meta, (bucket // ROLLUP_1H) * ROLLUP_1H), agg)
        _merge(day, (meta, day_start(bucket)), agg)
    for resolution, level in ((ROLLUP_1H, hour), (ROLLUP_1D, day)):
        out.extend((meta, resolution, bucket, *agg) for (meta, bucket), agg in level.items())
    return out


class Rollups:
    """What the recorder calls inside each batch's transaction."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.day_start = DayStarts(zone)
        self._sql: dict[str, tuple[str, bool, Any]] = {}
        #: rollup rows upserted (for /metrics)
        self.rows_written = 0

    def add_sync(self, conn: Connection, state_rows: list[tuple[Any, ...]]) -> int:
        """Merge the aggregate of `state_rows` into the stored rollups (on `conn`'s transaction)."""
        rows = aggregate(state_rows, self.day_start)
        if not rows:
            return 0
        name = conn.dialect.name
        executemany(conn, self._sql, name, lambda: upsert_statement(name), COLUMNS, rows)
        return len(rows)
