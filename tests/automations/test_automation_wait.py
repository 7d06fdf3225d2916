"""`for:` inside `wait_for_trigger`: the trigger must hold for the duration, as a trigger's
`for:` does. The engine's clock is a FakeClock (conftest): the hold's deadline is read from
the engine (`pending_wait_timers`), and the clock is set to that deadline before the hold's
timer runs, so `wait.trigger.fired_at` is exact. Runs are followed through the
`automation_wait` event (the wait listens from then on) and `automation_finished`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        {"trigger_index": 0, "entity_id": SENSOR, "deadline": start_at + 0.2}]
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
    assert await hub.automations.timers.load() == []  # a wait's hold is not persisted
    (finished,) = await waiter.wait_for("automation_finished")
    assert finished.data["outcome"] == "fired"  # continue_on_timeout (the default)
    assert [c.data["value"] for c in record.calls] == ["timeout"]
    assert hub.automations.pending_wait_timers() == []  # the hold went with the wait
