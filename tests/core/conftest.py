"""Fixtures for the core's unit tests: real core objects on the test's own event loop.

Nothing here is mocked except persistence: the registries get an in-memory `RegistryStore`
so their tests exercise the same calls the SQL store receives, without a database.
"""

from __future__ import annotations

import asyncio

import pytest

from hub.core.events import EventBus
from hub.core.services import ServiceRegistry
from hub.core.states import StateMachine

from .helpers import MemoryRegistryStore


@pytest.fixture
async def bus() -> EventBus:
    """A bus bound to the running loop, as the Hub binds it at start."""
    event_bus = EventBus()
    event_bus.bind_loop(asyncio.get_running_loop())
    return event_bus


@pytest.fixture
def states(bus: EventBus) -> StateMachine:
    return StateMachine(bus)


@pytest.fixture
def services(bus: EventBus) -> ServiceRegistry:
    return ServiceRegistry(bus)


@pytest.fixture
def store() -> MemoryRegistryStore:
    return MemoryRegistryStore()
