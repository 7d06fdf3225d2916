"""Two hub workers on one PostgreSQL and one Mosquitto (issue 12): telemetry split by a shared
subscription, one alarm row and one notification-worthy event per alarm, one work order.

Always PostgreSQL: several workers on one SQLite file is not a supported set-up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import voltwatch_mqtt
from voltwatch_mqtt.testing import MosquittoBroker

from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
from hub.fleet import run_fleet
from hub.hub import Hub
from hub.storage.alarm_store import AlarmQuery
from hub.storage.workorder_store import WorkOrderQuery

from .fleetkit import (
    DeviceSeen,
    EventLog,
    fleet_args,
    fleet_entries,
    hub_config,
    run_in_background,
    smoke_entities,
    start_hub,
    stop,
    wait_until,
)

ALARMED = "fleet-smoke-5"


def worker_config(tmp_path: Path, pg_url: str, broker: MosquittoBroker, name: str,
                  devices: list[dict[str, Any]]) -> dict[str, Any]:
    return hub_config(tmp_path, pg_url, devices, mqtt={
        "host": broker.host, "port": broker.port, "reconnect_min": "50ms",
        "shared_group": "workers", "client_id": f"worker-{name}"})


@pytest.fixture
async def workers(tmp_path: Path, pg_url: str,
                  broker: MosquittoBroker) -> AsyncIterator[tuple[Hub, Hub, Any]]:
    found, args, plan = fleet_args(
        "--devices", "30", "--per-connection", "10", "--interval", "1",
        "--broker", f"{broker.host}:{broker.port}", "--alarm", ALARMED,
        "--alarm-duration", "0", "--report-every", "0")
    entries = fleet_entries(found, args)
    hubs: list[Hub] = []
    try:
        for name in ("a", "b"):
            hub = await start_hub(tmp_path / name,
                                  worker_config(tmp_path, pg_url, broker, name, entries),
                                  "mqtt", "smoke")
            hubs.append(hub)
            await voltwatch_mqtt.get_connection(hub).wait_ready()
        yield hubs[0], hubs[1], (found, args, plan, entries)
    finally:
        for hub in hubs:
            await hub.async_stop()


async def test_workers_split_telemetry_and_keep_one_alarm(workers: Any, broker: MosquittoBroker) -> None:
    hub_a, hub_b, (found, args, plan, entries) = workers
    hubs = [hub_a, hub_b]
    seen = DeviceSeen(hubs, smoke_entities(entries))
    log = EventLog(hubs, "alarm_raised", "alarm_updated", "alarm_cleared")
    fleet = await run_in_background(run_fleet(found, args, plan))
    try:
        await seen.wait()  # every detector reached at least one worker
        # The alarm event reaches both workers; each settles it against the database.
        await wait_until(lambda: {hub for hub, _, r in log.seen
                                  if r["device_id"] == ALARMED} == set(hubs))
    finally:
        await stop(fleet)
    connections = [voltwatch_mqtt.get_connection(hub) for hub in hubs]
    await wait_until(lambda: sum(c.kinds["telemetry"] for c in connections)
                     == plan.counters["mqtt_messages"])
    assert all(c.kinds["telemetry"] > 0 for c in connections), "one worker got no share"
    assert all(c.kinds["event"] == 1 for c in connections)  # events reach every worker

    rows = await hub_a.alarms.store.query(AlarmQuery(devices=[ALARMED]))
    assert [(r["type"], r["status"]) for r in rows] == [("smoke", "active")]
    raised = [(hub, r) for hub, kind, r in log.seen if kind == "alarm_raised"]
    assert len(raised) == 1 and raised[0][1]["id"] == rows[0]["id"]

    # The device clears: both workers hear it, the row clears, one worker announces it.
    async with aiomqtt.Client(broker.host, broker.port, identifier="clearer") as client:
        await client.publish(f"voltwatch/dev/{ALARMED}/event", json.dumps(
            {"event": "smoke_alarm", "state": "cleared"}), qos=1)
    await wait_until(lambda: sum(hub.alarms.cleared_elsewhere for hub in hubs)
                     + len(log.of("alarm_cleared")) == 2)
    assert len(log.of("alarm_cleared")) == 1
    rows = await hub_b.alarms.store.query(AlarmQuery(devices=[ALARMED]))
    assert [r["status"] for r in rows] == ["cleared"]


async def test_the_same_alarm_raised_by_both_at_once_is_one_row(workers: Any) -> None:
    hub_a, hub_b, (_, _, _, entries) = workers
    hubs = [hub_a, hub_b]
    log = EventLog(hubs, "alarm_raised", "alarm_updated")
    devices = [entry["id"] for entry in entries[:20]]
    for device_id in devices:  # both workers see the same condition in the same loop turn
        for hub in hubs:
            condition = Condition.create(device_id, "smoke", entity_id=None)
            hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
    await asyncio.gather(*(hub.alarms.async_flush() for hub in hubs))
    rows = await hub_a.alarms.store.query(AlarmQuery(devices=devices, status="active"))
    assert sorted(r["device_id"] for r in rows) == sorted(devices)  # one row each
    assert len(log.of("alarm_raised")) == len(devices)  # one announcement each
    assert len(log.of("alarm_updated")) == len(devices)  # the other worker merged into it
    assert all(r["count"] == 2 for r in rows)


async def test_one_work_order_per_alarm_across_workers(workers: Any) -> None:
    hub_a, hub_b, (_, _, _, entries) = workers
    device_id = entries[0]["id"]
    hub_a.bus.async_fire(EVENT_DEVICE_CONDITION, Condition.create(device_id, "smoke").as_dict())
    await hub_a.alarms.async_flush()
    [row] = await hub_a.alarms.store.query(AlarmQuery(devices=[device_id]))
    answers = await asyncio.gather(*(
        hub.services.async_call("workorder", "create", {"alarm_id": row["id"]},
                                return_response=True)
        for hub in (hub_a, hub_b, hub_a, hub_b)))
    ids = {answer["id"] for answer in answers}
    assert len(ids) == 1, answers
    orders = await hub_b.workorders.store.query(WorkOrderQuery(alarm_id=row["id"]))
    assert [order["id"] for order in orders] == sorted(ids)
