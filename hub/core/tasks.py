"""Stopping a helper task without swallowing the caller's own cancellation.

`task.cancel(); with suppress(CancelledError): await task` has a trap: if the *caller* is
cancelled while it waits, its own CancelledError is suppressed too, and a loop that was meant
to stop carries on forever (seen as a hung test: a simulator reconnecting after its stop).
`asyncio.wait` never raises the awaited task's exception, but does raise the caller's own
cancellation, which is the behaviour every stop path here wants.
"""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[object] | None, timeout: float | None = None) -> None:
    """Cancel `task` and wait (at most `timeout` s) until it has finished, whatever it raised."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task], timeout=timeout)
