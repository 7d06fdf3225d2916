"""Reading history: raw readings or rollups of one entity, as chart points.

One point shape for every resolution (CONTRACTS §5, docs/api.md): `t` (ISO 8601 in the hub's
time zone: the start of the bucket, or the time of a raw reading), `mean`, `min`, `max`,
`last`, `count`. A raw point is its reading (value in all four, count 1) plus `state`, the
text, which is all a non-numeric state (`on`, `off`) has.

When the caller does not name a resolution it is chosen by span, the finest one that keeps a
chart readable (at most about 1500 points) *and* still holds the start of the span after
retention: a one-day window two months ago comes from 5-minute rollups, because raw
readings are kept 30 days.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ..core.config import RETENTION_DEFAULTS
from .database import Database
from .rollups import RESOLUTIONS, DayStarts
from .schema import ROLLUP_1D, state_rollups, states, states_meta

RAW = "raw"
#: every resolution name the API accepts, finest first
RESOLUTION_NAMES = (RAW, *RESOLUTIONS)
#: the longest span each resolution serves when chosen automatically
AUTO_MAX_SPAN = {RAW: 6 * 3600.0, "5m": 5 * 86400.0, "1h": 62 * 86400.0}
#: a request that would return more points is refused with the reason (narrow it or go coarser)
MAX_POINTS = 100_000


class TooManyPoints(ValueError):
    """The span holds more points than one answer may carry."""


def choose_resolution(
    start: float, end: float, keep: Mapping[str, float | None], now: float | None = None
) -> str:
    """The finest resolution for [start, end) within its span budget and its retention."""
    now = time.time() if now is None else now
    span = end - start
    for name in (RAW, "5m", "1h"):
        if span > AUTO_MAX_SPAN[name]:
            continue
        kept = keep.get(name)
        if kept is not None and start < now - kept:
            continue  # already purged at this resolution
        return name
    return "1d"


def _number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a raw reading of `nan` is shown as no number."""
    return value if value is None or math.isfinite(value) else None


class History:
    """Queries for the history API and CSV export."""

    def __init__(
        self, database: Database, zone: ZoneInfo, keep: Mapping[str, float | None] | None = None
    ) -> None:
        self.database = database
        self.zone = zone
        self.keep = dict(RETENTION_DEFAULTS if keep is None else keep)

    def iso(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.zone).isoformat()

    async def points(
        self, entity_id: str, start: float, end: float, resolution: str
    ) -> list[dict[str, Any]] | None:
        """Points of `entity_id` in [start, end) oldest first; None when it has no history."""
        async with self.database.engine.connect() as conn:
            metadata_id = (
                await conn.execute(
                    select(states_meta.c.metadata_id).where(states_meta.c.entity_id == entity_id)
                )
            ).scalar()
            if metadata_id is None:
                return None
            if resolution == RAW:
                return await self._raw(conn, metadata_id, start, end)
            return await self._rollups(conn, metadata_id, RESOLUTIONS[resolution], start, end)

    async def _raw(self, conn: Any, metadata_id: int, start: float, end: float) -> list[dict[str, Any]]:
        s = states.c
        result = await conn.execute(
            select(s.last_updated_ts, s.value, s.state)
            .where(s.metadata_id == metadata_id, s.last_updated_ts >= start, s.last_updated_ts < end)
            .order_by(s.last_updated_ts, s.state_id)
            .limit(MAX_POINTS + 1)
        )
        rows = result.all()
        _check(len(rows))
        iso = self.iso
        out = []
        for ts, value, text in rows:
            value = _number(value)
            out.append({"t": iso(ts), "mean": value, "min": value, "max": value, "last": value,
                        "count": 1, "state": text})
        return out

    async def buckets(
        self, entity_id: str, start: float, end: float, resolution: str
    ) -> list[tuple[float, int, float, float, float, float]]:
        """Rollup rows (bucket start, count, sum, min, max, last) for analysis, oldest first."""
        async with self.database.engine.connect() as conn:
            metadata_id = (
                await conn.execute(
                    select(states_meta.c.metadata_id).where(states_meta.c.entity_id == entity_id)
                )
            ).scalar()
            if metadata_id is None:
                return []
            return await self._buckets(conn, metadata_id, RESOLUTIONS[resolution], start, end)

    async def _rollups(
        self, conn: Any, metadata_id: int, resolution: int, start: float, end: float
    ) -> list[dict[str, Any]]:
        rows = await self._buckets(conn, metadata_id, resolution, start, end)
        iso = self.iso
        return [
            {"t": iso(bucket), "mean": total / count, "min": low, "max": high, "last": last,
             "count": count}
            for bucket, count, total, low, high, last in rows
        ]

    async def _buckets(
        self, conn: Any, metadata_id: int, resolution: int, start: float, end: float
    ) -> list[Any]:
        r = state_rollups.c
        # The first bucket shown is the one holding `start` (a day starts at local midnight).
        if resolution == ROLLUP_1D:
            first = DayStarts(self.zone)(start)
        else:
            first = (start // resolution) * resolution
        result = await conn.execute(
            select(r.bucket_ts, r.value_count, r.value_sum, r.value_min, r.value_max, r.value_last)
            .where(
                r.metadata_id == metadata_id,
                r.resolution == resolution,
                r.bucket_ts >= first,
                r.bucket_ts < end,
            )
            .order_by(r.bucket_ts)
            .limit(MAX_POINTS + 1)
        )
        rows = result.all()
        _check(len(rows))
        return rows


def _check(count: int) -> None:
    if count > MAX_POINTS:
        raise TooManyPoints(
            f"more than {MAX_POINTS} points: narrow the span (start/end) or choose a coarser "
            "resolution"
        )
