"""One poll scheduler per link: a single task walks the units on a line in order of due time.

Why not a task per unit: a link carries one request at a time anyway (an RS485 line, a gateway
socket, a DTU), so fifty pollers on one line were fifty tasks queueing on one lock — every
request paid a lock future, a wake-up and a timer per unit, and that bookkeeping cost more CPU
than the Modbus exchange itself. A scheduler per link does what the line does: it takes the
unit that is due first, polls it, asks it when it wants to be polled next, and sleeps only
when nobody is due. Control calls (a trip, a setpoint) still go straight to the link and wait
on its lock for at most one poll request.

Device plugins (arcm, arc_fault, …) get a scheduler from `hub.links.scheduler(link)` and add a
`PollJob`: a coroutine function that polls once and returns the loop time (`loop.time()`) when
it wants to run again. The scheduler never looks inside a poll; a poll that raises is logged
and retried after `retry_after` seconds, so one broken device never stops its neighbours.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

_LOGGER = logging.getLogger(__name__)

#: Polls in a row that may complete without the scheduler waiting for anything; then it yields
#: once to the event loop. A poll normally suspends on its I/O, but one that fails at once (a
#: link that is down raises before sending) would otherwise let a long list of due units run
#: back to back without the loop seeing anything else.
_YIELD_EVERY = 32

#: A scheduler that has nothing due sleeps until the next multiple of this many seconds of loop
#: time at or after the due time. Every link's scheduler in the process then wakes on the same
#: ticks, so the polls due within one tick run together: one loop wake-up serves many polls
#: (their requests overlap on their links) instead of one wake-up, one timer and one idle
#: `epoll_wait` per poll. At 1,000 detectors every 5 s that was most of the hub's CPU. A poll
#: starts at most one tick late; a unit's phase is not shifted (its next due time is computed
#: from the unrounded one).
POLL_TICK = 0.1

PollFunction = Callable[[], Awaitable[float]]


class PollJob:
    """One unit's place in its link's schedule (returned by `LinkScheduler.add`)."""

    __slots__ = ("_generation", "active", "name", "poll", "retry_after", "scheduler")

    def __init__(self, scheduler: LinkScheduler, name: str, poll: PollFunction,
                 retry_after: float) -> None:
        self.scheduler = scheduler
        self.name = name
        self.poll = poll
        self.retry_after = retry_after
        self.active = True
        # Bumped on every (re)schedule; heap entries of an older generation are stale.
        self._generation = 0

    def reschedule(self, when: float) -> None:
        """Move the next poll to loop time `when` (e.g. now, after the unit's schedule changed)."""
        if self.active and self.scheduler._current is not self:
            self.scheduler._push(self, when)

    async def cancel(self) -> None:
        """Take the unit off the line; if it is being polled right now, that poll is stopped."""
        await self.scheduler.remove(self)

    def __repr__(self) -> str:
        return f"<PollJob {self.name}>"


class LinkScheduler:
    """Polls the units of one link, one at a time, each when it falls due."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.polls = 0
        self.poll_errors = 0
        self._jobs: set[PollJob] = set()
        self._heap: list[tuple[float, int, int, PollJob]] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._current: PollJob | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_until = 0.0
        self._closed = False

    def __repr__(self) -> str:
        return f"<LinkScheduler {self.name} jobs={len(self._jobs)}>"

    def __len__(self) -> int:
        return len(self._jobs)

    # -- jobs -----------------------------------------------------------------------------
    def add(self, name: str, poll: PollFunction, first_due: float,
            retry_after: float = 1.0) -> PollJob:
        """Schedule `poll` at loop time `first_due`; it returns the loop time of its next run."""
        if self._closed:
            raise RuntimeError(f"{self.name}: scheduler is closed")
        job = PollJob(self, name, poll, retry_after)
        self._jobs.add(job)
        self._push(job, first_due)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"poll {self.name}")
        return job

    def add_periodic(self, name: str, poll: Callable[[], Awaitable[Any]], interval: float,
                     spread: float) -> PollJob:
        """Poll every `interval` seconds, starting at a random point of the next `spread`.

        Keeps its phase (due times are start + k * interval), but a unit that fell behind (a
        slow line) carries on from now instead of bursting to catch up. The random start
        spreads a thousand detectors that start together over the first `spread` seconds.
        """
        first = asyncio.get_running_loop().time() + random.uniform(0, spread)
        return self.add(name, _Periodic(poll, interval, first), first, retry_after=interval)

    async def remove(self, job: PollJob) -> None:
        job.active = False
        self._jobs.discard(job)
        task = self._task
        if self._current is job and task is not None and not task.done():
            # Stop the poll in flight the way a per-unit task used to be stopped, then carry on
            # with the others in a fresh runner. Insists: Python 3.11's wait_for (inside
            # pymodbus) can swallow a cancellation that lands just as a response arrives.
            self._task = None
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.5)
            if self._jobs and not self._closed and (self._task is None or self._task.done()):
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name=f"poll {self.name}")
        elif not self._jobs:
            self._wake()  # the runner ends when it finds nobody left

    async def close(self) -> None:
        """Stop polling for good (the link is closing)."""
        self._closed = True
        for job in list(self._jobs):
            job.active = False
        self._jobs.clear()
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        self._heap.clear()

    # -- the runner -----------------------------------------------------------------------
    def _push(self, job: PollJob, when: float) -> None:
        job._generation += 1
        heapq.heappush(self._heap, (when, next(self._order), job._generation, job))
        if self._waiter is not None and when < self._waiting_until:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        in_a_row = 0
        try:
            while self._jobs and heap:
                when, _order, generation, job = heap[0]
                if not job.active or generation != job._generation:
                    heapq.heappop(heap)  # removed or rescheduled since
                    continue
                now = loop.time()
                if when > now:
                    in_a_row = 0
                    await self._sleep_until(loop, when)
                    continue
                heapq.heappop(heap)
                self._current = job
                try:
                    next_due = await job.poll()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.poll_errors += 1
                    _LOGGER.exception("%s: poll of %s failed; retrying in %gs", self.name,
                                      job.name, job.retry_after)
                    next_due = loop.time() + job.retry_after
                finally:
                    if self._current is job:
                        self._current = None
                self.polls += 1
                if job.active and generation == job._generation:
                    self._push(job, next_due)
                in_a_row += 1
                if in_a_row >= _YIELD_EVERY:
                    in_a_row = 0
                    await asyncio.sleep(0)
        finally:
            if not self._jobs and self._task in (None, asyncio.current_task()):
                heap.clear()

    async def _sleep_until(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Sleep until the tick at or after `when`, or until a job is added, rescheduled
        earlier, or removed."""
        waiter = self._waiter = loop.create_future()
        self._waiting_until = when
        if POLL_TICK > 0:
            when = math.ceil(when / POLL_TICK) * POLL_TICK
        timer = loop.call_at(when, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


class _Periodic:
    """The poll function of `LinkScheduler.add_periodic`."""

    __slots__ = ("interval", "next_due", "poll")

    def __init__(self, poll: Callable[[], Awaitable[Any]], interval: float,
                 first_due: float) -> None:
        self.poll = poll
        self.interval = interval
        self.next_due = first_due

    async def __call__(self) -> float:
        await self.poll()
        self.next_due = max(self.next_due + self.interval, asyncio.get_running_loop().time())
        return self.next_due


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
