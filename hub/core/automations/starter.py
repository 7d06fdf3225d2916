"""The demo's starter automations (issue #7 item 7), written to DIR/automations.yaml once.

Service calls whose service may be missing on a given hub (notify.* without a notifier, arcm.*
without an ARCM device) say `if_missing: skip`: the trace notes the skip instead of failing.
An SMS for each alarm needs no automation: notification subscriptions send it (with quiet
hours and rate limits); the reminder below goes to the same subscribers (`alarm_id`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..yaml_loader import load_yaml

STARTER = """\
# Starter automations of the demo. Edit here or through the API; comments are kept.

# Trip when residual current stays above 500 mA for 30 s and the protection mode allows it.
- id: trip_on_leak
  alias: Trip arcm-1 on sustained leakage
  triggers:
    - trigger: numeric_state
      entity_id: sensor.arcm_1_residual_current
      above: 500
      for: 30s
  actions:
    - action: arcm.read_parameters
      if_missing: skip
      data: {device_id: arcm-1}
      response_variable: params
    - if: "{{ params is defined and params.parameters.protection_mode.value in (2, 'alarm_trip') }}"
      then:
        - action: arcm.trip
          data: {device_id: arcm-1}

# Reminder when an alarm stays unacknowledged for 10 minutes.
- id: unacked_reminder
  alias: Remind about unacknowledged alarms
  mode: parallel
  max: 100
  triggers:
    - trigger: alarm
      on: raised
      kind: alarm
  actions:
    - wait_for_trigger:
        - trigger: alarm
          on: [acknowledged, cleared]
          alarm_id: "{{ trigger.alarm.id }}"   # this alarm, not any other one
      timeout: 10m
    - if: "{{ wait.trigger is none }}"
      then:
        - action: notify.send
          if_missing: skip
          data:
            alarm_id: "{{ trigger.alarm.id }}"
            message: "未确认报警 10 分钟: {{ trigger.alarm.message }}"
"""


def ensure_starter(config_dir: Path) -> Any:
    """Write the starter file if there is none; return its parsed content (for the config)."""
    path = config_dir / "automations.yaml"
    if not path.exists():
        path.write_text(STARTER, encoding="utf-8")
    from .yamlfile import _plain

    load_yaml(path)  # a syntax error names its line here
    return _plain(load_yaml(path))  # plain lists and dicts: the demo dumps its config
