"""Time-based triggers and conditions with an injected clock.

The engine takes its clock as a constructor argument (`AutomationEngine(clock=...)`): every
"what time is it" it asks (scheduling `time`/`time_pattern` triggers, the `time` condition,
`for:` deadlines) goes through it. The hub builds the engine itself, so the tests swap the class
the hub imports for one that passes a `FakeClock`. The clock is frozen: a test sets it to a
few hundredths of a second before a slot, re-attaches the automation (so the slot is computed
from the new "now") and waits on `automation_finished`; the timeout only bounds a failure.
What the engine plans next is read from its scheduled handles (an absolute time on the fake
clock), not measured.

The hub's time zone is Asia/Shanghai (UTC+8): 2024-06-03 is a Monday there.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.core.automations.schema import validate_one

from .conftest import ZONE, FakeClock, RecordPlugin, Waiter, local, start, write_config

FINISHED = "automation_finished"


async def _reattach(hub: Any, automation_id: str) -> None:
    """Re-add the automation so its time triggers are scheduled from the clock's new now."""
    engine = hub.automations
    await engine.async_set(engine.automations[automation_id].conf)


def _next_due(hub: Any, automation_id: str) -> list[float]:
    """When (on the engine's clock) each scheduled time trigger of the automation will fire."""
    loop = asyncio.get_running_loop()
    engine = hub.automations
    return sorted(engine.clock() + handle.when() - loop.time()
                  for handle in engine.automations[automation_id].handles)


def _assert_due(actual: list[float], expected: list[float]) -> None:
    # the engine's plan, not a measurement: the slack only covers the few milliseconds the
    # loop ran since the handle was scheduled
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert abs(got - want) < 1.0, (datetime.fromtimestamp(got, ZONE),
                                       datetime.fromtimestamp(want, ZONE))


async def _finished(hub: Any, waiter: Waiter, automation_id: str, count: int = 1) -> list[Any]:
    events = await waiter.wait_for(FINISHED, count,
                                   lambda e: e.data["automation_id"] == automation_id)
    await hub.automations.async_flush()
    return events


# -- time trigger -----------------------------------------------------------------------------------

async def test_time_trigger_fires_at_its_slot_once_and_plans_the_next(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin, clock: FakeClock) -> None:
    write_config(tmp_path, """\
- id: morning
  mode: queued
  triggers:
    - trigger: time
      id: shift
      at: ["08:00", "18:30:15"]
  actions:
    - action: test.record
      data: {now: "{{ trigger.now }}", platform: "{{ trigger.platform }}",
             id: "{{ trigger.id }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    _assert_due(_next_due(hub, "morning"), [local(3, 8, 0)])
    waiter = Waiter(hub, FINISHED)

    clock.now = local(3, 7, 59, 59.95)
    await _reattach(hub, "morning")
    (event,) = await _finished(hub, waiter, "morning")
    assert event.data["outcome"] == "fired"
    (call,) = record.calls
    assert float(call.data["now"]) == local(3, 8, 0)
    assert (call.data["platform"], call.data["id"]) == ("time", "shift")
    # the clock still reads a hair before 08:00 (as a wall clock behind the loop's monotonic
    # clock does): the 08:00 slot has fired and must not fire again; next is 18:30:15
    _assert_due(_next_due(hub, "morning"), [local(3, 18, 30, 15)])

    clock.now = local(3, 18, 30, 14.95)
    await _reattach(hub, "morning")
    await _finished(hub, waiter, "morning", 2)
    assert float(record.calls[1].data["now"]) == local(3, 18, 30, 15)
    assert len(record.calls) == 2
    _assert_due(_next_due(hub, "morning"), [local(4, 8, 0)])  # tomorrow morning


async def test_time_trigger_accepts_unquoted_yaml_times(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin, clock: FakeClock) -> None:
    """YAML 1.1 reads unquoted 18:30 as 1110 (minutes) and 18:30:15 as 66615 (seconds)."""
    write_config(tmp_path, """\
- id: unquoted
  triggers:
    - trigger: time
      at: [18:30, 18:45:30, "08:15"]
  actions:
    - action: test.record
      data: {now: "{{ trigger.now }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    conf = hub.automations.automations["unquoted"].conf
    assert sorted(conf["triggers"][0]["at"]) == [8 * 3600 + 15 * 60, 18 * 3600 + 30 * 60,
                                                 18 * 3600 + 45 * 60 + 30]
    waiter = Waiter(hub, FINISHED)
    clock.now = local(3, 18, 45, 29.95)
    await _reattach(hub, "unquoted")
    await _finished(hub, waiter, "unquoted")
    assert [float(c.data["now"]) for c in record.calls] == [local(3, 18, 45, 30)]


# -- time_pattern trigger ---------------------------------------------------------------------------

async def test_time_pattern_trigger(tmp_path: Path, hubs: list[Any], record: RecordPlugin,
                                    clock: FakeClock) -> None:
    write_config(tmp_path, """\
- id: quarter
  triggers:
    - trigger: time_pattern
      minutes: "/15"
  actions:
    - action: test.record
      data: {who: quarter, now: "{{ trigger.now }}", platform: "{{ trigger.platform }}"}
- id: nine_oh_five
  triggers:
    - trigger: time_pattern
      hours: 9
      minutes: 5
      seconds: "/20"
  actions:
    - action: test.record
      data: {who: nine, now: "{{ trigger.now }}"}
""")
    hub = await start(tmp_path, record)
    hubs.append(hub)
    # from Monday 03:00: the next quarter hour, and 09:05:00
    _assert_due(_next_due(hub, "quarter"), [local(3, 3, 15)])
    _assert_due(_next_due(hub, "nine_oh_five"), [local(3, 9, 5)])
    waiter = Waiter(hub, FINISHED)

    clock.now = local(3, 9, 4, 59.95)
    await _reattach(hub, "quarter")
    await _reattach(hub, "nine_oh_five")
    _assert_due(_next_due(hub, "quarter"), [local(3, 9, 15)])
    await _finished(hub, waiter, "nine_oh_five")
    assert [(c.data["who"], float(c.data["now"])) for c in record.calls] == [
        ("nine", local(3, 9, 5, 0))]
    _assert_due(_next_due(hub, "nine_oh_five"), [local(3, 9, 5, 20)])

    clock.now = local(3, 9, 5, 40)  # the last slot of the hour just passed: tomorrow
    await _reattach(hub, "nine_oh_five")
    _assert_due(_next_due(hub, "nine_oh_five"), [local(4, 9, 5, 0)])

    clock.now = local(3, 23, 59, 59.95)  # across midnight
    await _reattach(hub, "quarter")
    await _finished(hub, waiter, "quarter")
    assert [(c.data["who"], float(c.data["now"]), c.data["platform"])
            for c in record.calls[1:]] == [("quarter", local(4, 0, 0), "time_pattern")]
    _assert_due(_next_due(hub, "quarter"), [local(4, 0, 15)])


# -- time condition (after / before / weekday) and not ----------------------------------------------

TIME_CONDITIONS = """\
- id: workday_hours
  triggers: [{trigger: event, event_type: check}]
  conditions:
    - condition: time
      after: "08:00"
      before: "18:00"
      weekday: [mon, tue, wed, thu, fri]
  actions: [{action: test.record, data: {case: workday_hours}}]
- id: weekend
  triggers: [{trigger: event, event_type: check}]
  conditions: [{condition: time, weekday: [sat, sun]}]
  actions: [{action: test.record, data: {case: weekend}}]
- id: monday
  triggers: [{trigger: event, event_type: check}]
  conditions: [{condition: time, weekday: mon}]
  actions: [{action: test.record, data: {case: monday}}]
- id: night
  triggers: [{trigger: event, event_type: check}]
  conditions: [{condition: time, after: "22:00", before: "06:00"}]
  actions: [{action: test.record, data: {case: night}}]
- id: not_office
  triggers: [{trigger: event, event_type: check}]
  conditions:
    - condition: not
      conditions: [{condition: time, after: "08:00", before: "18:00"}]
  actions: [{action: test.record, data: {case: not_office}}]
- id: noon_unquoted
  triggers: [{trigger: event, event_type: check}]
  conditions: [{condition: time, after: 11:59:30, before: 12:00:30}]
  actions: [{action: test.record, data: {case: noon_unquoted}}]
"""
CASES = 6


@pytest.mark.parametrize(("when", "expected"), [
    # Monday 12:00: office hours, Monday, not night, the unquoted noon window
    (local(3, 12, 0), {"workday_hours", "monday", "noon_unquoted"}),
    # Monday 07:00 (still Sunday 23:00 in UTC: the weekday is the hub's local one)
    (local(3, 7, 0), {"monday", "not_office"}),
    # after is inclusive, before exclusive
    (local(3, 8, 0), {"workday_hours", "monday"}),
    (local(3, 18, 0), {"monday", "not_office"}),
    # the night window spans midnight: in on both sides of it, out at 06:00
    (local(3, 23, 30), {"monday", "night", "not_office"}),
    (local(4, 5, 59, 59), {"night", "not_office"}),
    (local(4, 6, 0), {"not_office"}),
    # Saturday midday: within 08:00-18:00 (that condition has no weekday), so not_office is not
    (local(8, 12, 0), {"weekend", "noon_unquoted"}),
])
async def test_time_condition(tmp_path: Path, hubs: list[Any], record: RecordPlugin,
                              clock: FakeClock, when: float, expected: set[str]) -> None:
    write_config(tmp_path, TIME_CONDITIONS)
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    clock.now = when
    hub.bus.async_fire("check")
    events = await waiter.wait_for(FINISHED, CASES)
    assert {c.data["case"] for c in record.calls} == expected
    outcomes = {e.data["automation_id"]: e.data["outcome"] for e in events}
    assert outcomes == {case: "fired" if case in expected else "condition_false"
                        for case in outcomes}
    assert len(outcomes) == CASES


def test_time_of_day_rejects_yaml_numbers_that_are_no_time() -> None:
    for at in (1500, 86400 * 2):  # unquoted 25:00, and a plain number of no time
        conf, issues = validate_one({"id": "x", "triggers": [{"trigger": "time", "at": at}],
                                     "actions": [{"action": "test.record"}]})
        assert conf is None and "time of day" in issues[0].reason, at


# -- now() in templates ------------------------------------------------------------------------------
NOW_YAML = """\
- id: wall_clock
  triggers: [{trigger: event, event_type: check}]
  conditions:
    - "{{ now().hour == 23 and now().weekday() == 0 }}"   # Monday 23:xx on the site's clock
  actions:
    - action: test.record
      data:
        hour: "{{ now().hour }}"
        offset: "{{ now().utcoffset().total_seconds() }}"
        iso: "{{ now().isoformat() }}"
        unix: "{{ now().timestamp() }}"
"""


async def test_now_is_the_hub_clock_in_the_hub_time_zone(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin, clock: FakeClock) -> None:
    """Monday 23:30 in Shanghai is 15:30 UTC: a template asking for the hour means the hour on
    the site's wall, so `now()` must be aware and in the configured zone (it used to be UTC,
    and this condition was false)."""
    write_config(tmp_path, NOW_YAML)
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, FINISHED)
    clock.now = local(3, 23, 30)
    hub.bus.async_fire("check")
    (event,) = await _finished(hub, waiter, "wall_clock")
    assert event.data["outcome"] == "fired"
    (call,) = record.calls
    assert call.data == {"hour": "23", "offset": "28800.0",
                         "iso": "2024-06-03T23:30:00+08:00", "unix": str(clock.now)}
