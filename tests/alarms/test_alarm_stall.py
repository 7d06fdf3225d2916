"""A database that does not answer does not hold an alarm's announcement (hub/core/alarms.py,
`store_timeout`); the real-PostgreSQL drill with the modem is
tests/fleet/test_fault_drills.py::test_stalled_alarm_tables_do_not_hold_the_alarm_or_its_sms."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol

import hub.core.alarms as alarms_mod
from hub.core.config import ALARMS_SCHEMA
from hub.storage.workorder_store import WorkOrderQuery

from .conftest import Recorder, fire, hub_config, settle, start_hub


class GatedStore:
    """The engine's store with inserts held until the test opens the gate (a stall)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.gate = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def insert(self, row: dict[str, Any]) -> int:
        await self.gate.wait()
        return await self.store.insert(row)


def test_store_timeout_is_validated() -> None:
    assert ALARMS_SCHEMA({"store_timeout": "2s"})["store_timeout"] == 2.0
    for bad in (0, -1, 61, "soon"):
        with pytest.raises(vol.Invalid):
            ALARMS_SCHEMA({"store_timeout": bad})


async def test_a_provisional_alarm_that_another_worker_stored_is_folded_into_its_row(
    tmp_path: Path,
) -> None:
    """Announced during the stall, then the insert finds another worker's active row: the
    record takes that row (one row, count 2) and `alarm_updated` tells its id; no second
    `alarm_raised`, and the spool is empty again."""
    hub = await start_hub(tmp_path, hub_config(alarms={"store_timeout": 0.1}))
    events = Recorder(hub, "alarm_raised", "alarm_updated")
    gated = GatedStore(hub.alarms.store)
    hub.alarms.store = gated
    try:
        fire(hub, "arcm-1", "residual_current_high", value=550, unit="mA")
        (provisional,) = await events.wait_for("alarm_raised")
        assert provisional["id"] is None and provisional["provisional"]
        spool = tmp_path / alarms_mod.SPOOL_NAME
        assert provisional["ref"] in spool.read_text()
        # meanwhile another worker stored the same (device, type)
        other = alarms_mod.AlarmRecord(
            device_id="arcm-1", type="residual_current_high", kind="alarm", severity="major",
            message="x", started_at=provisional_start(provisional) - 1,
            last_seen_at=provisional_start(provisional) - 1, sources={"device"})
        other_id = await gated.store.insert(other.row())
        gated.gate.set()
        (stored,) = await events.wait_for(
            "alarm_updated", where=lambda u: u["ref"] == provisional["ref"])
        await settle(hub)
        assert stored["id"] == other_id and not stored["provisional"] and stored["count"] == 2
        assert len(events.of("alarm_raised")) == 1
        assert not spool.exists()
        assert hub.alarms.provisional_total == 1
        assert [r.id for r in hub.alarms.active()] == [other_id]
    finally:
        gated.gate.set()
        events.close()
        await hub.async_stop()


async def test_a_work_order_automation_waits_for_the_provisional_alarms_row(
    tmp_path: Path,
) -> None:
    """An automation opening a work order on `alarm_raised` (docs/hazards.md) during a stall:
    the alarm has no id yet, so it names it by `alarm_ref` and the service waits for the row.
    Here the row turns out to be another worker's (folded): the order is for that row, and
    an order that worker already opened is returned, not doubled. (With `alarm_id:
    "{{ trigger.alarm.id }}"` the run failed with 'None' and no order was ever opened.)"""
    automation = {"id": "order_on_alarm", "triggers": [{"trigger": "alarm", "on": ["raised"]}],
                  "actions": [{"action": "workorder.create",
                               "data": {"alarm_ref": "{{ trigger.alarm.ref }}"}}]}
    hub = await start_hub(tmp_path, hub_config(alarms={"store_timeout": 0.1},
                                               automations=[automation]))
    events = Recorder(hub, "alarm_raised", "alarm_updated", "automation_finished")
    gated = GatedStore(hub.alarms.store)
    hub.alarms.store = gated
    try:
        fire(hub, "arcm-1", "residual_current_high", value=550, unit="mA")
        (provisional,) = await events.wait_for("alarm_raised")
        assert provisional["id"] is None
        assert hub.alarms.by_ref(provisional["ref"]) is not None
        other = alarms_mod.AlarmRecord(  # another worker's row, and the order it opened
            device_id="arcm-1", type="residual_current_high", kind="alarm", severity="major",
            message="剩余电流过大 550mA", started_at=provisional_start(provisional) - 1,
            last_seen_at=provisional_start(provisional) - 1, sources={"device"},
            project="school-1-a")
        other_id = await gated.store.insert(other.row())
        order, created = await hub.workorders.async_create(alarm_id=other_id)
        assert created and events.of("automation_finished") == []  # the run waits for the row
        gated.gate.set()
        (finished,) = await events.wait_for("automation_finished")
        assert finished["outcome"] == "fired", finished
        assert await hub.alarms.record_id(provisional["ref"]) == other_id
        assert await hub.workorders.store.open_for_alarm(other_id) is not None
        orders = await hub.workorders.store.query(WorkOrderQuery(alarm_id=other_id))
        assert [o["id"] for o in orders] == [order["id"]]
        with pytest.raises(KeyError):
            await hub.alarms.record_id("no-such-ref")
    finally:
        gated.gate.set()
        events.close()
        await hub.async_stop()


def provisional_start(record: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(record["started_at"]).timestamp()
