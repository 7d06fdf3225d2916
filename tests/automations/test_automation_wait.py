"""`for:` inside `wait_for_trigger`: the trigger must hold for the duration, as a trigger's
`for:` does. The engine's clock is a FakeClock (conftest): the hold's deadline is read from
the engine (`pending_wait_timers`), and the clock is set to that deadline before the hold's
timer runs, so `wait.trigger.fired_at` is exact. Runs are followed through the
`automation_wait` event (the wait listens from then on) and `automation_finished`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol

from hub.core.automations.schema import TRIGGER

from .conftest import FakeClock, RecordPlugin, Waiter, start, write_config

SENSOR = "sensor.arcm_1_residual_current"
WAIT_YAML = """\
- id: hold_wait
  triggers: [{trigger: event, event_type: go}]
  actions:
    - wait_for_trigger:
        - trigger: numeric_state
          entity_id: sensor.arcm_1_residual_current
          above: 500
          for: %s
      timeout: %s
    - action: test.record
      data:
        value: "{{ wait.trigger.to_state.state if wait.trigger else 'timeout' }}"
        fired_at: "{{ wait.trigger.fired_at if wait.trigger else none }}"
"""


async def _waiting(tmp_path: Path, hubs: list[Any], record: RecordPlugin, hold: str,
                   timeout: str) -> tuple[Any, Waiter]:
    write_config(tmp_path, WAIT_YAML % (hold, timeout))
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, "automation_wait", "automation_finished")
    hub.bus.async_fire("go")
    (event,) = await waiter.wait_for("automation_wait")
    assert event.data["path"] == "actions/0"
    return hub, waiter


async def test_wait_for_trigger_with_for_fires_only_after_the_state_held(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin, clock: FakeClock) -> None:
    hub, waiter = await _waiting(tmp_path, hubs, record, "0.2s", "60")
    engine = hub.automations
    start_at = clock.now

    hub.states.async_set(SENSOR, 600)  # crosses: the hold starts
    assert engine.pending_wait_timers() == [
        {"trigger_index": 0, "entity_id": SENSOR, "deadline": start_at + 0.2,
         "confirmed": True}]
    hub.states.async_set(SENSOR, 100)  # broken before 0.2 s: the hold is cancelled
    assert engine.pending_wait_timers() == []
    assert record.calls == []

    clock.now = start_at + 5
    hub.states.async_set(SENSOR, 700)  # crosses again: a fresh hold from now
    hub.states.async_set(SENSOR, 750)  # still above: the hold goes on, not restarted
    (hold,) = engine.pending_wait_timers()
    assert hold["deadline"] == start_at + 5.2
    clock.now = hold["deadline"]  # time passes on the engine's clock as the timer runs

    (finished,) = await waiter.wait_for("automation_finished")
    assert finished.data["outcome"] == "fired"
    # wait.trigger is the change that started the hold, fired when it had held
    assert [c.data for c in record.calls] == [{"value": "700",
                                               "fired_at": str(start_at + 5.2)}]
    assert engine.pending_wait_timers() == [] and engine.waits == set()
    await engine.async_flush()
    (trace,) = await engine.store.traces("hold_wait")
    assert [s["triggered"] for s in trace["steps"] if s["kind"] == "wait_for_trigger"] == [True]


async def test_wait_for_trigger_times_out_while_the_hold_is_still_running(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin, clock: FakeClock) -> None:
    hub, waiter = await _waiting(tmp_path, hubs, record, "1h", "1")
    hub.states.async_set(SENSOR, 900)
    assert len(hub.automations.pending_wait_timers()) == 1
    await hub.automations.async_flush()
    (row,) = await hub.automations.timers.load()  # the wait, with its hold, survives a restart
    assert row["kind"] == "wait" and row["deadline"] == clock.now + 1
    assert [(h["entity_id"], h["deadline"]) for h in row["data"]["holds"]] == [
        (SENSOR, clock.now + 3600)]
    (finished,) = await waiter.wait_for("automation_finished")
    assert finished.data["outcome"] == "fired"  # continue_on_timeout (the default)
    assert [c.data["value"] for c in record.calls] == ["timeout"]
    assert hub.automations.pending_wait_timers() == []  # the hold went with the wait
    await hub.automations.async_flush()
    assert await hub.automations.timers.load() == []  # and so did its row


REMIND_YAML = """\
- id: remind
  mode: parallel
  triggers: [{trigger: alarm, on: raised}]
  actions:
    - wait_for_trigger:
        - trigger: alarm
          on: [acknowledged, cleared]
          alarm_id: "{{ trigger.alarm.id }}"
      timeout: 600
    - action: test.record
      data:
        alarm: "{{ trigger.alarm.id }}"
        answered_by: "{{ wait.trigger.alarm.id if wait.trigger else 'timeout' }}"
"""


async def test_a_wait_for_one_alarm_ignores_the_acknowledgement_of_another(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    """The starter reminder's shape: each run waits for *its* alarm (a templated `alarm_id`);
    acknowledging another alarm must not end it (it used to, sending the reminder at once)."""
    write_config(tmp_path, REMIND_YAML)
    hub = await start(tmp_path, record)
    hubs.append(hub)
    engine = hub.automations
    waiter = Waiter(hub, "automation_wait", "automation_finished")
    for alarm_id in (1, 2):
        hub.bus.async_fire("alarm_raised", {"id": alarm_id, "kind": "alarm", "type": "leak"})
    assert len(await waiter.wait_for("automation_wait", count=2)) == 2

    hub.bus.async_fire("alarm_acknowledged", {"id": 2, "kind": "alarm", "type": "leak"})
    await waiter.wait_for("automation_finished")
    # Listeners run inline in the event's dispatch: had alarm 1's wait matched, it would be
    # over too by now.
    assert [c.data for c in record.calls] == [{"alarm": "2", "answered_by": "2"}]
    assert len(engine.waits) == 1

    hub.bus.async_fire("alarm_cleared", {"id": 1, "kind": "alarm", "type": "leak"})
    await waiter.wait_for("automation_finished", count=2)
    assert [c.data for c in record.calls][1] == {"alarm": "1", "answered_by": "1"}
    assert engine.waits == set()


def test_an_alarm_id_that_is_neither_ids_nor_a_template_is_refused() -> None:
    assert TRIGGER({"trigger": "alarm", "alarm_id": 7})["alarm_id"] == [7]
    with pytest.raises(vol.Invalid):
        TRIGGER({"trigger": "alarm", "alarm_id": ["twelve"]})
