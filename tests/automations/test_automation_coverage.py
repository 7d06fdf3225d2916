"""The engine with a real Hub, continued: template and device_offline triggers, alarm triggers
with their filters on real alarm records, modes restart / parallel / queued with `max`, the
`not` and `project` conditions, and a run that opens a work order for the alarm that fired it.

Time-based triggers and conditions are in test_automation_time.py (with an injected clock).

Synchronisation is on bus events and on the engine's own tasks, bounded by conftest.TIMEOUT
(a failure bound only); nothing sleeps to wait for the engine.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hub.storage.schema import workorders
from tests.alarms.conftest import fire as fire_condition

from .conftest import TIMEOUT, RecordPlugin, Waiter, start, write_config

FINISHED = "automation_finished"
TRIGGERED = "automation_triggered"


async def _finished(hub: Any, waiter: Waiter, automation_id: str, count: int = 1) -> list[Any]:
    events = await waiter.wait_for(FINISHED, count,
                                   lambda e: e.data["automation_id"] == automation_id)
    await hub.automations.async_flush()
    return events


async def _templates_settled(hub: Any) -> None:
    """Every template-trigger evaluation the engine spawned so far has finished."""
    while tasks := [t for t in list(hub.automations._tasks_hold) if not t.done()]:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT)


def _triggered(waiter: Waiter, automation_id: str) -> list[Any]:
    return [e for e in waiter.of(TRIGGERED) if e.data["automation_id"] == automation_id]


class Gate:
    """A `test.gate` service that holds each call until opened: runs park inside it, and the
    test knows (without sleeping) how many runs got there and in which order."""

    def __init__(self, hub: Any) -> None:
        self.entered: list[Any] = []
        self._open = asyncio.Event()
        self._changed = asyncio.Event()

        async def gate(call: Any) -> dict[str, Any]:
            self.entered.append(call.data)
            self._changed.set()
            await self._open.wait()
            return {"passed": True}

        hub.services.register("test", "gate", gate, supports_response=True)

    async def wait_entered(self, count: int) -> list[Any]:
        async def until() -> list[Any]:
            while len(self.entered) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.entered

        return await asyncio.wait_for(until(), TIMEOUT)

    def open(self) -> None:
        self._open.set()


# -- template trigger ---------------------------------------------------------------------------

async def test_template_trigger_fires_on_false_to_true_only(tmp_path: Path, hubs: list[Any],
                                                            record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: hot
  mode: queued
  triggers:
    - trigger: template
      value_template: "{{ states('sensor.arcm_1_temperature_1') | float(0) > 60 }}"
  actions:
    - action: test.record
      data:
        platform: "{{ trigger.platform }}"
        value: "{{ states('sensor.arcm_1_temperature_1') }}"
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED, TRIGGERED)
    hub.states.async_set("sensor.arcm_1_temperature_1", 50)
    await _templates_settled(hub)
    assert _triggered(waiter, "hot") == []
    hub.states.async_set("sensor.arcm_1_temperature_1", 70)  # false -> true: fires
    events = await _finished(hub, waiter, "hot")
    assert events[0].data["outcome"] == "fired"
    assert record.calls[0].data == {"platform": "template", "value": "70"}

    hub.states.async_set("sensor.arcm_1_temperature_1", 75)  # still true: nothing
    await _templates_settled(hub)
    hub.states.async_set("sensor.arcm_2_temperature_1", 99)  # not read by the template
    await _templates_settled(hub)
    assert len(_triggered(waiter, "hot")) == 1
    hub.states.async_set("sensor.arcm_1_temperature_1", 40)  # back to false
    await _templates_settled(hub)
    hub.states.async_set("sensor.arcm_1_temperature_1", 80)  # false -> true again: fires
    await _finished(hub, waiter, "hot", 2)
    assert [c.data["value"] for c in record.calls] == ["70", "80"]
    assert len(_triggered(waiter, "hot")) == 2


async def test_template_trigger_watches_entities_read_after_a_short_circuit(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    """At start the breaker has no state, so `and` never reads the residual current; once the
    breaker is off the template reads it, and a change of it alone must re-evaluate."""
    write_config(tmp_path, """\
- id: leak_while_open
  triggers:
    - trigger: template
      value_template: >-
        {{ is_state('switch.arcm_1_breaker', 'off')
           and states('sensor.arcm_1_residual_current') | float(0) > 500 }}
  actions:
    - action: test.record
      data: {residual: "{{ states('sensor.arcm_1_residual_current') }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    hub.states.async_set("switch.arcm_1_breaker", "off")
    await _templates_settled(hub)
    hub.states.async_set("sensor.arcm_1_residual_current", 600)
    events = await _finished(hub, waiter, "leak_while_open")
    assert events[0].data["outcome"] == "fired"
    assert [c.data for c in record.calls] == [{"residual": "600"}]


async def test_template_trigger_with_for(tmp_path: Path, hubs: list[Any],
                                         record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: hot_for
  triggers:
    - trigger: template
      value_template: "{{ states('sensor.arcm_1_temperature_1') | float(0) > 60 }}"
      for: 0.5s  # outlasts the renders between the writes below
  actions:
    - action: test.record
      data: {value: "{{ states('sensor.arcm_1_temperature_1') }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    hub.states.async_set("sensor.arcm_1_temperature_1", 70)
    await _templates_settled(hub)
    assert [p["automation_id"] for p in hub.automations.pending_timers()] == ["hot_for"]
    hub.states.async_set("sensor.arcm_1_temperature_1", 20)  # broken before the deadline
    await _templates_settled(hub)
    assert hub.automations.pending_timers() == []
    hub.states.async_set("sensor.arcm_1_temperature_1", 65)
    await _templates_settled(hub)
    events = await _finished(hub, waiter, "hot_for")
    assert events[0].data["outcome"] == "fired"
    assert [c.data for c in record.calls] == [{"value": "65"}]  # once: the broken one never
    trace = (await hub.automations.store.traces("hot_for"))[0]
    assert trace["trigger"]["platform"] == "template" and "fired_at" in trace["trigger"]
    assert await hub.automations.timers.load() == []


# -- device_offline trigger ---------------------------------------------------------------------

async def test_device_offline_trigger_and_project_condition(tmp_path: Path, hubs: list[Any],
                                                            record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: offline
  mode: queued
  triggers:
    - trigger: device_offline
      device_id: [arcm-1, arcm-2]
  actions:
    - action: test.record
      data: {offline: "{{ trigger.device_id }}", entity: "{{ trigger.entity_id }}"}
- id: offline_school
  mode: queued
  triggers:
    - trigger: device_offline
      device_id: [arcm-1, arcm-2]
  conditions:
    - condition: project
      project: school-1
  actions:
    - action: test.record
      data: {school: "{{ trigger.device_id }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED, TRIGGERED)
    hub.states.async_set("binary_sensor.arcm_1_online", "on")
    hub.states.async_set("binary_sensor.arcm_2_online", "on")
    hub.states.async_set("binary_sensor.arcm_3_online", "off")  # not listed
    assert waiter.of(TRIGGERED) == []
    hub.states.async_set("binary_sensor.arcm_1_online", "off")
    hub.states.async_set("binary_sensor.arcm_1_online", "off", {"since": 1})  # still off
    hub.states.async_set("binary_sensor.arcm_2_online", "off")
    await _finished(hub, waiter, "offline", 2)
    school = await _finished(hub, waiter, "offline_school", 2)
    assert [c.data for c in record.calls if "offline" in c.data] == [
        {"offline": "arcm-1", "entity": "binary_sensor.arcm_1_online"},
        {"offline": "arcm-2", "entity": "binary_sensor.arcm_2_online"}]
    # the project condition reads the trigger's device: arcm-1 is school-1, arcm-2 is not
    assert [e.data["outcome"] for e in school] == ["fired", "condition_false"]
    assert [c.data for c in record.calls if "school" in c.data] == [{"school": "arcm-1"}]
    assert len(waiter.of(TRIGGERED)) == 4


async def test_device_offline_for_is_cancelled_by_coming_back(tmp_path: Path, hubs: list[Any],
                                                              record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: offline_for
  triggers:
    - trigger: device_offline
      device_id: arcm-1
      for: 0.2s
  actions:
    - action: test.record
      data: {offline: "{{ trigger.device_id }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    hub.states.async_set("binary_sensor.arcm_1_online", "on")
    hub.states.async_set("binary_sensor.arcm_1_online", "off")
    (pending,) = hub.automations.pending_timers()
    assert pending["entity_id"] == "binary_sensor.arcm_1_online"
    hub.states.async_set("binary_sensor.arcm_1_online", "on")  # back before the deadline
    assert hub.automations.pending_timers() == []
    hub.states.async_set("binary_sensor.arcm_1_online", "off")
    events = await _finished(hub, waiter, "offline_for")
    assert events[0].data["outcome"] == "fired"
    assert [c.data for c in record.calls] == [{"offline": "arcm-1"}]
    assert await hub.automations.timers.load() == []


# -- alarm trigger with filters (real alarm records) ----------------------------------------------

async def test_alarm_trigger_filters_on_real_alarms(tmp_path: Path, hubs: list[Any],
                                                    record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: critical_school
  mode: parallel
  triggers:
    - trigger: alarm
      on: raised
      type: [smoke, arc_fault]
      severity: critical
      project: school-1
  actions:
    - action: test.record
      data:
        who: critical_school
        type: "{{ trigger.alarm.type }}"
        device: "{{ trigger.device_id }}"
        event: "{{ trigger.event }}"
- id: arcm2_ack_or_clear
  mode: parallel
  triggers:
    - trigger: alarm
      on: [acknowledged, cleared]
      device_id: arcm-2
      kind: [alarm, fault]
  actions:
    - action: test.record
      data: {who: arcm2, event: "{{ trigger.event }}", type: "{{ trigger.alarm.type }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED, TRIGGERED, "alarm_raised", "alarm_cleared",
                    "alarm_acknowledged")
    fire_condition(hub, "arcm-2", "smoke")                  # critical, hospital-1
    fire_condition(hub, "arcm-1", "overload")               # school-1, major
    fire_condition(hub, "arcm-1", "tamper")                 # school-1, fault
    fire_condition(hub, "arcm-1", "smoke")                  # matches every filter
    raised = await waiter.wait_for("alarm_raised", 4)
    await _finished(hub, waiter, "critical_school")
    assert [e.data["automation_id"] for e in waiter.of(TRIGGERED)] == ["critical_school"]
    assert [c.data for c in record.calls] == [{"who": "critical_school", "type": "smoke",
                                               "device": "arcm-1", "event": "raised"}]

    smoke_2 = next(e.data for e in raised if e.data["device_id"] == "arcm-2")
    await hub.alarms.async_acknowledge([smoke_2["id"]])
    fire_condition(hub, "arcm-2", "smoke", False)           # cleared
    fire_condition(hub, "arcm-1", "overload", False)        # cleared, but not arcm-2
    await waiter.wait_for("alarm_cleared", 2)
    await _finished(hub, waiter, "arcm2_ack_or_clear", 2)
    assert [c.data for c in record.calls if c.data["who"] == "arcm2"] == [
        {"who": "arcm2", "event": "acknowledged", "type": "smoke"},
        {"who": "arcm2", "event": "cleared", "type": "smoke"}]
    assert len(waiter.of(TRIGGERED)) == 3


# -- modes ------------------------------------------------------------------------------------------

async def test_mode_restart_cancels_the_running_run(tmp_path: Path, hubs: list[Any],
                                                    record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: restarting
  mode: restart
  triggers: [{trigger: event, event_type: go}]
  actions:
    - action: test.record
      data: {start: "{{ trigger.event.data.n }}"}
    - delay: "{{ trigger.event.data.wait }}"
    - action: test.record
      data: {end: "{{ trigger.event.data.n }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED, "automation_delay")
    automation = hub.automations.automations["restarting"]
    hub.bus.async_fire("go", {"n": 1, "wait": "60s"})
    await waiter.wait_for("automation_delay")  # run 1 sleeps, its delay row written
    first = list(automation.running)
    hub.bus.async_fire("go", {"n": 2, "wait": "0s"})  # restart: run 1 is cancelled
    await asyncio.wait_for(asyncio.gather(*first, return_exceptions=True), TIMEOUT)
    assert all(task.cancelled() for task in first)
    events = await _finished(hub, waiter, "restarting")
    assert [e.data["outcome"] for e in events] == ["fired"]
    assert [c.data for c in record.calls] == [{"start": "1"}, {"start": "2"}, {"end": "2"}]
    traces = await hub.automations.store.traces("restarting")
    assert sorted(t["outcome"] for t in traces) == ["cancelled", "fired"]
    # the cancelled run's delay is not left behind to be resumed at the next start
    assert await hub.automations.timers.load() == []


async def test_mode_parallel_with_max(tmp_path: Path, hubs: list[Any],
                                      record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: par
  mode: parallel
  max: 2
  triggers: [{trigger: event, event_type: go}]
  actions:
    - action: test.gate
      data: {n: "{{ trigger.event.data.n }}"}
    - action: test.record
      data: {n: "{{ trigger.event.data.n }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    gate = Gate(hub)
    waiter = Waiter(hub, FINISHED, TRIGGERED)
    for n in (1, 2, 3):
        hub.bus.async_fire("go", {"n": n})
    # two run side by side (both inside the gate at once), the third is dropped
    assert sorted(e["n"] for e in await gate.wait_entered(2)) == ["1", "2"]
    assert hub.automations.automations["par"].dropped == 1
    assert len(waiter.of(TRIGGERED)) == 2
    gate.open()
    events = await _finished(hub, waiter, "par", 2)
    assert [e.data["outcome"] for e in events] == ["fired", "fired"]
    assert sorted(c.data["n"] for c in record.calls) == ["1", "2"]
    # below max again: a new trigger runs
    hub.bus.async_fire("go", {"n": 4})
    await _finished(hub, waiter, "par", 3)
    assert sorted(c.data["n"] for c in record.calls) == ["1", "2", "4"]


async def test_mode_queued_with_max_keeps_order_and_drops_the_overflow(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: q
  mode: queued
  max: 3
  triggers: [{trigger: event, event_type: go}]
  actions:
    - action: test.gate
      data: {n: "{{ trigger.event.data.n }}"}
    - action: test.record
      data: {n: "{{ trigger.event.data.n }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    gate = Gate(hub)
    waiter = Waiter(hub, FINISHED, TRIGGERED)
    for n in (1, 2, 3, 4, 5):
        hub.bus.async_fire("go", {"n": n})
    # one runs, two wait (running + queued = max 3), two are dropped
    automation = hub.automations.automations["q"]
    assert automation.dropped == 2 and len(automation.queue) == 2
    await gate.wait_entered(1)
    assert len(waiter.of(TRIGGERED)) == 1  # the queued ones have not started
    gate.open()
    events = await _finished(hub, waiter, "q", 3)
    assert [e.data["outcome"] for e in events] == ["fired"] * 3
    assert [e["n"] for e in gate.entered] == ["1", "2", "3"]
    assert [c.data["n"] for c in record.calls] == ["1", "2", "3"]
    # one at a time: each run started after the previous one finished
    order = [(e.event_type, e.data["run_id"]) for e in waiter.events]
    for before, after in itertools.pairwise(events):
        assert order.index((FINISHED, before.data["run_id"])) < order.index(
            (TRIGGERED, after.data["run_id"]))


# -- not and project conditions ---------------------------------------------------------------------

async def test_not_condition(tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: safe_to_close
  mode: queued
  triggers: [{trigger: event, event_type: check}]
  conditions:
    - condition: not
      conditions:
        - condition: state
          entity_id: switch.arcm_1_breaker
          state: "off"
        - condition: numeric_state
          entity_id: sensor.arcm_1_residual_current
          above: 500
  actions:
    - action: test.record
      data: {round: "{{ trigger.event.data.round }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    rounds = [("on", 100), ("off", 100), ("on", 600), ("off", 600), ("on", 499)]
    for number, (breaker, residual) in enumerate(rounds, start=1):
        hub.states.async_set("switch.arcm_1_breaker", breaker)
        hub.states.async_set("sensor.arcm_1_residual_current", residual)
        hub.bus.async_fire("check", {"round": number})
        await _finished(hub, waiter, "safe_to_close", number)
    outcomes = [e.data["outcome"] for e in waiter.of(FINISHED)]
    assert outcomes == ["fired", "condition_false", "condition_false", "condition_false",
                        "fired"]
    assert [c.data["round"] for c in record.calls] == ["1", "5"]
    traces = await hub.automations.store.traces("safe_to_close")
    by_round = {t["trigger"]["event"]["data"]["round"]: t for t in traces}
    # round 3: the first sub-condition was false, the second true -> not is false
    assert by_round[3]["conditions"] == [
        {"path": "conditions/0/conditions/0", "result": False},
        {"path": "conditions/0/conditions/1", "result": True},
        {"path": "conditions/0", "result": False}]


async def test_project_condition_alarm_device_and_explicit_device(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: school_or_hospital
  mode: queued
  triggers: [{trigger: alarm, on: raised}]
  conditions:
    - condition: project
      project: [school-1, hospital-1]
  actions:
    - action: test.record
      data: {who: both, device: "{{ trigger.alarm.device_id }}"}
- id: hospital_only
  mode: queued
  triggers: [{trigger: alarm, on: raised}]
  conditions:
    - condition: project
      project: hospital-1
  actions:
    - action: test.record
      data: {who: hospital, device: "{{ trigger.alarm.device_id }}"}
- id: explicit_device
  mode: queued
  triggers: [{trigger: event, event_type: check}, {trigger: alarm, on: raised}]
  conditions:
    - condition: project
      project: hospital-1
      device_id: arcm-2
  actions:
    - action: test.record
      data: {who: explicit, platform: "{{ trigger.platform }}"}
- id: no_device
  triggers: [{trigger: event, event_type: check}]
  conditions:
    - condition: project
      project: school-1
  actions:
    - action: test.record
      data: {who: no_device}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    fire_condition(hub, "arcm-1", "overload")   # school-1
    fire_condition(hub, "arcm-2", "overload")   # hospital-1
    both = await _finished(hub, waiter, "school_or_hospital", 2)
    hospital = await _finished(hub, waiter, "hospital_only", 2)
    assert [e.data["outcome"] for e in both] == ["fired", "fired"]
    assert sorted(e.data["outcome"] for e in hospital) == ["condition_false", "fired"]
    assert [c.data["device"] for c in record.calls if c.data["who"] == "hospital"] == ["arcm-2"]
    # `device_id:` names the device to check, whatever triggered the run (an event or an
    # alarm of another project's device)
    explicit = await _finished(hub, waiter, "explicit_device", 2)
    hub.bus.async_fire("check")
    explicit = await _finished(hub, waiter, "explicit_device", 3)
    assert [e.data["outcome"] for e in explicit] == ["fired"] * 3
    # an event carries no device: the condition is false, not an error
    (no_device,) = await _finished(hub, waiter, "no_device")
    assert no_device.data["outcome"] == "condition_false"
    assert not [c for c in record.calls if c.data["who"] == "no_device"]


# -- workorder.create from a run ---------------------------------------------------------------------

async def test_run_creates_a_work_order_linked_to_the_alarm(tmp_path: Path, hubs: list[Any],
                                                            record: RecordPlugin) -> None:
    write_config(tmp_path, """\
- id: open_order
  mode: queued
  triggers:
    - trigger: alarm
      on: [raised, acknowledged]
      kind: alarm
  actions:
    - action: workorder.create
      data:
        alarm_id: "{{ trigger.alarm.id }}"
        priority: high
      response_variable: order
    - action: test.record
      data: {order: "{{ order.id }}", created: "{{ order.created }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED, "alarm_raised", "workorder_created")
    fire_condition(hub, "arcm-1", "residual_current_high", value=550, unit="mA",
                   entity_id="sensor.arcm_1_residual_current")
    (raised,) = await waiter.wait_for("alarm_raised")
    alarm = raised.data
    (finished,) = await _finished(hub, waiter, "open_order")
    assert finished.data["outcome"] == "fired"
    (created,) = await waiter.wait_for("workorder_created")

    async with hub.storage.engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(select(workorders))).mappings()]
    (row,) = rows
    assert row["alarm_id"] == alarm["id"]
    assert (row["device_id"], row["project"]) == ("arcm-1", "school-1")
    assert (row["title"], row["priority"]) == (alarm["message"], "high")
    assert (row["source"], row["status"]) == ("automation", "created")
    assert record.calls[0].data == {"order": str(row["id"]), "created": "True"}
    # the audit chain: alarm -> run -> work order
    trace = (await hub.automations.store.traces("open_order"))[0]
    assert trace["steps"][0]["service"] == "workorder.create"
    assert trace["steps"][0]["data"]["alarm_id"] == str(alarm["id"])
    assert row["context_id"] == trace["context"]["id"]
    assert created.context.id == trace["context"]["id"]
    assert trace["context"]["parent_id"] == raised.context.id

    # acknowledging the alarm triggers again: its open order is returned, not a second one
    await hub.alarms.async_acknowledge([alarm["id"]])
    await _finished(hub, waiter, "open_order", 2)
    async with hub.storage.engine.connect() as conn:
        assert len((await conn.execute(select(workorders))).all()) == 1
    assert record.calls[1].data == {"order": str(row["id"]), "created": "False"}


async def test_state_trigger_for_without_to_needs_the_value_to_stay(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    """`trigger: state` with `for:` and no `to` means "changed, and stayed so": a further
    change restarts the hold from that change (it used to keep the first one running and fire
    with a state the entity had already left)."""
    write_config(tmp_path, """\
- id: settled
  triggers:
    - {trigger: state, entity_id: sensor.arcm_1_mode, for: 0.3s}
  actions:
    - action: test.record
      data: {mode: "{{ trigger.to_state.state }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    engine = hub.automations
    waiter = Waiter(hub, FINISHED)
    hub.states.async_set("sensor.arcm_1_mode", "auto")
    (first,) = engine.pending_timers()
    hub.states.async_set("sensor.arcm_1_mode", "auto", {"note": "attributes only"})
    assert engine.pending_timers() == [first]  # the value did not change: the hold goes on
    hub.states.async_set("sensor.arcm_1_mode", "manual")  # a fresh hold, from this change
    assert len(engine.pending_timers()) == 1
    await _finished(hub, waiter, "settled")
    assert [c.data for c in record.calls] == [{"mode": "manual"}]
    (trace,) = await engine.store.traces("settled")
    assert trace["trigger"]["to_state"]["state"] == "manual"
