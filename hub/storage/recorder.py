"""The recorder: every state change and event, batched into the database.

Why it is built the way it is:

* The bus listener is a `@callback` that appends the Event to a list and returns. No task per
  event, no I/O, no serialisation on the hot path: a detector poll that produces 40 readings
  pays 40 list appends here.
* A single writer task turns the list into rows and commits one transaction per batch, every
  `commit_interval` seconds or as soon as `max_batch` rows are waiting. SQLite does ~1k
  commits/s but several hundred thousand rows/s in batches; one commit per reading would be
  the hub's bottleneck.
* Rows are built as plain tuples and written with one `executemany` per table per batch,
  through the dialect's own compiled INSERT (no ORM, no per-row dict). Entity ids and
  attribute sets are replaced by small integer ids resolved through in-memory caches.
* Memory is bounded. When `max_queue` rows are waiting (the database is stalled or slower
  than the detectors), one warning is logged, `ready` is cleared so producers that care can
  `await recorder.wait_capacity()`, and further rows go to a JSON-lines spool file in the
  config directory instead of RAM. The writer replays the spool once it has caught up, and a
  spool left behind by a crash is replayed on the next start. Nothing is dropped unless the
  spool file itself cannot be written (counted in `dropped`).
* A failing commit never kills the writer: the rows stay queued, the error is logged and the
  commit retried with exponential backoff. A row the database rejects for its content (an
  integrity or data error) is isolated by bisecting the batch and dropped alone, so one bad
  row cannot block history forever.
* `async_stop()` flushes everything that reached the bus before it was called. If the
  database is still failing when `stop_timeout` runs out, what is left goes to the spool.
* Numeric readings are also aggregated at 5 min / 1 h / 1 day (hub/storage/rollups.py) in
  the *same transaction* as the batch's raw rows, so retries, bisection, spool replays and
  restarts can never lose or double-count a reading in the rollups. Each level is purged
  after its own retention by the Purger (hub/storage/retention.py), in small batches; the
  History reader (hub/storage/history.py) serves the API from whichever level fits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError

from ..core.events import (
    EVENT_STATE_CHANGED,
    EVENT_STATE_REPORTED,
    MATCH_ALL,
    ORIGIN_REMOTE,
    Event,
    callback,
)
from ..core.statistics import zone_of
from .bulk import executemany, values_statement
from .database import Database
from .history import History
from .retention import Purger
from .rollups import Rollups
from .schema import events, state_attributes, states, states_meta

_LOGGER = logging.getLogger(__name__)

DEFAULT_COMMIT_INTERVAL = 1.0
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_QUEUE = 100_000
DEFAULT_RETRY_INITIAL = 0.5
DEFAULT_RETRY_MAX = 30.0
DEFAULT_STOP_TIMEOUT = 30.0
ALWAYS_EXCLUDED = frozenset({EVENT_STATE_REPORTED})

SPOOL_NAME = "recorder_spool.jsonl"
REPLAY_NAME = "recorder_spool.replay.jsonl"

_STATE_COLUMNS = (
    "metadata_id",
    "state",
    "value",
    "attributes_id",
    "last_changed_ts",
    "last_updated_ts",
    "context_id",
    "context_user_id",
    "context_parent_id",
)
_EVENT_COLUMNS = (
    "event_type",
    "event_data",
    "origin",
    "time_fired_ts",
    "context_id",
    "context_user_id",
    "context_parent_id",
)
_ATTR_CACHE_MAX = 20_000


class _GiveUp(Exception):
    """The stop deadline passed while the database was still failing."""


@dataclass(slots=True)
class _Job:
    """One batch for the committer: its source items (for the spool) and built rows."""

    items: list[Any]
    state_rows: list[tuple[Any, ...]]
    event_rows: list[tuple[Any, ...]]
    replayed: int  # rows of it that came from the spool


@dataclass(slots=True)
class _FlushMarker:
    """Queued behind batches: the committer resolves the waiters once it reaches it."""

    waiters: list[asyncio.Future[None]]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, MappingProxyType):
        return dict(obj)
    as_dict = getattr(obj, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


_dumps_compact = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=_json_default
).encode
_dumps_sorted = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=_json_default
).encode


def _is_row_error(err: BaseException) -> bool:
    """True when the database rejected the rows' content, so retrying them cannot succeed."""
    return isinstance(err, (IntegrityError, DataError, TypeError, ValueError, UnicodeError))


def _to_row(event: Event) -> tuple[Any, ...] | None:
    """An event as a self-contained, JSON-able row (for the spool); None for a removal."""
    ctx = event.context
    if event.event_type == EVENT_STATE_CHANGED:
        new = event.data.get("new_state")
        if new is None:
            return None
        text = new.state
        try:
            value: float | None = float(text)
        except (TypeError, ValueError):
            value = None
        nctx = new.context
        return (
            "s",
            new.entity_id,
            text,
            value,
            dict(new.attributes) if new.attributes else None,
            new.last_changed,
            new.last_updated,
            nctx.id,
            nctx.user_id,
            nctx.parent_id,
        )
    return (
        "e",
        event.event_type,
        _dumps_compact(event.data) if event.data else None,
        event.origin,
        event.time_fired,
        ctx.id,
        ctx.user_id,
        ctx.parent_id,
    )


def _insert_ignoring_duplicates(conn: Connection, table: Any) -> Any:
    """INSERT that skips rows whose unique key exists (PostgreSQL and SQLite both say it)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


class Recorder:
    """Batches states and events from the bus into the database; see the module docstring."""

    def __init__(self, hub: Any, database: Database, options: Mapping[str, Any] | None = None):
        options = dict(options or {})
        self.hub = hub
        self.database = database
        self.commit_interval = float(options.get("commit_interval", DEFAULT_COMMIT_INTERVAL))
        self.max_batch = int(options.get("max_batch", DEFAULT_MAX_BATCH))
        self.max_queue = int(options.get("max_queue", DEFAULT_MAX_QUEUE))
        self.retry_initial = float(options.get("retry_initial", DEFAULT_RETRY_INITIAL))
        self.retry_max = float(options.get("retry_max", DEFAULT_RETRY_MAX))
        self.stop_timeout = float(options.get("stop_timeout", DEFAULT_STOP_TIMEOUT))
        if self.max_batch < 1 or self.max_queue < self.max_batch:
            raise ValueError("recorder: need 1 <= max_batch <= max_queue")
        self.exclude_event_types: frozenset[str] = ALWAYS_EXCLUDED | frozenset(
            options.get("exclude_event_types", ())
        )
        config_dir = Path(getattr(hub, "config_dir", None) or database.config_dir)
        self.spool_path = Path(options.get("spool_path") or config_dir / SPOOL_NAME)
        self.replay_path = self.spool_path.with_name(REPLAY_NAME)
        self.spool_chunk = min(self.max_batch, 1000)
        #: 5 min / 1 h / 1 d aggregates, written with each batch (hub/storage/rollups.py)
        self.rollups: Rollups | None = None
        zone = zone_of(options.get("time_zone") or getattr(hub, "time_zone", None))
        if options.get("rollups", True):
            self.rollups = Rollups(zone)
        self._batch_rollup_rows = 0
        #: retention per level, purged in small batches (hub/storage/retention.py)
        self.purger = Purger(database, options)
        #: chart points for the history API (raw or rollups, resolution chosen by span)
        self.reader = History(database, zone, self.purger.keep)
        # Back-pressure starts at the high-water mark, the spool at max_queue; `ready` is set
        # again below the low-water mark.
        self._high_water = max(self.max_batch, self.max_queue * 3 // 4)
        self._low_water = self.max_queue // 2

        # Hot path state.
        self._queue: list[Any] = []  # Events (or spooled row tuples), oldest first
        self._overflow: list[tuple[Any, ...]] = []  # rows beyond max_queue, not yet spooled
        self._overflowing = False
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set while there is room; producers may await it
        self.ready.set()
        #: set while commits are failing (cleared by the next successful commit)
        self.error_event = asyncio.Event()

        # Writer state.
        self._task: asyncio.Task[None] | None = None
        self._unsub: Callable[[], None] | None = None
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._stop_deadline = 0.0
        self._spool_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._spool_futures: set[asyncio.Future[None]] = set()
        self._meta_ids: dict[str, int] = {}
        self._attr_ids: dict[str, int] = {}
        self._last_attrs: dict[str, tuple[Any, int]] = {}
        self._sql: dict[str, tuple[str, bool, Any]] = {}
        self._jobs: asyncio.Queue[_Job | _FlushMarker] = asyncio.Queue(maxsize=1)
        self._gave_up = False
        self._building: list[Any] = []  # items taken from the queue, rows being built
        self._committing: _Job | None = None
        self._unwritten: list[Any] = []  # items handed back when the stop deadline passed

        # Counters (exposed by stats()).
        self.rows_written = 0
        self.rollup_rows_written = 0
        self.states_written = 0
        self.events_written = 0
        self.batches = 0
        self.commit_errors = 0
        self.spooled = 0
        self.spool_pending = 0
        self.replayed = 0
        self.dropped = 0
        self.overflow_episodes = 0
        self.backpressure_episodes = 0
        self.last_commit_duration = 0.0
        self.last_commit_at: float | None = None
        self.last_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def async_start(self) -> None:
        """Load the entity-id cache, find a spool left by a previous run, start writing."""
        if self._task is not None:
            return
        self._spool_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="recorder-spool"
        )
        async with self.database.engine.connect() as conn:
            result = await conn.execute(select(states_meta.c.entity_id, states_meta.c.metadata_id))
            self._meta_ids = {row[0]: row[1] for row in result}
        loop = asyncio.get_running_loop()
        leftover = await loop.run_in_executor(self._spool_executor, self._count_spooled)
        if leftover:
            self.spool_pending = leftover
            _LOGGER.warning(
                "Recorder found %d spooled rows from a previous run in %s; replaying them",
                leftover,
                self.spool_path.parent,
            )
        self._stopping = False
        self._gave_up = False
        self._stop_requested.clear()
        self._jobs = asyncio.Queue(maxsize=1)
        self._unsub = self.hub.bus.listen(MATCH_ALL, self._on_event)
        self._task = loop.create_task(self._run(), name="recorder writer")
        self.purger.start()

    async def async_stop(self) -> None:
        """Stop listening and commit everything received so far (spool it if the DB is down)."""
        if self._task is None:
            return
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        await self.purger.stop()
        self._stopping = True
        self._stop_deadline = asyncio.get_running_loop().time() + self.stop_timeout
        self._stop_requested.set()
        try:
            if not self._task.done():
                await self.async_flush()
        finally:
            task, self._task = self._task, None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await self._spool_leftovers()
            executor, self._spool_executor = self._spool_executor, None
            if executor is not None:
                executor.shutdown(wait=True)
            for waiter in self._flush_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._flush_waiters = []
        _LOGGER.info(
            "Recorder stopped: %d rows in %d batches, %d spooled, %d dropped",
            self.rows_written,
            self.batches,
            self.spooled,
            self.dropped,
        )

    async def async_flush(self) -> None:
        """Return once everything queued (or spooled) before the call is committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("Recorder is not running")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        self._wake.set()
        await waiter

    async def wait_capacity(self) -> None:
        """Back-pressure for producers that can slow down: returns when the queue has room."""
        await self.ready.wait()

    # -- hot path -------------------------------------------------------------------------
    @callback
    def _on_event(self, event: Event) -> None:
        if event.event_type in self.exclude_event_types or event.origin == ORIGIN_REMOTE:
            # A remote event (another worker's mirrored state) is that worker's to record.
            return
        if self._overflowing:
            self._overflow_add(event)
            return
        queue = self._queue
        queue.append(event)
        size = len(queue)
        if size >= self.max_batch:
            self._wake.set()
            if size >= self._high_water:
                self._pressure(size)

    def _pressure(self, size: int) -> None:
        """Above the high-water mark: back-pressure; at max_queue the spool and one warning.

        Back-pressure alone is normal under a burst (producers that await `wait_capacity()`
        just slow down), so it is counted, not logged as a warning.
        """
        if self.ready.is_set():
            self.ready.clear()
            self.backpressure_episodes += 1
            _LOGGER.debug("Recorder back-pressure on: %d rows waiting", size)
        if size >= self.max_queue and not self._overflowing:
            self._overflowing = True
            self.overflow_episodes += 1
            _LOGGER.warning(
                "Recorder queue is full (%d rows waiting for database %s): rows go to %s "
                "until it catches up",
                size,
                self.database.masked_url,
                self.spool_path,
            )

    def _overflow_add(self, event: Event) -> None:
        row = _to_row(event)  # context ids are fixed here, on the loop, not in a thread
        if row is None:
            return
        self._overflow.append(row)
        if len(self._overflow) >= self.spool_chunk:
            self._spool_overflow()

    def _spool_overflow(self) -> None:
        rows, self._overflow = self._overflow, []
        if not rows:
            return
        executor = self._spool_executor
        if executor is None:  # stopped: nowhere to write; keep them in memory
            self._overflow = rows
            return
        self.spooled += len(rows)
        self.spool_pending += len(rows)
        future = asyncio.wrap_future(executor.submit(self._append_spool, rows))
        self._spool_futures.add(future)
        future.add_done_callback(functools.partial(self._spool_done, count=len(rows)))

    def _spool_done(self, future: asyncio.Future[None], *, count: int) -> None:
        self._spool_futures.discard(future)
        if future.cancelled():
            return
        err = future.exception()
        if err is not None:
            self.spool_pending -= count
            self.dropped += count
            _LOGGER.error(
                "Recorder could not write %d rows to spool %s; they are lost",
                count,
                self.spool_path,
                exc_info=err,
            )

    # -- spool file (runs in the spool thread) --------------------------------------------
    def _append_spool(self, rows: list[tuple[Any, ...]]) -> None:
        data = "".join(_dumps_compact(row) + "\n" for row in rows)
        with open(self.spool_path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _count_spooled(self) -> int:
        total = 0
        for path in (self.replay_path, self.spool_path):
            if path.exists():
                with open(path, encoding="utf-8") as fh:
                    total += sum(1 for line in fh if line.strip())
        return total

    def _rotate_spool(self) -> Path | None:
        """The file to replay next: a half-replayed one first, else the active spool."""
        if self.replay_path.exists():
            return self.replay_path
        if self.spool_path.exists():
            os.replace(self.spool_path, self.replay_path)
            return self.replay_path
        return None

    @staticmethod
    def _read_chunk(fh: Any, count: int) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(tuple(json.loads(line)))
            except ValueError:
                _LOGGER.error("Recorder spool: skipping unreadable line %r", line[:200])
                continue
            if len(rows) >= count:
                break
        return rows

    # -- writer: stage 1, turns queued events into rows -----------------------------------
    async def _run(self) -> None:
        committer = asyncio.get_running_loop().create_task(
            self._committer(), name="recorder committer"
        )
        try:
            while not self._gave_up:
                if (
                    len(self._queue) < self.max_batch
                    and not self._flush_waiters
                    and not self._overflow
                ):
                    try:
                        async with asyncio.timeout(self.commit_interval):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                self._wake.clear()
                try:
                    await self._cycle()
                except asyncio.CancelledError:
                    raise
                except _GiveUp:
                    break
                except Exception:
                    _LOGGER.exception("Recorder writer cycle failed; retrying")
        finally:
            committer.cancel()
            try:
                await committer
            except asyncio.CancelledError:
                pass

    async def _cycle(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        # Everything queued now is written; what arrives meanwhile goes in the next cycle,
        # which starts at once when a full batch is waiting (_run does not wait then).
        todo = len(self._queue)
        while todo > 0:
            take = min(todo, self.max_batch)
            items = self._queue[:take]
            del self._queue[:take]
            await self._submit(items, 0)
            todo -= take
        if self._overflowing or self.spool_pending or self._overflow:
            await self._drain_spool()
        # The committer works in order: when it reaches this marker, all of the above is in.
        await self._put(_FlushMarker(waiters))

    async def _submit(self, items: list[Any], replayed: int) -> None:
        """Build rows for `items` and hand them to the committer (waits while it is busy).

        Building here while the committer waits on the database is what lets row building
        overlap with SQLite's own work (which runs in aiosqlite's thread).
        """
        self._building = items
        state_rows, event_rows = await self._build(items)
        self._building = []
        await self._put(_Job(items, state_rows, event_rows, replayed))

    async def _put(self, job: _Job | _FlushMarker) -> None:
        """Queue work for the committer; once it has given up, hand everything back."""
        if self._gave_up:
            self._reclaim(job)
            raise _GiveUp
        await self._jobs.put(job)
        if self._gave_up:
            self._drain_jobs()
            raise _GiveUp

    def _reclaim(self, job: _Job | _FlushMarker) -> None:
        if isinstance(job, _FlushMarker):
            self._release_waiters(job.waiters)
        else:
            self._unwritten.extend(job.items)

    def _drain_jobs(self) -> None:
        while not self._jobs.empty():
            self._reclaim(self._jobs.get_nowait())

    async def _build(self, items: list[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        meta_ids = self._meta_ids
        attr_ids = self._attr_ids
        last_attrs = self._last_attrs
        state_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        add_state = state_rows.append
        missing = False
        for item in items:
            if item.__class__ is Event:
                if item.event_type != EVENT_STATE_CHANGED:
                    ctx = item.context
                    data = item.data
                    event_rows.append(
                        (
                            item.event_type,
                            _dumps_compact(data) if data else None,
                            item.origin,
                            item.time_fired,
                            ctx.id,
                            ctx.user_id,
                            ctx.parent_id,
                        )
                    )
                    continue
                new = item.data.get("new_state")
                if new is None:  # removal: the entity's history simply ends
                    continue
                entity_id = new.entity_id
                text = new.state
                try:
                    value: float | None = float(text)
                except (TypeError, ValueError):
                    value = None
                attrs: Any = new.attributes
                changed = new.last_changed
                updated = new.last_updated
                ctx = new.context
                context_id = ctx.id
                user_id = ctx.user_id
                parent_id = ctx.parent_id
            elif item[0] == "s":
                (_, entity_id, text, value, attrs, changed, updated, context_id, user_id,
                 parent_id) = item
            else:
                event_rows.append(item[1:])
                continue

            metadata_id: Any = meta_ids.get(entity_id)
            if metadata_id is None:
                metadata_id = entity_id  # placeholder, resolved below
                missing = True
            if not attrs:
                attributes_id: Any = None
            else:
                last = last_attrs.get(entity_id)
                # an entity's unchanged attributes are the same proxy from State to State
                if last is not None and (last[0] is attrs or last[0] == attrs):
                    attributes_id = last[1]
                else:
                    shared = _dumps_sorted(attrs)
                    attributes_id = attr_ids.get(shared)
                    if attributes_id is None:
                        attributes_id = shared  # placeholder, resolved below
                        missing = True
                    else:
                        last_attrs[entity_id] = (attrs, attributes_id)
            add_state(
                (
                    metadata_id,
                    text,
                    value,
                    attributes_id,
                    None if changed == updated else changed,
                    updated,
                    context_id,
                    user_id,
                    parent_id,
                )
            )
        if missing:
            state_rows = await self._fill_ids(state_rows)
        return state_rows, event_rows

    async def _fill_ids(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Replace entity-id and attribute placeholders by ids, creating what is new.

        New ids are committed in their own small transaction before the rows that use them,
        so an id in the caches always exists in the database, whatever happens to a batch.
        """
        entity_ids = {row[0] for row in rows if row[0].__class__ is str}
        shared = {row[3] for row in rows if row[3].__class__ is str}
        delay = self.retry_initial
        failures = 0
        while True:
            try:
                async with self.database.engine.begin() as conn:
                    found_meta, found_attrs = await conn.run_sync(
                        self._resolve_sync, entity_ids, shared
                    )
                break
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - keep the rows, retry
                failures += 1
                self._commit_failed(err, failures, len(rows))
                await self._backoff(delay, err)
                delay = min(delay * 2, self.retry_max)
        # Committed: only now may the ids enter the caches.
        self._meta_ids.update(found_meta)
        if len(self._attr_ids) + len(found_attrs) > _ATTR_CACHE_MAX:
            self._attr_ids.clear()
            self._last_attrs.clear()
        self._attr_ids.update(found_attrs)
        meta_ids = self._meta_ids
        attr_ids = self._attr_ids
        out = []
        for row in rows:
            metadata_id, attributes_id = row[0], row[3]
            if metadata_id.__class__ is str or attributes_id.__class__ is str:
                row = (
                    meta_ids[metadata_id] if metadata_id.__class__ is str else metadata_id,
                    row[1],
                    row[2],
                    attr_ids[attributes_id] if attributes_id.__class__ is str else attributes_id,
                    *row[4:],
                )
            out.append(row)
        return out

    def _resolve_sync(
        self, conn: Connection, entity_ids: set[str], shared: set[str]
    ) -> tuple[dict[str, int], dict[str, int]]:
        found_meta: dict[str, int] = {}
        wanted = sorted(entity_ids)
        for offset in range(0, len(wanted), 500):
            chunk = wanted[offset : offset + 500]
            query = select(states_meta.c.entity_id, states_meta.c.metadata_id).where(
                states_meta.c.entity_id.in_(chunk)
            )
            found_meta.update({row[0]: row[1] for row in conn.execute(query)})
            new = [entity_id for entity_id in chunk if entity_id not in found_meta]
            if new:
                # Another worker on the same database may add the same entity at this moment:
                # its row wins and ours is skipped (the select below reads whichever exists).
                conn.execute(_insert_ignoring_duplicates(conn, states_meta),
                             [{"entity_id": e} for e in new])
                found_meta.update({row[0]: row[1] for row in conn.execute(query)})
        found_attrs: dict[str, int] = {}
        for text in shared:
            digest = zlib.crc32(text.encode("utf-8"))
            attributes_id = conn.execute(
                select(state_attributes.c.attributes_id).where(
                    state_attributes.c.hash == digest, state_attributes.c.shared_attrs == text
                )
            ).scalar()
            if attributes_id is None:
                attributes_id = conn.execute(
                    insert(state_attributes)
                    .values(hash=digest, shared_attrs=text)
                    .returning(state_attributes.c.attributes_id)
                ).scalar_one()
            found_attrs[text] = attributes_id
        return found_meta, found_attrs

    # -- writer: stage 2, commits one transaction per batch -------------------------------
    async def _committer(self) -> None:
        while True:
            job = await self._jobs.get()
            if isinstance(job, _FlushMarker):
                self._release_waiters(job.waiters)
                continue
            self._committing = job
            try:
                await self._commit(job.state_rows, job.event_rows)
            except _GiveUp:
                self._give_up(job)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("Recorder committer failed on a batch; it goes back in the queue")
                self._queue[:0] = job.items
                self._committing = None
                continue
            self._committing = None
            if job.replayed:
                self.spool_pending = max(0, self.spool_pending - job.replayed)
                self.replayed += job.replayed
            self._update_ready()

    def _give_up(self, job: _Job) -> None:
        """Stop deadline passed with the database failing: hand every unwritten row back."""
        self._gave_up = True
        self._committing = None
        self._unwritten.extend(job.items)
        self._drain_jobs()
        self._release_waiters(self._flush_waiters)
        self._flush_waiters = []

    @staticmethod
    def _release_waiters(waiters: Iterable[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _update_ready(self) -> None:
        if (
            not self.ready.is_set()
            and not self._overflowing
            and len(self._queue) < self._low_water
        ):
            self.ready.set()
            _LOGGER.debug("Recorder back-pressure off")

    async def _drain_spool(self) -> None:
        """Hand the overflow to the spool, replay one spool file, leave overflow if caught up."""
        loop = asyncio.get_running_loop()
        executor = self._spool_executor
        assert executor is not None
        self._spool_overflow()
        if self._spool_futures:
            await asyncio.gather(*list(self._spool_futures), return_exceptions=True)
        path = await loop.run_in_executor(executor, self._rotate_spool)
        if path is not None:
            fh = await loop.run_in_executor(executor, open, path, "r", 1 << 16, "utf-8")
            try:
                while True:
                    rows = await loop.run_in_executor(
                        executor, self._read_chunk, fh, self.max_batch
                    )
                    if not rows:
                        break
                    await self._submit(rows, len(rows))
            finally:
                await loop.run_in_executor(executor, fh.close)
            # Wait until the committer has every replayed row before deleting the file.
            done: asyncio.Future[None] = loop.create_future()
            await self._put(_FlushMarker([done]))
            await done
            if self._gave_up:
                raise _GiveUp
            await loop.run_in_executor(executor, path.unlink)
            _LOGGER.info("Recorder replayed spool %s", path.name)
        if (
            self._overflowing
            and not self._spool_futures
            and not self.spool_path.exists()
            and len(self._queue) + len(self._overflow) < self._low_water
        ):
            # Caught up: what arrived since the last spool hand-off joins the queue in order.
            self._queue.extend(self._overflow)
            self._overflow = []
            self.spool_pending = 0
            self._overflowing = False
            _LOGGER.warning(
                "Recorder caught up with database %s (%d rows went through the spool so far)",
                self.database.masked_url,
                self.spooled,
            )
            self._update_ready()

    async def _spool_leftovers(self) -> None:
        """At stop, rows that could not be committed go to the spool for the next start."""
        left: list[tuple[Any, ...]] = []
        self._drain_jobs()
        pending = [*self._unwritten, *self._building, *self._queue]
        if self._committing is not None:
            pending[:0] = self._committing.items
        for item in pending:
            row = _to_row(item) if isinstance(item, Event) else item
            if row is not None:
                left.append(row)
        self._unwritten, self._building, self._queue, self._committing = [], [], [], None
        left.extend(self._overflow)
        self._overflow = []
        if self._spool_futures:
            await asyncio.gather(*list(self._spool_futures), return_exceptions=True)
        if not left or self._spool_executor is None:
            return
        self._overflow = left
        self._spool_overflow()
        if self._spool_futures:
            await asyncio.gather(*list(self._spool_futures), return_exceptions=True)
        _LOGGER.warning(
            "Recorder stopped with the database failing; %d rows kept in %s for the next start",
            len(left),
            self.spool_path,
        )

    async def _commit(self, state_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]]) -> None:
        """Commit the rows in one transaction, retrying with backoff until it works."""
        delay = self.retry_initial
        failures = 0
        while True:
            try:
                await self._commit_once(state_rows, event_rows)
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure: keep the rows, retry
                failures += 1
                self._commit_failed(err, failures, len(state_rows) + len(event_rows))
                if _is_row_error(err) and failures >= 2:
                    await self._isolate(state_rows, event_rows)
                    return
                await self._backoff(delay, err)
                delay = min(delay * 2, self.retry_max)

    async def _backoff(self, delay: float, err: BaseException) -> None:
        """Wait before a retry; a stop request cuts a long wait short, its deadline ends it."""
        if self._stopping:
            remaining = self._stop_deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise _GiveUp from err
            await asyncio.sleep(min(delay, remaining))
            return
        try:
            async with asyncio.timeout(delay):
                await self._stop_requested.wait()
        except TimeoutError:
            pass

    def _commit_failed(self, err: BaseException, failures: int, rows: int) -> None:
        self.commit_errors += 1
        self.last_error = f"{type(err).__name__}: {err}"
        self.error_event.set()
        if failures == 1:
            _LOGGER.warning(
                "Recorder commit of %d rows to %s failed (%s); retrying with backoff",
                rows,
                self.database.masked_url,
                self.last_error,
            )
        elif failures % 10 == 0:
            _LOGGER.warning(
                "Recorder commit still failing after %d attempts: %s", failures, self.last_error
            )

    async def _isolate(
        self, state_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]]
    ) -> None:
        """Find the rows the database refuses (by bisection), drop them, keep the rest."""
        tagged = [(True, row) for row in state_rows] + [(False, row) for row in event_rows]

        async def attempt(part: list[tuple[bool, tuple[Any, ...]]]) -> None:
            s_rows = [row for is_state, row in part if is_state]
            e_rows = [row for is_state, row in part if not is_state]
            try:
                await self._commit_once(s_rows, e_rows)
                return
            except Exception as err:  # noqa: BLE001
                if not _is_row_error(err):
                    await self._commit(s_rows, e_rows)
                    return
                if len(part) == 1:
                    self.dropped += 1
                    _LOGGER.error("Recorder dropped a row the database refuses: %s (%r)",
                                  err, part[0][1])
                    return
            mid = len(part) // 2
            await attempt(part[:mid])
            await attempt(part[mid:])

        await attempt(tagged)

    async def _commit_once(
        self, state_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]]
    ) -> None:
        start = time.perf_counter()
        async with self.database.engine.begin() as conn:
            await conn.run_sync(self._insert_sync, state_rows, event_rows)
        self.last_commit_duration = time.perf_counter() - start
        self.last_commit_at = time.time()
        self.batches += 1
        self.states_written += len(state_rows)
        self.events_written += len(event_rows)
        self.rows_written += len(state_rows) + len(event_rows)
        self.rollup_rows_written += self._batch_rollup_rows
        if self.error_event.is_set():
            self.error_event.clear()
            _LOGGER.warning("Recorder commits work again (database %s)", self.database.masked_url)

    def _insert_sync(
        self,
        conn: Connection,
        state_rows: list[tuple[Any, ...]],
        event_rows: list[tuple[Any, ...]],
    ) -> None:
        self._batch_rollup_rows = 0
        if state_rows:
            self._executemany(conn, "states", state_rows)
            if self.rollups is not None:
                # same transaction: the batch and its aggregate commit together or not at all
                self._batch_rollup_rows = self.rollups.add_sync(conn, state_rows)
        if event_rows:
            self._executemany(conn, "events", event_rows)

    def _executemany(self, conn: Connection, which: str, rows: list[tuple[Any, ...]]) -> None:
        """One executemany with the dialect's own compiled INSERT (hub/storage/bulk.py)."""
        if which == "states":
            table, columns = states, _STATE_COLUMNS
        else:
            table, columns = events, _EVENT_COLUMNS
        executemany(conn, self._sql, which, lambda: values_statement(insert(table), columns),
                    columns, rows)

    # -- reads and metrics ----------------------------------------------------------------
    async def history(
        self,
        entity_id: str,
        start: float | datetime | None = None,
        end: float | datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Committed raw readings of one entity, oldest first (start inclusive, end exclusive)."""
        s, m = states, states_meta
        query = (
            select(s.c.state, s.c.value, s.c.last_changed_ts, s.c.last_updated_ts)
            .join(m, m.c.metadata_id == s.c.metadata_id)
            .where(m.c.entity_id == entity_id)
            .order_by(s.c.last_updated_ts, s.c.state_id)
        )
        if start is not None:
            query = query.where(s.c.last_updated_ts >= _ts(start))
        if end is not None:
            query = query.where(s.c.last_updated_ts < _ts(end))
        async with self.database.engine.connect() as conn:
            result = await conn.execute(query)
            return [
                {
                    "state": row[0],
                    "value": row[1],
                    "last_changed": row[2] if row[2] is not None else row[3],
                    "last_updated": row[3],
                }
                for row in result
            ]

    async def state_before(self, entity_id: str, when: float | datetime) -> dict[str, Any] | None:
        """The last committed reading of an entity before `when` (what it read then), or None.

        A dry run starts from these, so a value already above a limit at the start of the
        window is not mistaken for a crossing at its first reading inside it.
        """
        s, m = states, states_meta
        query = (
            select(s.c.state, s.c.value, s.c.last_changed_ts, s.c.last_updated_ts)
            .join(m, m.c.metadata_id == s.c.metadata_id)
            .where(m.c.entity_id == entity_id, s.c.last_updated_ts < _ts(when))
            .order_by(s.c.last_updated_ts.desc(), s.c.state_id.desc())
            .limit(1)
        )
        async with self.database.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return {"state": row[0], "value": row[1],
                "last_changed": row[2] if row[2] is not None else row[3],
                "last_updated": row[3]}

    async def events_between(
        self, event_types: Iterable[str], start: float | datetime, end: float | datetime
    ) -> list[dict[str, Any]]:
        """Committed events of these types, oldest first (start inclusive, end exclusive)."""
        e = events
        query = (
            select(e.c.event_type, e.c.event_data, e.c.time_fired_ts, e.c.context_id,
                   e.c.context_user_id, e.c.context_parent_id)
            .where(e.c.event_type.in_(sorted(set(event_types))),
                   e.c.time_fired_ts >= _ts(start), e.c.time_fired_ts < _ts(end))
            .order_by(e.c.time_fired_ts, e.c.event_id)
        )
        async with self.database.engine.connect() as conn:
            result = await conn.execute(query)
            return [
                {"event_type": row[0], "data": json.loads(row[1]) if row[1] else {},
                 "time_fired": row[2], "context_id": row[3], "context_user_id": row[4],
                 "context_parent_id": row[5]}
                for row in result
            ]

    @property
    def queue_length(self) -> int:
        return len(self._queue) + len(self._overflow)

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics (names are stable; add, don't rename)."""
        return {
            "rows_written": self.rows_written,
            "rollup_rows_written": self.rollup_rows_written,
            "states_written": self.states_written,
            "events_written": self.events_written,
            "batches": self.batches,
            "queue_length": self.queue_length,
            "max_queue": self.max_queue,
            "overflowing": self._overflowing,
            "overflow_episodes": self.overflow_episodes,
            "backpressure_episodes": self.backpressure_episodes,
            "ready": self.ready.is_set(),
            "spooled": self.spooled,
            "spool_pending": self.spool_pending,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "commit_errors": self.commit_errors,
            "last_commit_duration": self.last_commit_duration,
            "last_commit_at": self.last_commit_at,
            "last_error": self.last_error,
            **self.purger.stats(),
        }


def _ts(value: float | datetime) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
