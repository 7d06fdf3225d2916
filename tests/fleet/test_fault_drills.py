"""Fault drills of issue 12 on one hub: a stalled database and a flapping DTU.

(The pulled modem is in plugins/notify_sms/tests/test_notify_sms_drills.py; the killed worker
and the broker restart in test_drills.py.) Everything is real: PostgreSQL held by a second
connection's table lock, the modem simulator on a pty, the DTU simulator over TCP. No sleeps:
every wait is on an event, a row count or a counter, bounded by a timeout that only limits a
failure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import voluptuous as vol
from voltwatch_notify_sms.simulator import ModemSimulator

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.core.hookspecs import hookimpl
from hub.core.plugins import PluginManager
from hub.hub import Hub
from hub.testing import EventCollector

from .fleetkit import WAIT, wait_until

pytestmark = pytest.mark.timeout(120)

PHONE = "+8613800138000"


async def bounded(awaitable: Any, timeout: float = WAIT) -> Any:
    """Await with a failure bound (never a synchronisation delay)."""
    return await asyncio.wait_for(awaitable, timeout)


# -- 1. stalled database -----------------------------------------------------------------------
class MeterPlugin:
    """A device platform with no transport: the test is the meter (states and conditions)."""

    @hookimpl
    def voltwatch_device_schemas(self) -> dict[str, Any]:
        return {"meter": vol.Schema({}, extra=vol.ALLOW_EXTRA)}


def meter_plugins() -> PluginManager:
    import voltwatch_notify_sms

    manager = PluginManager()
    manager.register(MeterPlugin(), "meter", version="0")
    manager.register(voltwatch_notify_sms, "notify_sms", version="0.1.0")
    return manager


LOAD_ENTITIES = 20
LOAD_STEPS = 150  # 3,000 readings: three times the queue, so most of them go to the spool


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def waiting_on(lock_holder: asyncpg.Connection, table: str) -> int:
    """Backends (the hub's) waiting for a lock on `table`."""
    return int(await lock_holder.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", table))


async def load_rows(pg_url: str) -> tuple[int, int]:
    """(rows, distinct readings) of the load entities in the states table."""
    conn = await asyncpg.connect(plain_dsn(pg_url))
    try:
        row = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (s.metadata_id, s.value)) FROM states s "
            "JOIN states_meta m ON m.metadata_id = s.metadata_id "
            "WHERE m.entity_id LIKE 'sensor.load_%'")
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def test_stalled_database_spools_readings_while_alarms_and_sms_go_out(
        tmp_path: Path, pg_url: str) -> None:
    sim = ModemSimulator()
    port = sim.open()
    config = {
        "hub": {"name": "stall drill", "language": "zh-CN", "time_zone": "Asia/Shanghai"},
        "http": {"enabled": False}, "database": {"url": pg_url},
        "recorder": {"max_batch": 100, "max_queue": 1000, "commit_interval": 0.05},
        "projects": [{"id": "school-1", "name": "第一中学"}],
        "devices": [{"id": "arcm-1", "name": "配电箱1", "platform": "meter",
                     "project": "school-1", "location": "配电室"}],
        "notify": [{"platform": "sms", "name": "sms", "modem": {"port": port},
                    "retries": 1, "retry_backoff": 0.01, "command_timeout": 1.0,
                    "send_timeout": 1.0, "health_interval": 30.0}],
        "notifications": {"escalation": {"enabled": False}},
    }
    hub = Hub(tmp_path, config=config, plugin_manager=meter_plugins())
    raised = EventCollector(hub, "alarm_raised", WAIT)
    deliveries = EventCollector(hub, "notification_delivery", WAIT)
    await hub.async_start()
    holder = await asyncpg.connect(plain_dsn(pg_url))
    lock = holder.transaction()
    locked = False
    try:
        assert hub.plugins.failures == []
        await bounded(hub.notify.notifiers["sms"].modem.connected_event.wait())
        user = await hub.auth.users.create("duty", "user", None, projects=["school-1"],
                                           phone=PHONE)
        await hub.notify.store.insert_subscription({
            "user_id": user.id, "projects": [], "kinds": [], "min_severity": "info",
            "channels": [], "quiet_start": None, "quiet_end": None, "language": None,
            "enabled": True, "created_at": 0.0, "created_by": "test"})
        recorder = hub.recorder
        await bounded(recorder.async_flush())

        # The stall: another session holds the recorder's tables (what a long migration, a
        # VACUUM FULL or a stuck transaction does); the hub's INSERT waits, it does not fail.
        await lock.start()
        await holder.execute("LOCK TABLE states, events IN ACCESS EXCLUSIVE MODE")
        locked = True
        written_before = recorder.rows_written
        reading = 0

        def step() -> None:
            nonlocal reading
            reading += 1
            for i in range(LOAD_ENTITIES):
                hub.states.async_set(f"sensor.load_{i}", str(reading + i / 100))

        step()
        await wait_until(lambda: recorder.queue_length == 0)  # the writer took the batch ...
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while await waiting_on(holder, "states") + await waiting_on(holder, "events") == 0:
            assert loop.time() < deadline, "the hub never waited for the lock"
            await asyncio.sleep(0.02)  # polling pg_locks; bounded by the deadline above
        # ... and is stuck in its INSERT. The load goes on: back-pressure, then the spool.
        while reading < LOAD_STEPS:
            step()
            await asyncio.sleep(0)  # let the bus deliver, as a poller's await would
        await wait_until(lambda: recorder.spool_path.exists() and recorder.spool_pending > 0)
        stats = recorder.stats()
        assert stats["overflowing"] and not stats["ready"], stats
        assert stats["backpressure_episodes"] >= 1 and stats["overflow_episodes"] == 1
        assert stats["spooled"] > 0 and stats["dropped"] == 0
        # memory stays bounded: the queue, plus less than one spool chunk on its way to disk
        assert recorder.queue_length < recorder.max_queue + recorder.spool_chunk

        # An alarm during the stall: raised, stored (its own table is not held) and sent.
        condition = Condition.create("arcm-1", "residual_current_high", True, value=550,
                                     unit="mA")
        hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
        record = await raised.wait(lambda r: r["type"] == "residual_current_high")
        (message,) = await sim.wait_sent(1, timeout=WAIT)
        assert message.number == PHONE and "剩余电流过大" in message.text
        sent = await deliveries.wait(lambda d: d["status"] == "sent")
        assert sent["alarm_id"] == record["id"] and sent["channel"] == "sms"
        assert recorder.rows_written == written_before  # still stalled all along
        assert await waiting_on(holder, "states") + await waiting_on(holder, "events") >= 1

        # Released: everything reaches the database exactly once and the spool empties.
        await lock.rollback()
        locked = False
        async with asyncio.timeout(WAIT):
            while recorder.stats()["overflowing"] or recorder.spool_pending:
                await recorder.async_flush()
            await recorder.async_flush()
        assert not recorder.spool_path.exists() and not recorder.replay_path.exists()
        stats = recorder.stats()
        assert stats["ready"] and stats["dropped"] == 0 and stats["replayed"] > 0, stats
        total = LOAD_ENTITIES * LOAD_STEPS
        assert await load_rows(pg_url) == (total, total)
        stored = await hub.alarms.store.get(record["id"])
        assert stored["status"] == "active" and stored["type"] == "residual_current_high"
    finally:
        if locked:
            await lock.rollback()
        await holder.close()
        await hub.async_stop()
        sim.close()
