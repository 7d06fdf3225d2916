"""The stalled-database drill with two workers (issue 12, item 3).

Two `voltwatch run` workers on one PostgreSQL and one Mosquitto: the telemetry is split by the
shared subscription, device events reach both. A second PostgreSQL session holds table locks
while readings arrive and a smoke alarm is raised; then it lets go. What the duty officer and
an auditor check afterwards: every reading in `states` exactly once, one alarm row, the SMS
(one, or the documented extra one), one work order, and both workers healthy with their
spools drained. Everything is real (PostgreSQL, Mosquitto, a modem simulator on a pty per
worker); every wait is on an event, a counter or a row count, bounded by WAIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import pytest
import voltwatch_mqtt
from sqlalchemy.engine import make_url
from voltwatch_mqtt.testing import MosquittoBroker
from voltwatch_notify_sms.simulator import ModemSimulator

from hub.http.metrics import render_metrics
from hub.hub import Hub
from hub.storage.workorder_store import WorkOrderQuery
from hub.testing import EventCollector

from .fleetkit import WAIT, StallingProxy, start_hub, wait_until
from .test_fault_drills import PHONE, bounded, duty_officer, plain_dsn, wait_rows, waiting_on

pytestmark = pytest.mark.timeout(120)

DEVICES = 21  # odd: the shared subscription alternates each detector between the workers
ROUNDS = 60  # 1,260 messages, 3 readings each: ~1,900 rows a worker, over its max_queue
ALARMED = "drill-smoke-7"
#: what the duty officer's subscription sees and the work order automation fires on
PROJECT = "school-1"
#: the recorder's tables, the alarm's row and its delivery records, who is to be told
#: seconds the server lets a worker's transaction sit idle (a stuck link) before ending it
IDLE_IN_TRANSACTION = 2.0
STALLED = ("states", "events", "alarms", "notify_deliveries", "users", "notify_subscriptions")


def device_id(index: int) -> str:
    return f"drill-smoke-{index}"


def worker_config(pg_url: str, broker: MosquittoBroker, name: str,
                  modem_port: str) -> dict[str, Any]:
    return {
        "hub": {"name": f"stall drill {name}", "language": "zh-CN",
                "time_zone": "Asia/Shanghai"},
        "http": {"enabled": False},
        "database": {"url": pg_url, "idle_in_transaction_timeout": IDLE_IN_TRANSACTION},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min": "50ms",
                 "shared_group": "workers", "client_id": f"worker-{name}"},
        "recorder": {"max_batch": 100, "max_queue": 1000, "commit_interval": 0.05},
        "alarms": {"store_timeout": 0.3},
        "notify": [{"platform": "sms", "name": "sms", "modem": {"port": modem_port},
                    "retries": 1, "retry_backoff": 0.01, "command_timeout": 1.0,
                    "send_timeout": 1.0, "health_interval": 30.0}],
        "notifications": {"store_timeout": 0.3, "escalation": {"enabled": False}},
        "projects": [{"id": PROJECT, "name": "第一中学"}],
        "devices": [{"id": device_id(i), "name": f"烟感{i}", "platform": "smoke",
                     "project": PROJECT, "location": "走廊", "link": {"transport": "mqtt"}}
                    for i in range(DEVICES)],
        # What a site admin writes to get a job for every smoke alarm (docs/hazards.md).
        "automations": [{
            "id": "smoke_work_order", "alias": "烟感报警开工单",
            "triggers": [{"trigger": "alarm", "on": ["raised"], "type": ["smoke"]}],
            "actions": [{"action": "workorder.create",
                         "data": {"alarm_ref": "{{ trigger.alarm.ref }}", "priority": "urgent"}}],
        }],
    }


@dataclass
class Worker:
    name: str
    hub: Hub
    modem: ModemSimulator
    raised: EventCollector
    updated: EventCollector
    deliveries: EventCollector
    triggered: EventCollector
    finished: EventCollector
    connection: Any = field(init=False)

    def __post_init__(self) -> None:
        self.connection = voltwatch_mqtt.get_connection(self.hub)

    @property
    def telemetry(self) -> int:
        return int(self.connection.kinds["telemetry"])


@contextlib.asynccontextmanager
async def running_workers(tmp_path: Path, broker: MosquittoBroker,
                          urls: dict[str, str]) -> AsyncIterator[list[Worker]]:
    """Workers named by `urls` (each its database URL), each with its own modem."""
    started: list[Worker] = []
    modems: list[ModemSimulator] = []
    try:
        for name, url in urls.items():
            modem = ModemSimulator()
            modems.append(modem)
            hub = await start_hub(tmp_path / name,
                                  worker_config(url, broker, name, modem.open()),
                                  "mqtt", "smoke", "notify_sms")
            started.append(Worker(name, hub, modem,
                                  EventCollector(hub, "alarm_raised", WAIT),
                                  EventCollector(hub, "alarm_updated", WAIT),
                                  EventCollector(hub, "notification_delivery", WAIT),
                                  EventCollector(hub, "automation_triggered", WAIT),
                                  EventCollector(hub, "automation_finished", WAIT)))
            await started[-1].connection.wait_ready()
            await bounded(hub.notify.notifiers["sms"].modem.connected_event.wait())
        yield started
    finally:
        for worker in started:
            await worker.hub.async_stop()
        for modem in modems:
            modem.close()


@pytest.fixture
async def workers(tmp_path: Path, pg_url: str,
                  broker: MosquittoBroker) -> AsyncIterator[list[Worker]]:
    async with running_workers(tmp_path, broker, {"a": pg_url, "b": pg_url}) as started:
        yield started


class Telemetry:
    """The detectors: every message carries values no earlier message of its device had, so
    each is exactly one new row per reading on the worker that got it (`expected`)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.sent = 0
        self.expected: set[tuple[str, str]] = set()

    async def rounds(self, count: int) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port,
                                  identifier="drill-detectors") as client:
            for _ in range(count):
                for i in range(DEVICES):
                    self.sent += 1
                    seq = self.sent
                    values = {"smoke_level": seq, "temperature": 20 + seq / 1000,
                              "battery": 90 - seq / 1000}
                    await client.publish(f"voltwatch/dev/{device_id(i)}/telemetry",
                                         json.dumps({"values": values}), qos=1)
                    obj = device_id(i).replace("-", "_")
                    for key, value in values.items():
                        self.expected.add((f"sensor.{obj}_{key}", f"{value:g}"))


async def publish_event(broker: MosquittoBroker, device: str, state: str) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="drill-alarm") as client:
        await client.publish(f"voltwatch/dev/{device}/event",
                             json.dumps({"event": "smoke_alarm", "state": state}), qos=1)


async def reading_rows(pg_url: str) -> list[tuple[str, str]]:
    """Every recorded reading of the drill's detectors, one tuple per row (doubles kept).

    Not the `unknown` each worker records when it registers the entities at start."""
    rows = await wait_rows(  # read once: any answer will do
        pg_url, "SELECT m.entity_id, s.state FROM states s "
        "JOIN states_meta m ON m.metadata_id = s.metadata_id "
        "WHERE m.entity_id LIKE 'sensor.drill_smoke_%' AND s.state <> 'unknown'",
        lambda _rows: True)
    return [(r["entity_id"], r["state"]) for r in rows]


async def drained(worker: Worker) -> None:
    """Until the worker's recorder and alarm engine have written everything they hold."""
    recorder = worker.hub.recorder
    async with asyncio.timeout(WAIT):
        while recorder.stats()["overflowing"] or recorder.spool_pending:
            await recorder.async_flush()
        await recorder.async_flush()
        await worker.hub.alarms.async_flush()


async def before_the_stall(workers: list[Worker], detectors: Telemetry, pg_url: str) -> None:
    """The duty officer subscribes; one round of readings, split and written by both."""
    await duty_officer(workers[0].hub)  # one user in the shared database: both route to it
    for worker in workers:
        # Read per alarm (the user was added through worker a: b would otherwise see it
        # after `max_age`); in the stall the read waits, the lists read last are used.
        directory = worker.hub.notify.directory
        directory.max_age = 0.0
        await bounded(directory.users())

    # Before the stall: both workers get a share and write it.
    await detectors.rounds(1)
    await wait_until(lambda: sum(w.telemetry for w in workers) == detectors.sent)
    assert all(w.telemetry > 0 for w in workers), "one worker got no share"
    for worker in workers:
        await bounded(worker.hub.recorder.async_flush())
    assert sorted(await reading_rows(pg_url)) == sorted(detectors.expected)


async def settled(workers: list[Worker], detectors: Telemetry, pg_url: str) -> int:
    """After the stall: what the duty officer and the auditor check. The alarm's row id."""
    for worker in workers:
        await drained(worker)
    refs = {}
    for worker in workers:
        (announced,) = [r for r in worker.raised.events if r["device_id"] == ALARMED]
        stored = await worker.updated.wait(lambda u, ref=announced["ref"]: u["ref"] == ref) \
            if announced["provisional"] else announced
        refs[worker.name] = stored["id"]
    alarm_id = refs["a"]
    assert alarm_id is not None and set(refs.values()) == {alarm_id}, refs  # one row for all

    rows = await reading_rows(pg_url)
    assert len(rows) == len(set(rows)), "a reading written twice"
    assert set(rows) == detectors.expected, "a reading lost"

    alarms = await wait_rows(pg_url, "SELECT id, type, status, count FROM alarms "
                             f"WHERE device_id = '{ALARMED}'", lambda rows: len(rows) >= 1)
    assert [(r["id"], r["type"], r["status"]) for r in alarms] == [(alarm_id, "smoke", "active")]
    assert alarms[0]["count"] == 2  # both workers heard the detector

    # The duty officer: the SMS, at most the documented extra one (both workers announced).
    sms = [m for w in workers for m in w.modem.sent]
    assert 1 <= len(sms) <= 2 and {m.number for m in sms} == {PHONE}
    assert all("烟雾报警" in m.text for m in sms)
    # each worker's delivery record, given the alarm's id once it had one ("reply 1" finds it)
    deliveries = await wait_rows(
        pg_url, "SELECT alarm_id, status, recipient FROM notify_deliveries",
        lambda rows: len(rows) == len(sms) and all(r["alarm_id"] == alarm_id for r in rows))
    assert {(r["recipient"], r["status"] in ("sent", "delivered")) for r in deliveries} \
        == {(PHONE, True)}

    # The auditor: one work order for the alarm, though each worker's automation asked.
    for worker in workers:  # every run the alarm triggered has ended
        await wait_until(lambda w=worker: len(w.finished.events) == len(w.triggered.events))
    runs = [e for w in workers for e in w.finished.events]
    assert len(runs) == 2 and all(e["outcome"] == "fired" for e in runs), runs  # one each
    orders = await workers[0].hub.workorders.store.query(WorkOrderQuery(alarm_id=alarm_id))
    assert len(orders) == 1, orders

    # Both workers healthy: spools gone, nothing dropped (as /metrics shows it), new readings
    # written by both.
    for worker in workers:
        stats = worker.hub.recorder.stats()
        assert stats["ready"] and not stats["overflowing"] and stats["spool_pending"] == 0
        assert stats["dropped"] == 0
        assert not worker.hub.recorder.spool_path.exists()
        assert not (worker.hub.config_dir / "alarm_spool.jsonl").exists()
        metrics = render_metrics(worker.hub).splitlines()
        for line in ("voltwatch_recorder_spool_pending 0", "voltwatch_recorder_ready 1",
                     "voltwatch_recorder_dropped_total 0"):
            assert line in metrics, (worker.name, line)
    before = [(w.telemetry, w.hub.recorder.states_written) for w in workers]
    await detectors.rounds(2)
    await wait_until(lambda: sum(w.telemetry for w in workers) == detectors.sent)
    for worker in workers:
        await bounded(worker.hub.recorder.async_flush())
    after = [(w.telemetry, w.hub.recorder.states_written) for w in workers]
    assert all(t1 > t0 and s1 > s0 for (t0, s0), (t1, s1) in zip(before, after, strict=True))
    rows = await reading_rows(pg_url)
    assert len(rows) == len(set(rows)) and set(rows) == detectors.expected
    return int(alarm_id)


async def test_two_workers_stalled_database_write_every_reading_once_and_one_alarm(
        workers: list[Worker], broker: MosquittoBroker, pg_url: str) -> None:
    detectors = Telemetry(broker)
    await before_the_stall(workers, detectors, pg_url)

    holder = await asyncpg.connect(plain_dsn(pg_url))
    lock = holder.transaction()
    locked = False
    try:
        await lock.start()
        await holder.execute(f"LOCK TABLE {', '.join(STALLED)} IN ACCESS EXCLUSIVE MODE")
        locked = True
        written_before = [w.hub.recorder.rows_written for w in workers]

        # Readings arrive throughout the stall; both recorders back off, then spool.
        await detectors.rounds(ROUNDS)
        await wait_until(lambda: sum(w.telemetry for w in workers) == detectors.sent)
        for worker in workers:
            recorder = worker.hub.recorder
            await wait_until(lambda r=recorder: r.spool_pending > 0)
            stats = recorder.stats()
            assert stats["overflowing"] and not stats["ready"], (worker.name, stats)
            assert stats["dropped"] == 0
        # each worker's batch INSERT waits for the lock
        assert await waiting_on(holder, "states") + await waiting_on(holder, "events") >= 2

        # The smoke alarm reaches both workers; neither can store it, both announce it.
        await publish_event(broker, ALARMED, "active")
        for worker in workers:
            record = await worker.raised.wait(lambda r: r["device_id"] == ALARMED)
            assert record["id"] is None and record["provisional"] and record["ref"]
        await wait_until(lambda: any(w.modem.sent for w in workers))  # SMS during the stall
        for worker in workers:  # every announcement's SMS was handed to a modem
            await wait_until(lambda w=worker: sum(
                d["status"] == "sent" for d in w.deliveries.events) == len(w.raised.events))
        assert [w.hub.recorder.rows_written for w in workers] == written_before
        assert await waiting_on(holder, "alarms") >= 2
    finally:
        if locked:
            await lock.rollback()
        await holder.close()

    # Released: every worker writes what it held; the provisional alarms get the one row.
    await settled(workers, detectors, pg_url)
    for worker in workers:
        stats = worker.hub.recorder.stats()
        assert stats["spooled"] > 0 and stats["replayed"] > 0, (worker.name, stats)
        assert "voltwatch_alarms_provisional_total 1" in render_metrics(worker.hub).splitlines()


async def test_one_worker_stuck_mid_commit_does_not_stall_the_other(
        tmp_path: Path, pg_url: str, broker: MosquittoBroker) -> None:
    """Only worker b's way to the database gets stuck, at a COMMIT of a recorder batch: its
    transaction stays open on the server with the rollup rows it upserted locked, rows that
    worker a's batches upsert too (same detectors, same 5-minute buckets). The server ends
    that transaction after `database.idle_in_transaction_timeout`, so a goes on writing and
    stores the alarm at once; b spools, announces the alarm provisionally (the documented
    extra SMS), and when its link comes back writes everything once and folds into a's row."""
    url = make_url(pg_url)
    proxy = StallingProxy(url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        async with running_workers(tmp_path, broker, {"a": pg_url, "b": proxied}) as workers, \
                contextlib.AsyncExitStack() as unstick:
            unstick.callback(proxy.resume)  # before the workers stop, also on a failure
            a, b = workers
            detectors = Telemetry(broker)
            await before_the_stall(workers, detectors, pg_url)

            # b's next COMMIT does not arrive: a batch of the readings now flowing.
            proxy.hold_at_commit()
            await detectors.rounds(1)
            await bounded(proxy.held.wait())
            written_before = b.hub.recorder.rows_written
            await detectors.rounds(ROUNDS)
            await wait_until(lambda: sum(w.telemetry for w in workers) == detectors.sent)
            await bounded(a.hub.recorder.async_flush())  # a writes its share meanwhile
            await wait_until(lambda: b.hub.recorder.spool_pending > 0)  # b spools its own
            assert a.hub.recorder.stats()["spool_pending"] == 0

            # The alarm: a stores and announces it; b cannot, and announces it anyway.
            await publish_event(broker, ALARMED, "active")
            stored = await a.raised.wait(lambda r: r["device_id"] == ALARMED)
            provisional = await b.raised.wait(lambda r: r["device_id"] == ALARMED)
            assert stored["id"] is not None and not stored["provisional"]
            assert provisional["id"] is None and provisional["provisional"]
            for worker in workers:
                await bounded(worker.modem.wait_sent(1, timeout=WAIT))
            # a's automation opened the work order; b's waits for its alarm's row
            await wait_until(lambda: len(a.finished.events) == 1)
            assert len(b.triggered.events) == 1 and b.finished.events == []
            assert await a.hub.workorders.store.open_for_alarm(stored["id"]) is not None
            assert b.hub.recorder.rows_written == written_before  # still stuck all along

            proxy.resume()
            alarm_id = await settled(workers, detectors, pg_url)
            assert alarm_id == stored["id"]
            metrics = {w.name: render_metrics(w.hub).splitlines() for w in workers}
            assert "voltwatch_alarms_provisional_total 0" in metrics["a"]
            assert "voltwatch_alarms_provisional_total 1" in metrics["b"]
    finally:
        await proxy.close()
