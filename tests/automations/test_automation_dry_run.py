"""Dry run over recorded history: event, alarm and template triggers, and the replayed clock.

The history is real: states and events go through the bus into the recorder (with past
timestamps) and alarm records into the alarm store; the dry run reads them back through the
API. The automations are disabled so nothing fires live while the history is written (the
dry run of a disabled automation is still what it would have done); `record.calls` stays
empty either way, because a dry run calls nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from hub.http import tokens

from .conftest import RecordPlugin, start, write_config

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, 2023-11-15 06:13:20 in Asia/Shanghai


async def _dry_run(hub: Any, automation_id: str, start: float, end: float) -> dict[str, Any]:
    await hub.recorder.async_flush()
    token = await tokens.create_token(hub.storage, "system")
    async with ClientSession(base_url=hub.http.url,
                             headers={"Authorization": f"Bearer {token}"}) as http:
        response = await http.post(f"/api/automations/{automation_id}/dry_run",
                                   json={"start": start, "end": end})
        assert response.status == 200, await response.text()
        return await response.json()


async def _hub(tmp_path: Path, hubs: list[Any], record: RecordPlugin, yaml: str) -> Any:
    write_config(tmp_path, yaml)
    hub = await start(tmp_path, record)
    hubs.append(hub)
    return hub


EVENTS = """\
- id: panel
  enabled: false
  variables:
    started: "{{ now().timestamp() }}"
  triggers:
    - trigger: event
      event_type: panel_button
      event_data: {button: trip}
  conditions:
    - "{{ now().timestamp() < %s }}"
  actions:
    - action: test.record
      data: {at: "{{ now().timestamp() }}",
             who: "{{ trigger.event.data.user }}", started: "{{ started }}"}
    - delay: 10s
    - if:
        - condition: state
          entity_id: switch.arcm_1_breaker
          state: "on"
      then:
        - action: test.record
          data: {at: "{{ now().timestamp() }}", breaker: "on"}
      else:
        - action: test.record
          data: {breaker: "{{ states('switch.arcm_1_breaker') }}"}
    - wait_for_trigger: [{trigger: event, event_type: never}]
    - action: test.record
""" % (T0 + 250)


async def test_dry_run_replays_event_triggers_on_the_replayed_clock(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    hub = await _hub(tmp_path, hubs, record, EVENTS)
    hub.states.async_set("switch.arcm_1_breaker", "on", timestamp=T0 - 500)  # before the window
    hub.states.async_set("switch.arcm_1_breaker", "off", timestamp=T0 + 150)
    hub.bus.async_fire("panel_button", {"button": "trip", "user": "li"}, time_fired=T0 + 100)
    hub.bus.async_fire("panel_button", {"button": "mute", "user": "li"}, time_fired=T0 + 120)
    hub.bus.async_fire("panel_button", {"button": "trip", "user": "wang"},
                       time_fired=T0 + 200)
    hub.bus.async_fire("panel_button", {"button": "trip", "user": "zhao"},
                       time_fired=T0 + 300)  # the condition (now() < T0+250) is false then
    hub.bus.async_fire("panel_button", {"button": "trip", "user": "late"},
                       time_fired=T0 + 2000)  # after the window

    report = await _dry_run(hub, "panel", T0, T0 + 1000)
    assert [run["at"] for run in report["runs"]] == [T0 + 100, T0 + 200, T0 + 300]
    assert report["fired"] == [T0 + 100, T0 + 200]
    first, second, third = report["runs"]
    assert first["trigger"]["event"] == {"event_type": "panel_button",
                                         "data": {"button": "trip", "user": "li"}}
    # now() in variables, conditions and action data is the replayed moment; a delay moves
    # it on; the breaker's recorded state (from before the window, then off at +150) decides
    assert first["actions"][:3] == [
        {"call": "test.record", "data": {"at": str(T0 + 100), "who": "li",
                                         "started": str(T0 + 100)}},
        {"delay": 10.0},
        {"call": "test.record", "data": {"at": str(T0 + 110), "breaker": "on"}}]
    assert second["actions"][2] == {"call": "test.record", "data": {"breaker": "off"}}
    # a wait is not replayed: the run stops there and says so
    assert first["actions"][3] == {"wait_for_trigger": "not replayed in a dry run",
                                   "path": "actions/3"}
    assert first["outcome"] == "stopped" and "not replayed" in first["error"]
    assert third["would_fire"] is False and third["conditions"] == [
        {"path": "conditions/0", "result": False}]
    assert "switch.arcm_1_breaker" in report["replayed_entities"]
    assert record.calls == []


ALARMS = """\
- id: alarm_watch
  enabled: false
  triggers:
    - trigger: alarm
      on: [raised, acknowledged, cleared]
      type: residual_current_high
      project: school-1
  actions:
    - action: test.record
      data: {what: "{{ trigger.event }} {{ trigger.alarm.status }} {{ trigger.alarm.acknowledged }}",
             at: "{{ now().timestamp() }}"}
- id: events_too
  enabled: false
  triggers: [{trigger: alarm, on: [raised, cleared, updated], kind: event}]
  actions: [{action: test.record}]
"""


def _record(type_: str, kind: str, started: float, project: str = "school-1") -> dict[str, Any]:
    return {"device_id": "arcm-1", "type": type_, "kind": kind, "severity": "high",
            "status": "active" if kind != "event" else "cleared", "project": project,
            "message": type_, "started_at": started, "last_seen_at": started,
            "cleared_at": started if kind == "event" else None, "sources": ["test"],
            "count": 1, "latching": False}


async def test_dry_run_replays_alarm_triggers_from_alarm_records(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    hub = await _hub(tmp_path, hubs, record, ALARMS)
    store = hub.alarms.store
    leak = await store.insert(_record("residual_current_high", "alarm", T0 + 10))
    await store.acknowledge([leak], "li", T0 + 40, None)
    await store.update(leak, {"status": "cleared", "cleared_at": T0 + 70})
    await store.insert(_record("temperature_high_1", "alarm", T0 + 20))  # other type
    await store.insert({**_record("residual_current_high", "alarm", T0 + 30,
                                  project="hospital-1"), "device_id": "arcm-2"})  # elsewhere
    # raised before the window, cleared inside it: only its clearing is replayed
    await store.insert({**_record("residual_current_high", "alarm", T0 - 100),
                        "status": "cleared", "cleared_at": T0 + 50})
    await store.insert(_record("tripped", "event", T0 + 60))

    report = await _dry_run(hub, "alarm_watch", T0, T0 + 1000)
    runs = [(run["at"], run["actions"][0]["data"]["what"]) for run in report["runs"]]
    # the record as it stood at each moment: not acknowledged when raised, and so on
    assert runs == [(T0 + 10, "raised active False"), (T0 + 40, "acknowledged active True"),
                    (T0 + 50, "cleared cleared False"), (T0 + 70, "cleared cleared True")]
    assert report["runs"][0]["actions"][0]["data"]["at"] == str(T0 + 10)
    assert report["runs"][0]["trigger"]["alarm"]["acked_at"] is None
    assert report["runs"][1]["trigger"]["alarm"]["acked_by"] == "li"

    report = await _dry_run(hub, "events_too", T0, T0 + 1000)
    # a momentary event is raised only (it is stored cleared; live fires no alarm_cleared)
    assert report["fired"] == [T0 + 60]
    assert any("updated is not replayed" in note for note in report["notes"])
    assert record.calls == []


TEMPLATE = """\
- id: hot_and_closed
  enabled: false
  triggers:
    - trigger: template
      value_template: >-
        {{ states('sensor.arcm_1_temperature_1') | float(0) > 70
           and is_state('switch.arcm_1_breaker', 'on') }}
      for: 20s
  actions:
    - action: test.record
      data: {t: "{{ states('sensor.arcm_1_temperature_1') }}", at: "{{ now().timestamp() }}"}
"""


async def test_dry_run_replays_template_triggers_with_for(
        tmp_path: Path, hubs: list[Any], record: RecordPlugin) -> None:
    hub = await _hub(tmp_path, hubs, record, TEMPLATE)
    temperature, breaker = "sensor.arcm_1_temperature_1", "switch.arcm_1_breaker"
    hub.states.async_set(breaker, "on", timestamp=T0 - 60)
    hub.states.async_set(temperature, 75, timestamp=T0 - 30)  # true already at the start
    for offset, value in [(0, 60), (10, 75), (20, 65), (40, 80), (50, 85), (200, 60),
                          (300, 90)]:
        hub.states.async_set(temperature, value, timestamp=T0 + offset)
    hub.states.async_set(breaker, "off", timestamp=T0 + 250)
    hub.states.async_set(breaker, "on", timestamp=T0 + 400)  # 90 and on: true again

    report = await _dry_run(hub, "hot_and_closed", T0, T0 + 1000)
    # true at the start (no fire), false at 0, true at 10 but broken at 20, true at 40 and
    # held 20 s -> 60; false at 200; 300: hot but the breaker is off; 400: true -> 420
    assert report["fired"] == [T0 + 60, T0 + 420]
    assert [run["actions"][0]["data"] for run in report["runs"]] == [
        {"t": "85", "at": str(T0 + 60)}, {"t": "90", "at": str(T0 + 420)}]
    assert report["replayed_entities"] == [temperature, breaker]
    assert record.calls == []
