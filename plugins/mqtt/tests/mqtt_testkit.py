"""Shared pieces of the mqtt tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import voltwatch_mqtt
from voltwatch_mqtt.testing import MosquittoBroker

from hub.core.conditions import EVENT_DEVICE_CONDITION
from hub.core.events import Event, callback
from hub.core.push import PushMessage
from hub.core.registries import DeviceEntry
from hub.hub import Hub

PLATFORM = "testpush"
DEVICE = "smoke-1"


class PushRecorder:
    """A device-type plugin's push handler in miniature: keeps what it was handed, in order."""

    def __init__(self) -> None:
        self.messages: list[PushMessage] = []
        self.queue: asyncio.Queue[PushMessage] = asyncio.Queue()

    def handle(self, device: DeviceEntry, message: PushMessage) -> None:
        self.messages.append(message)
        self.queue.put_nowait(message)

    async def next(self, kind: str | None = None, timeout: float = 10.0) -> PushMessage:
        """The next message (of `kind`), skipping others; the timeout only bounds a failure."""
        while True:
            message = await asyncio.wait_for(self.queue.get(), timeout)
            if kind is None or message.kind == kind:
                return message


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition; the timeout is a failure bound, not a synchronisation."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the failure bound")
        await asyncio.sleep(0.01)


def mqtt_section(broker: MosquittoBroker, **extra: Any) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, "topic_prefix": "voltwatch",
            "reconnect_min": 0.05, "reconnect_max": 0.5, "client_id": "test-hub", **extra}


async def make_hub(config_dir: Path, broker: MosquittoBroker, recorder: PushRecorder | None = None,
                   start: bool = True, devices: tuple[str, ...] = (DEVICE,),
                   **mqtt_extra: Any) -> Hub:
    """An unstarted real Hub with its MQTT connection running and subscribed."""
    hub = Hub(config_dir, config={"hub": {"name": "test"}, "mqtt": mqtt_section(broker, **mqtt_extra)})
    hub.loop = asyncio.get_running_loop()
    hub.bus.bind_loop(hub.loop)
    for device_id in devices:
        await hub.devices.async_upsert(id=device_id, platform=PLATFORM, link={"transport": "mqtt"})
    if recorder is not None:
        hub.push_handlers[PLATFORM] = recorder.handle
    if start:
        connection = voltwatch_mqtt.get_connection(hub)
        connection.start()
        await connection.wait_ready()
    return hub


def conditions(hub: Hub) -> list[dict[str, Any]]:
    """Record every device_condition event fired on the hub's bus from now on."""
    seen: list[dict[str, Any]] = []

    @callback
    def on_condition(event: Event) -> None:
        seen.append(event.data)

    hub.bus.listen(EVENT_DEVICE_CONDITION, on_condition)
    return seen
