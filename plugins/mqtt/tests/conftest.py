"""Fixtures of the mqtt plugin's tests: a private Mosquitto per test, a hub wired to it.

The hub is the real `Hub` object (bus bound to the loop, state machine, registries, link
registry, push_handlers) without storage or HTTP, which the MQTT path does not need; one test
module (test_mqtt_hub.py) starts a whole Hub instead.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import voltwatch_mqtt
from mqtt_testkit import PushRecorder, make_hub
from voltwatch_mqtt.testing import MosquittoBroker, find_mosquitto

from hub.hub import Hub


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (make test installs it with apt-get)")
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def recorder() -> PushRecorder:
    return PushRecorder()


@pytest.fixture
async def hub(tmp_path: Path, mosquitto: MosquittoBroker, recorder: PushRecorder) -> AsyncIterator[Hub]:
    hub = await make_hub(tmp_path / "hub", mosquitto, recorder)
    try:
        yield hub
    finally:
        connection = voltwatch_mqtt._CONNECTIONS.get(hub)
        if connection is not None:
            await connection.stop()
        for task in list(hub._tasks):
            task.cancel()
        await asyncio.gather(*hub._tasks, return_exceptions=True)


@pytest.fixture
async def publisher(mosquitto: MosquittoBroker) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="test-publisher") as client:
        yield client


@pytest.fixture
def run_task() -> Iterator[Callable[[Any], asyncio.Task[Any]]]:
    """Start a background coroutine (a simulated device) that is cancelled after the test."""
    tasks: list[asyncio.Task[Any]] = []

    def start(coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.append(task)
        return task

    yield start
    for task in tasks:
        task.cancel()
