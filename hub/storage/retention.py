"""Retention: raw readings, events and each rollup level are deleted when older than configured.

Why it is built this way:

* Deletes run in small batches (`purge_batch` rows, default 5000), one short transaction
  each, chosen through the time indexes. SQLite has one writer: a single `DELETE … WHERE ts <
  cutoff` over a month of readings would hold the write lock for seconds and the recorder's
  commits (and every alarm write) would wait behind it. Between batches the purger yields to
  the event loop and the recorder's next commit gets the lock.
* Each level has its own period (`recorder.retention`): raw 30 days, 5 minutes 1 year, 1 hour
  5 years, 1 day 10 years by default; `forever` keeps a level. Rollups are written with the
  raw rows (hub/storage/rollups.py), so purging raw readings never loses an aggregate.
* The first purge runs soon after start (a hub restarted more often than `purge_interval`
  still purges), then every `purge_interval`. A failing purge is logged and retried at the
  next interval; it never stops the hub or the recorder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table, delete, select, tuple_

from ..core.config import RETENTION_DEFAULTS
from .database import Database
from .rollups import RESOLUTIONS
from .schema import events, state_rollups, states

_LOGGER = logging.getLogger(__name__)

DEFAULT_PURGE_INTERVAL = 3600.0
DEFAULT_PURGE_BATCH = 5000
FIRST_PURGE_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class _Target:
    """One kind of row with its own retention: which table, which rows, by which time."""

    name: str
    table: Table
    key: tuple[Column[Any], ...]
    ts: Column[Any]
    resolution: int | None = None


TARGETS = (
    _Target("raw", states, (states.c.state_id,), states.c.last_updated_ts),
    _Target("events", events, (events.c.event_id,), events.c.time_fired_ts),
    *(
        _Target(
            name,
            state_rollups,
            (state_rollups.c.metadata_id, state_rollups.c.resolution, state_rollups.c.bucket_ts),
            state_rollups.c.bucket_ts,
            seconds,
        )
        for name, seconds in RESOLUTIONS.items()
    ),
)


class Purger:
    """Deletes what is past its retention, in batches; owned and started by the Recorder."""

    def __init__(self, database: Database, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        retention = {**RETENTION_DEFAULTS, **dict(options.get("retention") or {})}
        #: seconds to keep per level (events follow raw); None keeps forever
        self.keep: dict[str, float | None] = {
            "raw": retention["raw"],
            "events": retention["raw"],
            **{name: retention[name] for name in RESOLUTIONS},
        }
        self.database = database
        self.interval = float(options.get("purge_interval", DEFAULT_PURGE_INTERVAL))
        self.batch = int(options.get("purge_batch", DEFAULT_PURGE_BATCH))
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        # Counters (merged into the recorder's stats()).
        self.purged: dict[str, int] = {target.name: 0 for target in TARGETS}
        self.purge_runs = 0
        self.purge_errors = 0
        self.last_purge_at: float | None = None
        self.last_purge_duration = 0.0
        self.longest_batch = 0.0  # seconds: how long one batch held the database

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recorder purge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        task.cancel()  # a purge in the middle of a batch is rolled back; the rows stay
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        wait = min(self.interval, FIRST_PURGE_AFTER)
        while True:
            try:
                async with asyncio.timeout(wait):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            wait = self.interval
            try:
                await self.purge_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.purge_errors += 1
                _LOGGER.exception("Recorder purge failed on %s; retrying in %.0f s",
                                  self.database.masked_url, self.interval)

    async def purge_once(self, now: float | None = None) -> dict[str, int]:
        """Delete everything past its retention as of `now`; rows deleted per level."""
        now = time.time() if now is None else now
        started = time.perf_counter()
        deleted: dict[str, int] = {}
        for target in TARGETS:
            keep = self.keep[target.name]
            if keep is None:
                continue
            deleted[target.name] = await self._purge_target(target, now - keep)
        self.purge_runs += 1
        self.last_purge_at = time.time()
        self.last_purge_duration = time.perf_counter() - started
        if any(deleted.values()):
            _LOGGER.info("Recorder purge deleted %s in %.1f s", deleted, self.last_purge_duration)
        return deleted

    async def _purge_target(self, target: _Target, cutoff: float) -> int:
        oldest = select(*target.key).where(target.ts < cutoff)
        if target.resolution is not None:
            oldest = oldest.where(state_rollups.c.resolution == target.resolution)
        key = target.key[0] if len(target.key) == 1 else tuple_(*target.key)
        statement = delete(target.table).where(key.in_(oldest.limit(self.batch).scalar_subquery()
                                                        if len(target.key) == 1
                                                        else oldest.limit(self.batch)))
        total = 0
        while True:
            began = time.perf_counter()
            async with self.database.engine.begin() as conn:
                count = (await conn.execute(statement)).rowcount or 0
            self.longest_batch = max(self.longest_batch, time.perf_counter() - began)
            total += count
            self.purged[target.name] += count
            if count < self.batch:
                return total
            await asyncio.sleep(0)  # let the recorder's next commit in between batches

    def stats(self) -> dict[str, Any]:
        return {
            **{f"purged_{name}": count for name, count in self.purged.items()},
            "purge_runs": self.purge_runs,
            "purge_errors": self.purge_errors,
            "last_purge_at": self.last_purge_at,
            "last_purge_duration": self.last_purge_duration,
            "purge_longest_batch": self.longest_batch,
        }
