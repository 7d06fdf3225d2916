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
from hub.storage.alarm_store import AlarmQuery
from hub.testing import EventCollector

from .fleetkit import WAIT, FlappingDtu, wait_until

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


async def duty_officer(hub: Hub) -> None:
    """The modem is up and a duty officer with PHONE subscribes to every alarm of school-1."""
    await bounded(hub.notify.notifiers["sms"].modem.connected_event.wait())
    user = await hub.auth.users.create("duty", "user", None, projects=["school-1"],
                                       phone=PHONE)
    await hub.notify.store.insert_subscription({
        "user_id": user.id, "projects": [], "kinds": [], "min_severity": "info",
        "channels": [], "quiet_start": None, "quiet_end": None, "language": None,
        "enabled": True, "created_at": 0.0, "created_by": "test"})


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
        await duty_officer(hub)
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


async def wait_rows(pg_url: str, sql: str, done: Any) -> list[Any]:
    """Poll a query until `done(rows)`; the poll interval only paces it, WAIT bounds it."""
    conn = await asyncpg.connect(plain_dsn(pg_url))
    try:
        async with asyncio.timeout(WAIT):
            while True:
                rows = await conn.fetch(sql)
                if done(rows):
                    return rows
                await asyncio.sleep(0.02)
    finally:
        await conn.close()


#: The alarm's row, its delivery records, and who is to be told.
LOCK_ALARM_PATH = ("LOCK TABLE alarms, notify_deliveries, users, notify_subscriptions "
                   "IN ACCESS EXCLUSIVE MODE")


def alarm_stall_config(name: str, pg_url: str, port: str) -> dict[str, Any]:
    """A meter hub on PostgreSQL with the modem simulator on `port`; short store timeouts, so
    a stalled database shows at once (escalation on: it must begin once stored)."""
    return {
        "hub": {"name": name, "language": "zh-CN", "time_zone": "Asia/Shanghai"},
        "http": {"enabled": False}, "database": {"url": pg_url},
        "projects": [{"id": "school-1", "name": "第一中学"}],
        "devices": [{"id": "arcm-1", "name": "配电箱1", "platform": "meter",
                     "project": "school-1", "location": "配电室"}],
        "alarms": {"store_timeout": 0.3},
        "notify": [{"platform": "sms", "name": "sms", "modem": {"port": port},
                    "retries": 1, "retry_backoff": 0.01, "command_timeout": 1.0,
                    "send_timeout": 1.0, "health_interval": 30.0}],
        "notifications": {"store_timeout": 0.3},
    }


async def test_stalled_alarm_tables_do_not_hold_the_alarm_or_its_sms(
        tmp_path: Path, pg_url: str) -> None:
    """`alarms` and `notify_deliveries` locked: two alarms are still announced and sent
    (provisional, no id); once released each has exactly one row, its delivery record (with
    the alarm's id, so "reply 1" works) and the spool is gone."""
    sim = ModemSimulator()
    port = sim.open()
    hub = Hub(tmp_path, config=alarm_stall_config("alarm stall drill", pg_url, port),
              plugin_manager=meter_plugins())
    raised = EventCollector(hub, "alarm_raised", WAIT)
    updated = EventCollector(hub, "alarm_updated", WAIT)
    deliveries = EventCollector(hub, "notification_delivery", WAIT)
    await hub.async_start()
    holder = await asyncpg.connect(plain_dsn(pg_url))
    lock = holder.transaction()
    locked = False
    try:
        assert hub.plugins.failures == []
        await duty_officer(hub)
        spool = tmp_path / "alarm_spool.jsonl"
        directory = hub.notify.directory
        await bounded(directory.users())  # read once (with the new user) before the stall
        directory.max_age = 0.0  # every alarm reads them again: the stall must not hold that

        await lock.start()
        await holder.execute(LOCK_ALARM_PATH)
        locked = True
        for type_, value, unit in (("residual_current_high", 550, "mA"),
                                   ("over_voltage", 270, "V")):
            hub.bus.async_fire(EVENT_DEVICE_CONDITION, Condition.create(
                "arcm-1", type_, True, value=value, unit=unit).as_dict())
        first = await raised.wait(lambda r: r["type"] == "residual_current_high")
        second = await raised.wait(lambda r: r["type"] == "over_voltage")
        for record in (first, second):
            assert record["id"] is None and record["provisional"] and record["ref"]
        messages = await sim.wait_sent(2, timeout=WAIT)
        assert {m.number for m in messages} == {PHONE}
        assert sorted("剩余电流" in m.text for m in messages) == [False, True]
        sent = await deliveries.wait(lambda d: d["status"] == "sent")
        assert sent["alarm_id"] is None and sent["id"] < 0  # its record is not written yet
        await wait_until(lambda: sum(e["status"] == "sent" for e in deliveries.events) == 2)
        # still stalled: the engine's INSERT waits for the lock; both records are spooled
        assert await waiting_on(holder, "alarms") >= 1
        assert len(spool.read_text().splitlines()) == 2
        assert hub.alarms.provisional_total == 2 and hub.notify.deferred_writes >= 2
        assert directory.stale_reads >= 1

        await lock.rollback()
        locked = False
        stored = {}
        for record in (first, second):
            done = await updated.wait(lambda u, ref=record["ref"]: u["ref"] == ref)
            assert done["id"] is not None and not done["provisional"]
            stored[record["type"]] = done["id"]
        await bounded(hub.alarms.async_flush())
        assert not spool.exists()
        rows = await wait_rows(
            pg_url, "SELECT type, id FROM alarms WHERE device_id = 'arcm-1'",
            lambda rows: len(rows) >= 2)
        assert sorted((r["type"], r["id"]) for r in rows) == sorted(stored.items())
        ids = sorted(stored.values())
        records = await wait_rows(
            pg_url, "SELECT alarm_id, status, recipient, kind FROM notify_deliveries",
            lambda rows: sorted(r["alarm_id"] or 0 for r in rows) == ids
            and all(r["status"] in ("sent", "delivered") for r in rows))
        assert len(records) == 2 and {r["recipient"] for r in records} == {PHONE}
        await wait_until(lambda: set(hub.notify.escalation._chains) == set(ids))
        # "reply 1" acknowledges the alarm last sent: it has its id now
        answer = await bounded(hub.notify.async_reply(PHONE, "1", channel="sms"))
        assert answer["action"] == "acknowledged" and answer["alarm_id"] in ids
        assert len(sim.sent) == 2 and len(raised.events) == 2  # nothing sent or raised twice
    finally:
        if locked:
            await lock.rollback()
        await holder.close()
        await hub.async_stop()
        sim.close()


async def test_a_subscription_made_just_before_a_stall_still_gets_the_sms(
        tmp_path: Path, pg_url: str) -> None:
    """Found by bench_alarm_sms at 100,000 detectors: the start kept the database busy, the
    re-read of who to tell took over 2 s, and the alarm was routed with the lists read before
    the duty officer subscribed: no SMS. Writes made through this hub now reach the lists at
    once, so routing knows them without reading the stalled tables."""
    sim = ModemSimulator()
    port = sim.open()
    hub = Hub(tmp_path, config=alarm_stall_config("subscribe then stall", pg_url, port),
              plugin_manager=meter_plugins())
    raised = EventCollector(hub, "alarm_raised", WAIT)
    await hub.async_start()
    holder = await asyncpg.connect(plain_dsn(pg_url))
    lock = holder.transaction()
    locked = False
    try:
        directory = hub.notify.directory
        assert await bounded(directory.users()) == []  # read while nobody is subscribed
        loads = directory.loads
        await duty_officer(hub)  # then the duty officer subscribes, through this hub

        await lock.start()
        await holder.execute(LOCK_ALARM_PATH)
        locked = True
        hub.bus.async_fire(EVENT_DEVICE_CONDITION, Condition.create(
            "arcm-1", "residual_current_high", True, value=550, unit="mA").as_dict())
        await raised.wait(lambda r: r["type"] == "residual_current_high")
        (message,) = await sim.wait_sent(1, timeout=WAIT)
        assert message.number == PHONE and "剩余电流" in message.text
        # Routed with the lists as this hub wrote them: no read of the locked tables needed.
        assert directory.loads == loads
    finally:
        if locked:
            await lock.rollback()
        await holder.close()
        await hub.async_stop()
        sim.close()


# -- 3. flapping DTU ---------------------------------------------------------------------------
IMEI = "860000000000001"
UNITS = (1, 2)
COMM_LOSS_AFTER = 5  # failed polls in a row (arcm `failed_polls_for_comm_loss`)


async def test_flapping_dtu_keeps_recording_one_socket_one_alarm(tmp_path: Path) -> None:
    import voltwatch_gsm

    plugins = PluginManager()
    plugins.load_entrypoints(only=["gsm", "arcm", "modbus"])
    config = {
        "hub": {"name": "flap drill", "language": "en"},
        "http": {"enabled": False}, "database": {"url": "sqlite+aiosqlite:///flap.db"},
        "recorder": {"commit_interval": 0.05},
        "gsm": {"port": 0, "heartbeat_timeout": "180s", "request_timeout": 0.5},
        "projects": [{"id": "market-1", "name": "Market"}],
        "devices": [
            {"id": f"arcm-{unit}", "platform": "arcm", "profile": "arcm-ref",
             "project": "market-1", "polling": "flat", "poll_interval": 0.1,
             "failed_polls_for_comm_loss": COMM_LOSS_AFTER,
             "link": {"transport": "gsm", "imei": IMEI, "unit": unit}}
            for unit in UNITS
        ],
    }
    hub = Hub(tmp_path, config=config, plugin_manager=plugins)
    raised = EventCollector(hub, "alarm_raised", WAIT)
    cleared = EventCollector(hub, "alarm_cleared", WAIT)
    await hub.async_start()
    task = None
    dtu_sim: FlappingDtu | None = None
    try:
        assert not [f for f in plugins.failures if f.name in ("gsm", "arcm", "modbus")]
        server = voltwatch_gsm.get_server(hub)
        most_open = 0

        def sample() -> None:  # at every connection change the server announces
            nonlocal most_open
            open_ = [c for c in server.connections if c.dtu_id == IMEI and not c.closed]
            most_open = max(most_open, len(open_))
            announce()

        announce, server.notify = server.notify, sample  # type: ignore[method-assign]
        dtu_sim = FlappingDtu(IMEI, UNITS, server.port, answers=8)
        task = asyncio.get_running_loop().create_task(dtu_sim.sim.run())

        # Short flaps: dropped after 8 answers, back ~50 ms later, fewer failed polls than
        # the debounce. No alarm.
        await server.wait_until(lambda: dtu_sim.flaps >= 4, WAIT)
        assert [r for r in raised.events if r["type"] == "communication_lost"] == []

        # One real outage: after its next drop (or the one under way) the DTU stays away
        # until both detectors have had N failed polls in a row.
        dtu_sim.allowed.clear()
        for unit in UNITS:
            await raised.wait(lambda r, u=unit: r["type"] == "communication_lost"
                              and r["device_id"] == f"arcm-{u}")
        dtu_sim.allowed.set()
        for unit in UNITS:
            await cleared.wait(lambda r, u=unit: r["type"] == "communication_lost"
                               and r["device_id"] == f"arcm-{u}")

        # More short flaps after it: still the one alarm per detector, no new ones.
        after_outage = dtu_sim.flaps
        await server.wait_until(lambda: dtu_sim.flaps >= after_outage + 4, WAIT)
        dtu_sim.answers = 10**9  # the line settles: the DTU stays on
        await server.wait_until(lambda: dtu_sim.periods[-1][1] == 0.0  # the last, kept on
                                and server.dtus[IMEI].connects == len(dtu_sim.periods)
                                and server.dtus[IMEI].connected, WAIT)
        await hub.recorder.async_flush()
        await hub.alarms.async_flush()

        lost = [r for r in raised.events if r["type"] == "communication_lost"]
        assert sorted(r["device_id"] for r in lost) == ["arcm-1", "arcm-2"]  # not one per flap
        rows = await hub.alarms.store.query(AlarmQuery(devices=["arcm-1", "arcm-2"]))
        assert [(r["type"], r["status"]) for r in rows] == [("communication_lost", "cleared")] * 2

        # One socket per IMEI at every moment, none leaked, no newcomer taken for an impostor.
        dtu = server.dtus[IMEI]
        assert most_open == 1
        assert [c for c in server.connections if c.dtu_id == IMEI] == [dtu.connection]
        assert dtu.impostors == 0 and dtu.refused == 0

        # The flap count is visible: per DTU (GET /api/gsm/dtus) and in /metrics.
        assert dtu.reconnects == dtu.connects - 1 >= dtu_sim.flaps
        assert dtu.as_dict()["counters"]["reconnects"] == dtu.reconnects
        assert voltwatch_gsm.stats(hub)["gsm_reconnects_total"] == dtu.reconnects

        # Readings were recorded in every connected period (flaps and the outage's ends).
        history = await hub.recorder.history("sensor.arcm_1_voltage_a")
        stamps = [p["last_updated"] for p in history if p["value"] is not None]
        finished = [(start, end) for start, end in dtu_sim.periods if end]
        assert len(finished) >= 8
        for start, end in finished:
            assert any(start <= t <= end for t in stamps), (start, end)
    finally:
        if dtu_sim is not None:
            dtu_sim.sim.close()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await hub.async_stop()
