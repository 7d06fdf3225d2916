"""Helpers for tests of the hub and of plugins (no test framework needed to import it).

`EventCollector` is how a test waits for something to happen on the bus without sleeping:
it records every event of one type from the moment it is made, and `wait(predicate)`
returns the first recorded event data that matches, waiting on the next event otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .core.events import Event, callback


class EventCollector:
    """Every event of `event_type` since creation; `wait` for one that matches."""

    def __init__(self, hub: Any, event_type: str, timeout: float = 10.0) -> None:
        self.events: list[dict[str, Any]] = []
        self.timeout = timeout  # bounds a failure only
        self._changed = asyncio.Event()
        self.unsub = hub.bus.listen(event_type, self._on)

    @callback
    def _on(self, event: Event) -> None:
        self.events.append(dict(event.data))
        self._changed.set()

    async def wait(self, where: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async def until() -> dict[str, Any]:
            while True:
                for item in self.events:
                    if where(item):
                        return item
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(until(), self.timeout)
