"""cancel_and_wait: a stop that a library swallowed is repeated until the task has finished."""

from __future__ import annotations

import asyncio

from hub.core.tasks import cancel_and_wait, cancel_requested


async def test_a_swallowed_cancel_is_repeated_until_the_task_ends() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # What Python 3.11's wait_for does when the inner future just completed.
            swallowed.set()
        assert cancel_requested()  # the request is still visible
        await asyncio.Event().wait()  # carries on: only a second cancel ends it

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it start waiting
    await cancel_and_wait(task, timeout=30)
    assert swallowed.is_set() and task.done() and task.cancelled()


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    started = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            started.set()
            await asyncio.Event().wait()  # never finishes its clean-up

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)

    async def stopper() -> None:
        await cancel_and_wait(inner)

    outer = asyncio.create_task(stopper())
    await started.wait()
    outer.cancel()
    await asyncio.wait([outer], timeout=30)
    assert outer.cancelled()
    inner.cancel()  # tidy up: the helper may now die
    await asyncio.wait([inner], timeout=30)
