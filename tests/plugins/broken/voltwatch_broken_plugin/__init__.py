"""A plugin that fails to set up, on purpose.

It imports and registers fine (so `voltwatch plugins` lists it) and then raises in
`voltwatch_setup`, the way a plugin does when its serial port is missing. The hub must start
without it and name it in `hub.plugins.failures`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub import hookimpl

if TYPE_CHECKING:
    from hub.hub import Hub

FAILURE_MESSAGE = "the broken plugin always fails to set up"


@hookimpl
def voltwatch_setup(hub: Hub, config: dict[str, Any]) -> None:
    raise RuntimeError(FAILURE_MESSAGE)
