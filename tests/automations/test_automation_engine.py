"""The engine with a real Hub: triggers, conditions, actions, modes, Context chain, traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import RecordPlugin, Waiter, start, write_config

FINISHED = "automation_finished"


async def _finished(hub: Any, waiter: Waiter, automation_id: str, count: int = 1) -> list[Any]:
    events = await waiter.wait_for(FINISHED, count,
                                   lambda e: e.data["automation_id"] == automation_id)
    await hub.automations.async_flush()
    return events


async def test_numeric_state_fires_with_context_chain(tmp_path: Path, hubs: list[Any],
                                                      record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: leak
  triggers:
    - trigger: numeric_state
      entity_id: sensor.arcm_1_residual_current
      above: 500
  conditions:
    - condition: numeric_state
      entity_id: sensor.arcm_1_residual_current
      below: 2000
  actions:
    - action: test.record
      data: {value: "{{ trigger.to_state.state }}", device: arcm-1}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    hub.states.async_set("sensor.arcm_2_residual_current", 900)  # another entity: nothing
    state = hub.states.async_set("sensor.arcm_1_residual_current", 600)
    events = await _finished(hub, waiter, "leak")
    assert events[0].data["outcome"] == "fired"
    assert record.calls[0].data == {"value": "600", "device": "arcm-1"}
    # the run's Context is a child of the state change that triggered it
    assert record.calls[0].context.parent_id == state.context.id
    # staying above does not fire again; falling and rising does
    hub.states.async_set("sensor.arcm_1_residual_current", 700)
    hub.states.async_set("sensor.arcm_1_residual_current", 100)
    hub.states.async_set("sensor.arcm_1_residual_current", 3000)  # condition false
    events = await _finished(hub, waiter, "leak", 2)
    assert events[1].data["outcome"] == "condition_false"
    assert len(record.calls) == 1
    traces = await hub.automations.store.traces("leak")
    assert [t["outcome"] for t in traces] == ["condition_false", "fired"]


async def test_failing_action_is_traced_and_engine_goes_on(tmp_path: Path, hubs: list[Any],
                                                           record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: broken
  triggers: [{trigger: state, entity_id: switch.arcm_1_breaker, to: "off"}]
  actions:
    - action: test.fail
    - action: test.record
- id: fine
  triggers: [{trigger: state, entity_id: switch.arcm_1_breaker, to: "off"}]
  actions:
    - action: test.record
      data: {who: fine}
- id: skip_missing
  triggers: [{trigger: event, event_type: ping, event_data: {n: 1}}]
  actions:
    - action: notify.sms
      if_missing: skip
      data: {message: hi}
    - action: test.record
      data: {who: after_skip}
- id: bad_template
  triggers: [{trigger: event, event_type: ping, event_data: {n: 3}}]
  actions:
    - if: "{{ true }}"
      then:
        - action: test.record
          data: {x: "{{ nope.missing }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    hub.states.async_set("switch.arcm_1_breaker", "on")
    hub.states.async_set("switch.arcm_1_breaker", "off")
    await _finished(hub, waiter, "broken")
    await _finished(hub, waiter, "fine")
    broken = (await hub.automations.store.traces("broken"))[0]
    assert broken["outcome"] == "error"
    assert broken["error"] == ("automation 'broken' actions/0: RuntimeError: the device did "
                               "not answer")
    assert [s["kind"] for s in broken["steps"]] == ["call_service", "error"]
    assert [c.data for c in record.calls] == [{"who": "fine"}]
    hub.bus.async_fire("ping", {"n": 2})  # event_data does not match
    hub.bus.async_fire("ping", {"n": 1})
    await _finished(hub, waiter, "skip_missing")
    trace = (await hub.automations.store.traces("skip_missing"))[0]
    assert trace["outcome"] == "fired"
    assert trace["steps"][0]["skipped"] is True and "not registered" in trace["steps"][0]["note"]
    assert record.calls[-1].data == {"who": "after_skip"}
    hub.bus.async_fire("ping", {"n": 3})
    await _finished(hub, waiter, "bad_template")
    trace = (await hub.automations.store.traces("bad_template"))[0]
    assert trace["error"] == ("automation 'bad_template' actions/0/then/0: template: "
                              "undefined: 'nope' is undefined")


async def test_choose_if_repeat_variables_stop(tmp_path: Path, hubs: list[Any],
                                               record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: flow
  variables: {limit: 2}
  triggers: [{trigger: event, event_type: go}]
  actions:
    - variables: {doubled: "{{ limit * 2 }}"}
    - repeat:
        count: "{{ doubled }}"
        sequence:
          - action: test.record
            data: {i: "{{ repeat.index }}"}
    - if:
        - condition: template
          value_template: "{{ trigger.event.data.kind == 'a' }}"
      then:
        - action: test.record
          data: {branch: then}
      else:
        - action: test.record
          data: {branch: else}
    - choose:
        - conditions: "{{ trigger.event.data.kind == 'b' }}"
          sequence: [{action: test.record, data: {choose: b}}]
      default: [{action: test.record, data: {choose: default}}]
    - stop: done here
    - action: test.record
      data: {never: true}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    hub.bus.async_fire("go", {"kind": "b"})
    events = await _finished(hub, waiter, "flow")
    assert events[0].data["outcome"] == "stopped"
    assert [c.data for c in record.calls] == [
        {"i": "1"}, {"i": "2"}, {"i": "3"}, {"i": "4"}, {"branch": "else"}, {"choose": "b"}]


async def test_mode_single_and_queued(tmp_path: Path, hubs: list[Any],
                                      record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: single
  mode: single
  triggers: [{trigger: event, event_type: go}]
  actions:
    - wait_for_trigger: [{trigger: event, event_type: release}]
    - action: test.record
      data: {who: single}
- id: queued
  mode: queued
  max: 5
  triggers: [{trigger: event, event_type: go}]
  actions:
    - wait_for_trigger: [{trigger: event, event_type: release}]
      timeout: 30
    - action: test.record
      data: {who: queued}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED, "automation_triggered")
    hub.bus.async_fire("go")
    hub.bus.async_fire("go")  # single: dropped; queued: waits its turn
    await waiter.wait_for("automation_triggered", 2)
    assert hub.automations.automations["single"].dropped == 1
    hub.bus.async_fire("release")
    await _finished(hub, waiter, "queued", 1)
    await waiter.wait_for("automation_triggered", 3)  # the queued run started
    hub.bus.async_fire("release")
    await _finished(hub, waiter, "queued", 2)
    assert sorted(c.data["who"] for c in record.calls) == ["queued", "queued", "single"]


async def test_alarm_trigger_with_filters_and_project_condition(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: on_alarm
  mode: parallel
  triggers:
    - trigger: alarm
      on: raised
      kind: alarm
  conditions:
    - condition: project
      project: school-1
  actions:
    - action: test.record
      data: {device: "{{ trigger.alarm.device_id }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    hub.bus.async_fire("alarm_raised", {"device_id": "arcm-2", "kind": "alarm",
                                        "project": "hospital-1", "type": "smoke"})
    hub.bus.async_fire("alarm_raised", {"device_id": "arcm-1", "kind": "fault",
                                        "project": "school-1", "type": "tamper"})
    hub.bus.async_fire("alarm_raised", {"device_id": "arcm-1", "kind": "alarm",
                                        "project": "school-1", "type": "smoke"})
    events = await _finished(hub, waiter, "on_alarm", 2)
    assert sorted(e.data["outcome"] for e in events) == ["condition_false", "fired"]
    assert [c.data for c in record.calls] == [{"device": "arcm-1"}]
