"""`for:` timers and delays survive a restart (persisted deadlines, resumed on start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import RecordPlugin, Waiter, start, write_config

FOR_YAML = """\
- id: hold
  triggers:
    - trigger: numeric_state
      entity_id: sensor.arcm_1_residual_current
      above: 500
      for: 1.5s
  actions:
    - action: test.record
      data: {fired: "{{ trigger.entity_id }}"}
"""


async def _stop_mid_for(tmp_path: Path) -> float:
    write_config(tmp_path, FOR_YAML)
    hub = await start(tmp_path)
    try:
        hub.states.async_set("sensor.arcm_1_residual_current", 600)
        await hub.automations.async_flush()  # the deadline is in the database
        (row,) = await hub.automations.timers.load()
        return float(row["deadline"])
    finally:
        await hub.async_stop()


async def test_for_survives_restart_and_fires_at_the_original_deadline(
        tmp_path: Path, hubs: list[Any]) -> None:
    deadline = await _stop_mid_for(tmp_path)
    record = RecordPlugin()
    hub = await start(tmp_path, record)
    hubs.append(hub)
    waiter = Waiter(hub, "automation_finished")
    (pending,) = hub.automations.pending_timers()
    assert pending["deadline"] == deadline and pending["confirmed"] is False
    hub.states.async_set("sensor.arcm_1_residual_current", 620)  # the detector reports again
    (event,) = await waiter.wait_for("automation_finished")
    assert event.data["outcome"] == "fired"
    await hub.automations.async_flush()
    trace = (await hub.automations.store.traces("hold"))[0]
    assert trace["trigger"]["resumed"] is True
    assert trace["trigger"]["fired_at"] >= deadline  # the remaining time, not a fresh 1.5 s
    assert trace["trigger"]["fired_at"] < deadline + 1.5
    assert [c.data for c in record.calls] == [{"fired": "sensor.arcm_1_residual_current"}]
    assert await hub.automations.timers.load() == []


async def test_for_broken_while_down_is_cancelled_at_resume(tmp_path: Path,
                                                            hubs: list[Any]) -> None:
    await _stop_mid_for(tmp_path)
    record = RecordPlugin()
    hub = await start(tmp_path, record)
    hubs.append(hub)
    hub.states.async_set("sensor.arcm_1_residual_current", 20)  # back to normal
    await hub.automations.async_flush()
    assert hub.automations.pending_timers() == []
    assert await hub.automations.timers.load() == []
    assert record.calls == []


async def test_delay_survives_restart(tmp_path: Path, hubs: list[Any]) -> None:
    write_config(tmp_path, """\
- id: remind
  triggers: [{trigger: event, event_type: go}]
  actions:
    - action: test.record
      data: {step: before}
    - if: "{{ true }}"
      then:
        - delay: 1s
        - action: test.record
          data: {step: "after {{ trigger.event.data.n }}"}
    - action: test.record
      data: {step: last}
""")
    first = RecordPlugin()
    hub = await start(tmp_path, first)
    waiter = Waiter(hub, "automation_delay")
    hub.bus.async_fire("go", {"n": 7})
    (delay,) = await waiter.wait_for("automation_delay")
    assert delay.data["path"] == "actions/1/then/0"
    await hub.async_stop()
    assert [c.data for c in first.calls] == [{"step": "before"}]

    second = RecordPlugin()
    hub = await start(tmp_path, second)
    hubs.append(hub)
    waiter = Waiter(hub, "automation_finished")
    (event,) = await waiter.wait_for("automation_finished")
    assert event.data["outcome"] == "fired"
    assert [c.data for c in second.calls] == [{"step": "after 7"}, {"step": "last"}]
    await hub.automations.async_flush()
    traces = await hub.automations.store.traces("remind")
    assert traces[0]["resumed"] is True
    assert {t["outcome"] for t in traces} == {"fired", "cancelled"}
