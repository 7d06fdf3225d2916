"""A run parked in `wait_for_trigger` survives a restart: stop the hub mid-wait, start a new Hub
on the same database, and the run waits on where it stood, then carries on with the remaining
actions exactly once.

Real alarms drive the starter reminder's shape (raised -> wait for its acknowledgement or
clearing, 10 minutes); the engine's clock is a FakeClock (conftest), so "the timeout passed
while the hub was down" is the clock moved past the persisted deadline before the second start.
Runs on SQLite and, with VOLTWATCH_TEST_DB=postgresql, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hub.storage.alarm_store import SqlAlarmStore
from hub.storage.automation_store import SqlAutomationStore
from hub.storage.database import Database
from tests.alarms.conftest import fire

from .conftest import TIMEOUT, FakeClock, RecordPlugin, Waiter, start, write_config

REMINDER = """\
- id: unacked_reminder
  mode: parallel
  max: 100
  triggers:
    - trigger: alarm
      on: raised
      kind: alarm
  actions:
    - action: test.record
      data: {step: raised, alarm: "{{ trigger.alarm.id }}"}
    - wait_for_trigger:
        - trigger: alarm
          on: [acknowledged, cleared]
          alarm_id: "{{ trigger.alarm.id }}"
      timeout: 10m
      continue_on_timeout: %s
    - if: "{{ wait.trigger is none }}"
      then:
        - action: test.record
          data: {step: reminder, alarm: "{{ trigger.alarm.id }}"}
      else:
        - action: test.record
          data: {step: answered, alarm: "{{ trigger.alarm.id }}",
                 by: "{{ wait.trigger.event }}"}
"""


async def _stop_mid_wait(tmp_path: Path, db_url: str, continue_on_timeout: bool = True
                         ) -> tuple[int, dict[str, Any]]:
    """Raise a real alarm, let the reminder park in its wait, stop the hub: (alarm id, row)."""
    write_config(tmp_path, REMINDER % str(continue_on_timeout).lower(), db_url)
    first = RecordPlugin()
    hub = await start(tmp_path, first)
    try:
        waiter = Waiter(hub, "alarm_raised", "automation_wait")
        fire(hub, "arcm-1", "residual_current_high", value=550, unit="mA")
        (raised,) = await waiter.wait_for("alarm_raised")
        (waiting,) = await waiter.wait_for("automation_wait")
        assert waiting.data["path"] == "actions/1"
        await hub.automations.async_flush()
        (row,) = await hub.automations.timers.load()
    finally:
        await hub.async_stop()
    assert [c.data["step"] for c in first.calls] == ["raised"]
    assert row["kind"] == "wait"
    return int(raised.data["id"]), row


async def _rows(hub: Any) -> list[dict[str, Any]]:
    """The persisted timer rows once every queued write is in the database."""
    await hub.automations.async_flush()
    return await hub.automations.timers.load()


async def _resumed_run(hub: Any) -> dict[str, Any]:
    """The trace of the resumed run once it is over (it may end while the hub starts, before
    a test could listen for its event: its task is awaited instead)."""
    tasks = list(hub.automations.automations["unacked_reminder"].running)
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    trace = (await _traces(hub))[0]
    assert trace["resumed"] is True
    return trace


async def _traces(hub: Any) -> list[dict[str, Any]]:
    await hub.automations.async_flush()
    return await hub.automations.store.traces("unacked_reminder")


async def test_acknowledging_after_a_restart_ends_the_resumed_wait(
        tmp_path: Path, hubs: list[Any], hub_db_url: str, clock: FakeClock) -> None:
    alarm_id, row = await _stop_mid_wait(tmp_path, hub_db_url)
    assert row["deadline"] == clock.now + 600  # the timeout as an absolute deadline

    second = RecordPlugin()
    hub = await start(tmp_path, second)
    hubs.append(hub)
    waiter = Waiter(hub, "automation_finished")
    assert len(hub.automations.waits) == 1  # waiting again, from the engine's start
    await hub.alarms.async_acknowledge([alarm_id])
    (finished,) = await waiter.wait_for("automation_finished")
    assert finished.data["outcome"] == "fired"
    # the rest of the run, once: not the first action again, no reminder, no second run
    assert [c.data for c in second.calls] == [
        {"step": "answered", "alarm": str(alarm_id), "by": "acknowledged"}]
    assert await _rows(hub) == []
    assert hub.automations.waits == set()
    traces = await _traces(hub)
    assert traces[0]["resumed"] is True and traces[0]["outcome"] == "fired"
    assert {t["outcome"] for t in traces} == {"fired", "cancelled"}  # before and after


async def test_an_alarm_acknowledged_while_the_hub_was_down_ends_the_wait_at_start(
        tmp_path: Path, hubs: list[Any], hub_db_url: str, clock: FakeClock) -> None:
    """The event was never seen (no hub was running); the alarm record says it happened
    after the wait began, so the reminder must not go out."""
    alarm_id, _ = await _stop_mid_wait(tmp_path, hub_db_url)
    database = Database(hub_db_url, tmp_path)
    await database.open()
    try:
        acked = await SqlAlarmStore(database).acknowledge([alarm_id], "值班员", clock.now + 60,
                                                          None)
        assert acked == [alarm_id]
    finally:
        await database.close()

    second = RecordPlugin()
    hub = await start(tmp_path, second)
    hubs.append(hub)
    assert (await _resumed_run(hub))["outcome"] == "fired"
    assert [c.data for c in second.calls] == [
        {"step": "answered", "alarm": str(alarm_id), "by": "acknowledged"}]
    assert await _rows(hub) == []


@pytest.mark.parametrize("continue_on_timeout", [True, False])
async def test_a_timeout_that_passed_while_the_hub_was_down_is_applied_at_start(
        tmp_path: Path, hubs: list[Any], hub_db_url: str, clock: FakeClock,
        continue_on_timeout: bool) -> None:
    alarm_id, row = await _stop_mid_wait(tmp_path, hub_db_url, continue_on_timeout)
    clock.now = row["deadline"] + 3600  # the hub was down for the deadline and an hour more

    second = RecordPlugin()
    hub = await start(tmp_path, second)
    hubs.append(hub)
    trace = await _resumed_run(hub)
    if continue_on_timeout:
        assert trace["outcome"] == "fired"
        assert [c.data for c in second.calls] == [{"step": "reminder", "alarm": str(alarm_id)}]
    else:
        assert trace["outcome"] == "stopped"
        assert second.calls == []
    assert await _rows(hub) == []
    # acknowledging now changes nothing: the run is over
    await hub.alarms.async_acknowledge([alarm_id])
    await hub.alarms.async_flush()
    assert len(second.calls) == (1 if continue_on_timeout else 0)


HOLD_YAML = """\
- id: cool_down
  triggers: [{trigger: event, event_type: go}]
  actions:
    - wait_for_trigger:
        - trigger: numeric_state
          entity_id: sensor.arcm_1_temperature_1
          below: 60
          for: 5m
      timeout: 1h
    - action: test.record
      data:
        value: "{{ wait.trigger.to_state.state if wait.trigger else 'timeout' }}"
        resumed: "{{ wait.trigger.resumed | default(false) if wait.trigger else none }}"
"""
SENSOR = "sensor.arcm_1_temperature_1"


async def _stop_mid_hold(tmp_path: Path, db_url: str, clock: FakeClock) -> float:
    write_config(tmp_path, HOLD_YAML, db_url)
    hub = await start(tmp_path)
    try:
        waiter = Waiter(hub, "automation_wait")
        hub.bus.async_fire("go")
        await waiter.wait_for("automation_wait")
        hub.states.async_set(SENSOR, 70)
        hub.states.async_set(SENSOR, 50)  # below 60: the 5-minute hold starts
        (hold,) = hub.automations.pending_wait_timers()
        assert hold["deadline"] == clock.now + 300
        await hub.automations.async_flush()
        (row,) = await hub.automations.timers.load()
        assert [h["deadline"] for h in row["data"]["holds"]] == [hold["deadline"]]
        return float(hold["deadline"])
    finally:
        await hub.async_stop()


async def test_a_hold_inside_a_wait_resumes_with_its_deadline_and_needs_a_fresh_reading(
        tmp_path: Path, hubs: list[Any], hub_db_url: str, clock: FakeClock) -> None:
    deadline = await _stop_mid_hold(tmp_path, hub_db_url, clock)
    clock.now = deadline + 1  # the 5 minutes passed while the hub was down
    record = RecordPlugin()
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, "automation_finished")
    assert hub.automations.pending_wait_timers() == [
        {"trigger_index": 0, "entity_id": SENSOR, "deadline": deadline, "confirmed": False}]
    await hub.automations.async_flush()
    assert record.calls == []  # a reading from before the restart alone ends nothing
    hub.states.async_set(SENSOR, 45)  # the detector reports again, still cool
    (finished,) = await waiter.wait_for("automation_finished")
    assert finished.data["outcome"] == "fired"
    assert [c.data for c in record.calls] == [{"value": "50", "resumed": "True"}]
    assert await _rows(hub) == []


async def test_a_hold_broken_while_the_hub_was_down_is_dropped_and_the_wait_goes_on(
        tmp_path: Path, hubs: list[Any], hub_db_url: str, clock: FakeClock) -> None:
    deadline = await _stop_mid_hold(tmp_path, hub_db_url, clock)
    clock.now = deadline + 1
    record = RecordPlugin()
    hub = await start(tmp_path, record)
    hubs.append(hub)
    hub.states.async_set(SENSOR, 80)  # hot again: the hold is broken
    assert hub.automations.pending_wait_timers() == []
    assert len(hub.automations.waits) == 1 and record.calls == []
    (row,) = await _rows(hub)  # still waiting, without the hold
    assert row["kind"] == "wait" and row["data"]["holds"] == []


async def test_an_unreadable_wait_row_is_dropped_and_the_others_resume(
        tmp_path: Path, hubs: list[Any], hub_db_url: str, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    _alarm_id, row = await _stop_mid_wait(tmp_path, hub_db_url)
    broken = {**row, "key": "wait:broken", "data": {**row["data"], "run_id": "broken",
                                                     "confs": [{"trigger": "template"}]}}
    database = Database(hub_db_url, tmp_path)
    await database.open()
    try:
        await SqlAutomationStore(database).save_timer(broken)
    finally:
        await database.close()

    hub = await start(tmp_path)
    hubs.append(hub)
    assert hub.automations.resume_failures == 1
    assert "wait:broken cannot be resumed" in caplog.text
    assert len(hub.automations.waits) == 1  # the good one waits again
    assert [r["key"] for r in await _rows(hub)] == [row["key"]]


async def test_the_starter_reminder_goes_out_once_after_a_restart_past_its_10_minutes(
        tmp_path: Path, hubs: list[Any], hub_db_url: str, clock: FakeClock) -> None:
    """The demo's own automations.yaml (starter.py): an alarm raised, the hub down for longer
    than the reminder's 10 minutes, and on start the reminder is sent, once."""
    from hub.core.automations.starter import STARTER

    write_config(tmp_path, STARTER, hub_db_url)
    hub = await start(tmp_path)
    try:
        waiter = Waiter(hub, "automation_wait")
        fire(hub, "arcm-1", "residual_current_high", value=550, unit="mA")
        await waiter.wait_for("automation_wait")
        (row,) = await _rows(hub)
    finally:
        await hub.async_stop()
    clock.now = row["deadline"] + 60

    hub = await start(tmp_path)
    hubs.append(hub)
    trace = await _resumed_run(hub)
    assert trace["outcome"] == "fired"
    calls = [s for s in trace["steps"] if s["kind"] == "call_service"]
    assert [c["service"] for c in calls] == ["notify.send"]
    assert calls[0]["data"]["message"].startswith("未确认报警 10 分钟: ")
    assert await _rows(hub) == []
