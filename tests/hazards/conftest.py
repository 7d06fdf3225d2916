"""Fixtures for the hazard tests (work orders, patrols, reminders, statistics): a real Hub on
SQLite (and PostgreSQL where the store is what is tested), real sockets, an injectable clock.

The hub, its test plugin and the event helpers are the alarm tests' own (tests/alarms/
conftest.py), so these tests drive alarms exactly as detectors do. Time is a `FakeClock`
installed on the work-order, reminder, patrol and statistics objects: a test moves it past a
due time and then calls the periodic check itself, so nothing waits on wall-clock time.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from hub.http import tokens
from tests.alarms.conftest import (  # noqa: F401 - fixtures and helpers shared with alarm tests
    TIMEOUT,
    Recorder,
    db_url,
    fire,
    hub_config,
    settle,
    start_hub,
)

HAZARD_EVENTS = ("alarm_raised", "alarm_acknowledged", "alarm_handled", "alarm_cleared",
                 "workorder_created", "workorder_updated", "reminder", "patrol_due",
                 "patrol_completed")


class FakeClock:
    """A clock a test moves by hand; starts at the real time so records look ordinary."""

    def __init__(self, start: float) -> None:
        self.now = float(int(start))  # whole seconds: exact through ISO 8601 and back

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def install_clock(hub: Any, clock: FakeClock) -> None:
    """Put a running hub's hazard parts on `clock` (after start: its first checks ran on real
    time, which is fine for a hub whose database is fresh)."""
    for name in ("workorders", "reminders", "patrols", "statistics"):
        getattr(hub, name).clock = clock


def patch_clocks(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Put every hazard part of hubs started from now on on `clock`, from their first check
    (needed when a hub restarts on a database whose reminders and rounds depend on time)."""
    from hub.core import patrols, reminders, statistics, workorders

    for module in (workorders, reminders, patrols, statistics):
        monkeypatch.setattr(module, "CLOCK", clock)


def tiny_png() -> bytes:
    """A real 1×1 PNG (red pixel), built by hand so no image library is needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(
        b"IEND", b"")


def hazard_config(url: str = "sqlite+aiosqlite:///hazards.db", **extra: Any) -> dict[str, Any]:
    # A reminder loop every hour: tests call hub.reminders.async_check() themselves.
    extra.setdefault("reminders", {"interval": 3600})
    return hub_config(url, **extra)


@pytest.fixture
async def hub(tmp_path: Path, hub_db_url: str) -> AsyncIterator[Any]:
    instance = await start_hub(tmp_path, hazard_config(hub_db_url))
    try:
        yield instance
    finally:
        await instance.async_stop()


@pytest.fixture
def clock(hub: Any) -> FakeClock:
    fake = FakeClock(hub.workorders.clock())
    install_clock(hub, fake)
    return fake


@pytest.fixture
def recorder(hub: Any) -> Iterator[Recorder]:
    rec = Recorder(hub, *HAZARD_EVENTS)
    yield rec
    rec.close()


@pytest.fixture
async def token(hub: Any) -> str:
    return await tokens.create_token(hub.storage, "值班员")


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(hub: Any) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=hub.http.url) as session:
        yield session


async def raise_alarm(hub: Any, recorder: Recorder, device_id: str = "arcm-1",
                      type_: str = "residual_current_high", **kwargs: Any) -> dict[str, Any]:
    """Raise an alarm the way a detector does and return its record once it is stored."""
    before = len(recorder.of("alarm_raised"))
    kwargs.setdefault("value", 550)
    kwargs.setdefault("unit", "mA")
    fire(hub, device_id, type_, **kwargs)
    raised = await recorder.wait_for("alarm_raised", before + 1)
    await settle(hub)
    return raised[-1]
