"""LinkScheduler: one task per link polls its units in order of due time, one at a time.

Polls here are coroutines that record themselves and return their next due time; the tests
wait on events (with a failure bound), never on the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from hub.core.links import LinkRegistry
from hub.core.polling import LinkScheduler, _Periodic

BOUND = 10.0  # failure bound for awaited conditions, never a synchronisation delay
FAR = 1e6  # a due time that never comes during a test


class Recorder:
    """Polls that log their names; `until(n)` resolves once n polls have run."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.running = 0
        self.overlap = False
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def poll(self, name: str, next_due: Callable[[], float], gate: asyncio.Event | None = None,
             fail: bool = False) -> Callable[[], Any]:
        async def run() -> float:
            self.running += 1
            self.overlap |= self.running > 1
            self._check()
            try:
                if gate is not None:
                    await gate.wait()
                else:
                    await asyncio.sleep(0)  # a real poll suspends on its I/O
                self.log.append(name)
                if fail:
                    raise RuntimeError(f"{name} is broken")
                return next_due()
            finally:
                self.running -= 1
                self._check()

        return run

    def _check(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)

    async def until(self, predicate: Callable[[], bool]) -> None:
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        await asyncio.wait_for(future, BOUND)


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_units_are_polled_in_due_order_one_at_a_time() -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    base = now()
    # Due in the past, in this order: c, a, b; each wants to come back at once (a busy line).
    for name, offset in (("a", -2.0), ("b", -1.0), ("c", -3.0)):
        scheduler.add(name, rec.poll(name, now), base + offset)
    await rec.until(lambda: len(rec.log) >= 9)
    assert rec.log[:9] == ["c", "a", "b"] * 3  # round robin once everyone is behind
    assert not rec.overlap
    await scheduler.close()


async def test_a_unit_is_not_polled_before_it_is_due() -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    scheduler.add("later", rec.poll("later", lambda: now() + FAR), now() + FAR)
    scheduler.add("now", rec.poll("now", lambda: now() + FAR), now())
    await rec.until(lambda: rec.log == ["now"])
    assert scheduler.polls == 1
    await scheduler.close()


async def test_a_failing_poll_is_logged_and_retried_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    scheduler.add("broken", rec.poll("broken", now, fail=True), now(), retry_after=0.0)
    scheduler.add("good", rec.poll("good", now), now())
    with caplog.at_level(logging.ERROR, logger="hub.core.polling"):
        await rec.until(lambda: rec.log.count("broken") >= 2 and rec.log.count("good") >= 2)
    assert scheduler.poll_errors >= 2
    assert "test://line: poll of broken failed" in caplog.text
    assert "broken is broken" in caplog.text
    await scheduler.close()


async def test_reschedule_wakes_a_sleeping_scheduler() -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    scheduler.add("far", rec.poll("far", lambda: now() + FAR), now() + FAR)
    job = scheduler.add("woken", rec.poll("woken", lambda: now() + FAR), now() + FAR)
    job.reschedule(now())
    await rec.until(lambda: rec.log == ["woken"])
    await scheduler.close()


async def test_adding_an_earlier_unit_wakes_a_sleeping_scheduler() -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    scheduler.add("far", rec.poll("far", lambda: now() + FAR), now() + FAR)
    await asyncio.sleep(0)  # let the runner start sleeping until FAR
    scheduler.add("new", rec.poll("new", lambda: now() + FAR), now())
    await rec.until(lambda: rec.log == ["new"])
    await scheduler.close()


async def test_cancelling_the_unit_being_polled_stops_that_poll_only() -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    stuck = asyncio.Event()  # never set: this unit's poll hangs until cancelled
    stuck_job = scheduler.add("stuck", rec.poll("stuck", now, gate=stuck), now() - 1)
    scheduler.add("other", rec.poll("other", now), now())
    await rec.until(lambda: rec.running == 1)  # "stuck" is in flight, "other" waits
    assert rec.log == []
    await stuck_job.cancel()
    await rec.until(lambda: rec.log.count("other") >= 3)
    assert "stuck" not in rec.log and len(scheduler) == 1
    await scheduler.close()


async def test_the_runner_ends_with_its_last_unit_and_restarts_with_a_new_one() -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    job = scheduler.add("a", rec.poll("a", lambda: now() + FAR), now() + FAR)
    task = scheduler._task
    assert task is not None
    await job.cancel()
    await asyncio.wait_for(task, BOUND)  # it ends on its own, not by cancellation
    assert not task.cancelled() and len(scheduler) == 0
    scheduler.add("b", rec.poll("b", lambda: now() + FAR), now())
    await rec.until(lambda: rec.log == ["b"])
    await scheduler.close()


async def test_close_stops_polling_and_refuses_new_units() -> None:
    scheduler, rec = LinkScheduler("test://line"), Recorder()
    scheduler.add("a", rec.poll("a", now), now())
    await rec.until(lambda: len(rec.log) >= 2)
    await scheduler.close()
    seen = len(rec.log)
    await asyncio.sleep(0)
    assert len(rec.log) == seen
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.add("b", rec.poll("b", now), now())


async def test_the_registry_gives_one_scheduler_per_link_and_closes_them() -> None:
    class Link:
        def __init__(self, key: str) -> None:
            self.key = key

        async def close(self) -> None:
            return None

    links = LinkRegistry()
    first = links.scheduler(Link("modbus_tcp://127.0.0.1:5020"))
    assert links.scheduler(Link("modbus_tcp://127.0.0.1:5020")) is first
    assert links.scheduler(Link("modbus_tcp://127.0.0.1:5021")) is not first
    rec = Recorder()
    first.add("a", rec.poll("a", now), now())
    await rec.until(lambda: len(rec.log) >= 1)
    await links.async_close_all()
    with pytest.raises(RuntimeError, match="closed"):
        first.add("b", rec.poll("b", now), now())


async def test_periodic_polls_keep_their_phase_and_never_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: clock[0])
    polled: list[float] = []

    async def poll() -> None:
        polled.append(clock[0])

    periodic = _Periodic(poll, 5.0, 100.0)
    clock[0] = 100.3  # a late turn keeps the phase
    assert await periodic() == 105.0
    clock[0] = 105.1
    assert await periodic() == 110.0
    clock[0] = 123.0  # fell behind (a slow line): carry on from now, no catch-up burst
    assert await periodic() == 123.0
    assert await periodic() == 128.0
    assert polled == [100.3, 105.1, 123.0, 123.0]


async def test_idle_schedulers_wake_together_on_the_shared_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two links with units due a few ms apart sleep until the same tick (one wake-up)."""
    from hub.core import polling

    loop = asyncio.get_running_loop()
    timers: list[float] = []
    real_call_at = loop.call_at

    def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if callback is polling._resolve:
            timers.append(when)
        return real_call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", call_at)
    tick = polling.POLL_TICK
    assert tick > 0
    rec = Recorder()
    first, second = LinkScheduler("test://a"), LinkScheduler("test://b")
    base = (int(now() / tick) + 5) * tick  # a tick boundary: both units fall in the next tick
    first.add("a", rec.poll("a", lambda: now() + FAR), base + 0.1 * tick)
    second.add("b", rec.poll("b", lambda: now() + FAR), base + 0.4 * tick)
    await rec.until(lambda: sorted(rec.log) == ["a", "b"])
    woke = timers[:2]
    assert len(woke) == 2 and woke[0] == woke[1], woke  # one tick for both
    assert woke[0] >= base + 0.4 * tick  # never before a unit is due
    assert woke[0] - (base + 0.1 * tick) <= tick + 1e-9  # at most one tick late
    assert abs(woke[0] / tick - round(woke[0] / tick)) < 1e-6
    await first.close()
    await second.close()
