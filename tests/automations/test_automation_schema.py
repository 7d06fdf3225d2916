"""Schema errors name the automation, the path inside it, the reason and file:line; traces keep
the latest of each outcome; a runaway template is stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hub.core.automations.templates import TemplateTimeout, async_render
from hub.core.config import ConfigError

from .conftest import Waiter, start, write_config


async def test_schema_error_names_automation_path_and_line(tmp_path: Path) -> None:
    write_config(tmp_path, """\
# comment
- id: good
  triggers: [{trigger: event, event_type: go}]
  actions: [{action: test.record}]
- id: bad_one
  triggers:
    - trigger: numeric_state
      entity_id: sensor.x
      above: lots
  actions: [{action: test.record}]
- id: bad_two
  triggers: [{trigger: event, event_type: go}]
  actions:
    - delay: forever
""")
    with pytest.raises(ConfigError) as err:
        await start(tmp_path)
    text = err.value.report()
    assert "automations.yaml:9: automations[1].triggers[0].above: automation 'bad_one': " \
           "expected a number" in text
    assert "automations.yaml:14: automations[2].actions[0].delay: automation 'bad_two'" in text


async def test_traces_keep_latest_of_each_outcome(tmp_path: Path, hubs: list[Any]) -> None:
    write_config(tmp_path, """\
- id: many
  mode: queued
  max: 100
  trace: {stored_traces: 3}
  triggers: [{trigger: event, event_type: go}]
  conditions: "{{ trigger.event.data.n != 0 }}"
  actions:
    - if: "{{ trigger.event.data.n == 1 }}"
      then: [{action: test.fail}]
""")
    hub = await start(tmp_path)
    hubs.append(hub)
    waiter = Waiter(hub, "automation_finished")
    hub.bus.async_fire("go", {"n": 0})  # condition false
    hub.bus.async_fire("go", {"n": 1})  # error
    for _ in range(10):
        hub.bus.async_fire("go", {"n": 5})  # fired
    await waiter.wait_for("automation_finished", 12)
    await hub.automations.async_flush()
    traces = await hub.automations.store.traces("many")
    outcomes = [t["outcome"] for t in traces]
    assert outcomes == ["fired", "fired", "fired", "error", "condition_false"]


async def test_template_time_limit_stops_a_runaway_template() -> None:
    started = time.monotonic()
    with pytest.raises(TemplateTimeout, match="longer than 0.2 s"):
        await async_render("{% for i in range(100000) %}{% for j in range(100000) %}"
                           "{% endfor %}{% endfor %}", lambda _e: None, {}, time_limit=0.2)
    assert time.monotonic() - started < 5  # a failure bound: stopped, not run to the end
    # the worker is free again
    assert (await async_render("{{ 1 + 1 }}", lambda _e: None, {})).text == "2"
