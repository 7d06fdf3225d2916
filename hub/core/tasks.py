"""Stopping a helper task without losing a cancellation on the way.

Two traps, both seen as hung tests:

* `task.cancel(); with suppress(CancelledError): await task` also swallows the *caller's* own
  cancellation if it arrives while the caller waits, and a loop meant to stop carries on.
  `asyncio.wait` never raises the awaited task's exception but does raise the caller's own
  cancellation.
* On Python 3.11, `asyncio.wait_for` returns the inner result instead of raising when a
  cancellation races an inner future that has just completed (fixed in 3.12). aiomqtt waits
  for every QoS 1 publish with `wait_for`, so a cancel that lands as the broker's PUBACK
  arrives is lost; the task goes on with `cancelling()` still set. Loops that publish check
  `cancel_requested()` after each awaited publish, and `cancel_and_wait` cancels again until
  the task has really finished.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_INTERVAL = 1.0


def cancel_requested() -> bool:
    """True when the current task was asked to stop, even if a library lost the CancelledError."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(task: asyncio.Task[object] | None, timeout: float | None = None) -> None:
    """Cancel `task` and wait (at most `timeout` s) until it has finished, whatever it raised.

    The cancellation is repeated every RECANCEL_INTERVAL seconds while the task still runs,
    in case one was swallowed (see the module docstring); this is a retry, not a timing
    assumption: a task that honours the first cancel finishes at once.
    """
    if task is None or task.done():
        return
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while not task.done():
        task.cancel()
        wait = RECANCEL_INTERVAL if deadline is None else min(RECANCEL_INTERVAL,
                                                              deadline - loop.time())
        if wait <= 0:
            return
        await asyncio.wait([task], timeout=wait)


async def run_together(tasks: list[asyncio.Task[Any]]) -> None:
    """Await tasks that serve until cancelled (simulated devices); however this ends (a task
    failing, or the caller cancelled), every task is cancelled and awaited, none left behind."""
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
