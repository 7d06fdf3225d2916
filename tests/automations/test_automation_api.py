"""The API: edits keep other automations byte for byte, versions and rollback, audit, 400s
naming the path, permissions (a user cannot edit), dry run over recorded history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from hub.http import tokens

from .conftest import RecordPlugin, start, write_config

ORIGINAL = """\
# Site automations. Edited by hand AND by the web UI.
- id: keep_me   # the night-shift one; do not touch
  alias: 'Keep me'
  triggers:
    - {trigger: event, event_type: never}   # flow style on purpose
  actions:
    - action: test.record
      data: {x: 1}

# the one we edit
- id: edit_me
  triggers: [{trigger: event, event_type: go}]
  actions: [{action: test.record}]

# trailing note
"""


async def _token(hub: Any, role: str | None) -> dict[str, str]:
    if role is None:
        token = await tokens.create_token(hub.storage, "system")
    else:
        user = await hub.auth.users.create(f"u-{role}", role, None, projects=["school-1"])
        token = await tokens.create_token(hub.storage, f"t-{role}", user_id=user.id)
    return {"Authorization": f"Bearer {token}"}


async def test_edit_keeps_other_automations_byte_for_byte_and_rolls_back(
        tmp_path: Path, hubs: list[Any]) -> None:
    write_config(tmp_path, ORIGINAL)
    hub = await start(tmp_path)
    hubs.append(hub)
    auth = await _token(hub, None)
    path = tmp_path / "automations.yaml"
    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        new = {"alias": "Edited", "triggers": [{"trigger": "event", "event_type": "go2"}],
               "actions": [{"action": "test.record", "data": {"y": 2}}]}
        response = await http.put("/api/automations/edit_me", json=new)
        assert response.status == 200, await response.text()
        assert (await response.json())["version"] == 1
        text = path.read_text(encoding="utf-8")
        head = ORIGINAL.split("- id: edit_me")[0]
        assert text.startswith(head)  # keep_me, its comments and layout: byte for byte
        assert text.endswith("\n# trailing note\n")
        assert "alias: Edited" in text and "go2" in text
        assert hub.automations.automations["edit_me"].conf["alias"] == "Edited"

        bad = {"triggers": [{"trigger": "numeric_state", "entity_id": "sensor.x"}],
               "actions": []}
        response = await http.put("/api/automations/edit_me", json=bad)
        assert response.status == 400
        body = await response.json()
        assert "automation 'edit_me'" in str(body)
        assert path.read_text(encoding="utf-8") == text  # nothing written

        response = await http.post("/api/automations/edit_me/rollback", json={"version": 1})
        assert response.status == 200  # version 1 is the edit itself: same text again
        versions = await (await http.get("/api/automations/edit_me/versions")).json()
        assert [v["version"] for v in versions] == [2, 1]
        assert versions[1]["by"] == "system" and "event_type: go" in versions[1]["old_text"]

        created = {"id": "new_one", "triggers": [{"trigger": "event", "event_type": "x"}],
                   "actions": [{"delay": "1s"}]}
        assert (await http.post("/api/automations", json=created)).status == 201
        assert (await http.delete("/api/automations/new_one")).status == 200
        assert path.read_text(encoding="utf-8").startswith(head)
        listed = await (await http.get("/api/automations")).json()
        assert sorted(a["id"] for a in listed) == ["edit_me", "keep_me"]
    from hub.auth.audit import AuditQuery

    entries = await hub.auth.audit.query(AuditQuery(action_prefixes=["automation"]))
    assert {e["action"] for e in entries} >= {"automation.update", "automation.rollback",
                                               "automation.create", "automation.delete"}


async def test_user_role_cannot_edit(tmp_path: Path, hubs: list[Any]) -> None:
    write_config(tmp_path, ORIGINAL)
    hub = await start(tmp_path)
    hubs.append(hub)
    async with ClientSession(base_url=hub.http.url, headers=await _token(hub, "user")) as http:
        assert (await http.get("/api/automations")).status == 403
        assert (await http.put("/api/automations/edit_me", json={})).status == 403
    admin = await _token(hub, "project_admin")
    async with ClientSession(base_url=hub.http.url, headers=admin) as http:
        # project_admin of school-1 sees no hub-wide automation and may not edit one
        assert await (await http.get("/api/automations")).json() == []
        assert (await http.put("/api/automations/edit_me", json={
            "triggers": [{"trigger": "event", "event_type": "a"}],
            "actions": [{"action": "test.record"}]})).status == 403
        response = await http.post("/api/automations", json={
            "id": "school_one", "project": "school-1",
            "triggers": [{"trigger": "event", "event_type": "a"}],
            "actions": [{"action": "test.record"}]})
        assert response.status == 201, await response.text()


async def test_dry_run_over_recorded_history_calls_nothing(tmp_path: Path,
                                                           hubs: list[Any]) -> None:
    write_config(tmp_path, """\
- id: leak
  triggers:
    - trigger: numeric_state
      entity_id: sensor.arcm_1_residual_current
      above: 500
      for: 30s
  actions:
    - action: test.record
      data: {value: "{{ trigger.to_state.state }}"}
""")
    record = RecordPlugin()
    hub = await start(tmp_path, record)
    hubs.append(hub)
    t0 = 1_700_000_000.0
    for offset, value in [(0, 100), (10, 600), (20, 700), (35, 100), (100, 800), (200, 50)]:
        hub.states.async_set("sensor.arcm_1_residual_current", value, timestamp=t0 + offset)
    await hub.recorder.async_flush()
    auth = await _token(hub, None)
    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        response = await http.post("/api/automations/leak/dry_run",
                                   json={"start": t0 - 1, "end": t0 + 300})
        assert response.status == 200, await response.text()
        report = await response.json()
    # 10 s -> 35 s held only 25 s: no; 100 s -> 200 s: fires at 130 s
    assert report["fired"] == [t0 + 130]
    assert report["runs"][0]["actions"] == [{"call": "test.record", "data": {"value": "800"}}]
    assert record.calls == []
