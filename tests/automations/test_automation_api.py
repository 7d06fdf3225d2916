"""The API: edits keep other automations byte for byte, versions and rollback, audit, 400s
naming the path, permissions (a user cannot edit), dry run over recorded history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from hub.http import tokens

from .conftest import RecordPlugin, Waiter, start, write_config

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


async def _system_hub(tmp_path: Path, hubs: list[Any],
                      automations: str) -> tuple[Any, dict[str, str], Path]:
    """A started hub, a system token's headers and the path of its automations.yaml."""
    write_config(tmp_path, automations)
    hub = await start(tmp_path)
    hubs.append(hub)
    return hub, await _token(hub, None), tmp_path / "automations.yaml"


async def test_edit_keeps_other_automations_byte_for_byte_and_rolls_back(
        tmp_path: Path, hubs: list[Any]) -> None:
    hub, auth, path = await _system_hub(tmp_path, hubs, ORIGINAL)
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


COMMENTED = """\
# Site automations.
- id: keep_me   # untouched
  triggers: [{trigger: event, event_type: never}]
  actions: [{action: test.record}]

- id: leak_trip   # 剩余电流持续超限跳闸
  alias: 'Trip on leakage'   # shown in the UI
  # the detector of the kitchen line
  triggers:
    - trigger: numeric_state   # the leakage sensor
      entity_id: sensor.arcm_1_residual_current
      above: 500     # mA; GB 51348 advises 300-500
      for: 30s       # ride through motor starts
    - {trigger: event, event_type: manual_trip}   # from the panel
  conditions:
    # only while the breaker may be tripped remotely
    - condition: state
      entity_id: switch.arcm_1_breaker
      state: "on"    # quoted: YAML 1.1 reads on as true
  actions:
    - action: test.record   # stands in for arcm.trip
      data: {device_id: arcm-1}   # the box in the kitchen
  mode: single   # one trip at a time
# trailing note
"""


async def test_edit_keeps_comments_inside_the_edited_automation(tmp_path: Path,
                                                                hubs: list[Any]) -> None:
    hub, auth, path = await _system_hub(tmp_path, hubs, COMMENTED)
    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        current = (await (await http.get("/api/automations/leak_trip")).json())["config"]
        # what an editor does: take the automation, change one value, send all of it back
        body = {"alias": "Trip on leakage",
                "triggers": [{"trigger": "numeric_state",
                              "entity_id": "sensor.arcm_1_residual_current",
                              "above": 300, "for": "30s"},
                             {"trigger": "event", "event_type": "manual_trip"}],
                "conditions": [{"condition": "state", "entity_id": "switch.arcm_1_breaker",
                                "state": "on"}],
                "actions": [{"action": "test.record", "data": {"device_id": "arcm-1"}}],
                "mode": "single"}
        assert current["triggers"][0]["above"] == 500
        response = await http.put("/api/automations/leak_trip", json=body)
        assert response.status == 200, await response.text()
    text = path.read_text(encoding="utf-8")
    # only the edited value's line changed: every comment, quote and flow style is kept
    assert text == COMMENTED.replace("above: 500     # mA", "above: 300     # mA")
    assert hub.automations.automations["leak_trip"].conf["triggers"][0]["above"] == 300
    versions = await hub.automations.store.versions("leak_trip")
    assert "# ride through motor starts" in versions[0]["new_text"]
    edited = text

    # a later edit drops `mode` (and its comment); rolling back to version 1 restores that
    # version's text as it was, comments included
    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        response = await http.put("/api/automations/leak_trip",
                                  json={k: v for k, v in body.items() if k != "mode"})
        assert response.status == 200, await response.text()
        assert "# one trip at a time" not in path.read_text(encoding="utf-8")
        response = await http.post("/api/automations/leak_trip/rollback", json={"version": 1})
        assert response.status == 200, await response.text()
    assert path.read_text(encoding="utf-8") == edited

    # the file reloads to the new value (a fresh hub reads what was written)
    await hub.async_stop()
    hubs.remove(hub)
    again = await start(tmp_path)
    hubs.append(again)
    conf = again.automations.automations["leak_trip"].conf
    assert conf["triggers"][0]["above"] == 300
    assert conf["conditions"][0]["state"] == ["on"]


async def test_edit_adding_and_removing_keys_keeps_the_comments_that_still_apply(
        tmp_path: Path, hubs: list[Any]) -> None:
    hub, auth, path = await _system_hub(tmp_path, hubs, COMMENTED)
    body = {"alias": "Trip on leakage",
            "triggers": [{"trigger": "state", "entity_id": "binary_sensor.arcm_1_online",
                          "to": "off"},
                         {"trigger": "numeric_state",
                          "entity_id": "sensor.arcm_1_residual_current",
                          "above": 500, "for": "45s"}],
            "actions": [{"action": "test.record", "data": {"device_id": "arcm-1"}}],
            "mode": "single", "variables": {"shift": "18:30"}}
    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        response = await http.put("/api/automations/leak_trip", json=body)
        assert response.status == 200, await response.text()
    text = path.read_text(encoding="utf-8")
    assert text.startswith(COMMENTED.split("- id: leak_trip")[0])  # keep_me byte for byte
    for kept in ("# 剩余电流持续超限跳闸", "# shown in the UI", "# the detector of the kitchen",
                 "# the leakage sensor", "# mA; GB 51348", "# ride through motor starts",
                 "# stands in for arcm.trip", "# the box in the kitchen",
                 "# one trip at a time", "# trailing note"):
        assert kept in text, kept
    # the removed event trigger and the removed condition took their comments with them
    for gone in ("# from the panel", "# only while the breaker", "# quoted: YAML 1.1"):
        assert gone not in text, gone
    conf = hub.automations.automations["leak_trip"].conf
    assert [t["trigger"] for t in conf["triggers"]] == ["state", "numeric_state"]
    assert conf["triggers"][1]["for"] == 45 and conf["conditions"] == []
    # a string YAML 1.1 would misread is written quoted and reads back as that string
    assert conf["variables"] == {"shift": "18:30"}
    assert conf["triggers"][0]["to"] == "off"


async def test_put_back_of_the_normalised_config_changes_only_the_edited_line(
        tmp_path: Path, hubs: list[Any]) -> None:
    """What an editor does: GET (the API shows the normalised config: `for: 30.0`, one-item
    lists, every default), change one value, PUT it all back. Only that line changes."""
    hub, auth, path = await _system_hub(tmp_path, hubs, COMMENTED)
    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        config = (await (await http.get("/api/automations/leak_trip")).json())["config"]
        assert config["triggers"][0]["for"] == 30 and config["trace"] == {"stored_traces": 20}
        config["triggers"][0]["above"] = 300
        response = await http.put("/api/automations/leak_trip", json=config)
        assert response.status == 200, await response.text()
    assert path.read_text(encoding="utf-8") == COMMENTED.replace("above: 500     # mA",
                                                                 "above: 300     # mA")
    assert hub.automations.automations["leak_trip"].conf["triggers"][0]["above"] == 300


def test_a_secret_stays_a_secret_reference_when_its_value_comes_back(tmp_path: Path) -> None:
    """The API shows `!secret` values resolved; sent back unchanged, the file keeps the tag
    (its meaning is the same), so an edit never writes the secret into automations.yaml."""
    from hub.core.automations.schema import validate_one
    from hub.core.automations.yamlfile import AutomationFile
    from hub.core.yaml_loader import load_yaml

    (tmp_path / "secrets.yaml").write_text("boss_phone: '13800000000'\n", encoding="utf-8")
    path = tmp_path / "automations.yaml"
    text = """\
- id: call_boss
  triggers: [{trigger: event, event_type: go}]
  actions:
    - action: notify.sms
      data:
        target: !secret boss_phone   # never in this file
        message: hi
"""
    path.write_text(text, encoding="utf-8")
    conf, _ = validate_one(load_yaml(path)[0])
    assert conf is not None and conf["actions"][0]["data"]["target"] == "13800000000"
    conf["actions"][0]["data"]["message"] = "hello"
    checked, _ = validate_one(conf)
    AutomationFile(path).put(conf, check=lambda item: validate_one(item)[0] == checked)
    assert path.read_text(encoding="utf-8") == text.replace("message: hi", "message: hello")


SECRET_YAML = """\
- id: call_boss
  triggers: [{trigger: event, event_type: go}]
  actions:
    - action: test.record
      data:
        target: !secret boss_phone   # never in this file
        message: "call {{ trigger.event.data.who }}"
"""
PHONE, TOKEN = "13800000000", "tok-9f8e7d6c"


async def test_the_api_never_shows_or_writes_a_secret_value(tmp_path: Path,
                                                            hubs: list[Any]) -> None:
    """GET, list, traces and versions show `!secret name`; what was shown saves back as the
    same automation; a `!secret` sent in a new place, or a secret's value sent plain, is
    written as the tag; an unknown secret is a 400 naming its path."""
    (tmp_path / "secrets.yaml").write_text(f"boss_phone: '{PHONE}'\nsms_token: {TOKEN}\n",
                                           encoding="utf-8")
    record = RecordPlugin()
    write_config(tmp_path, SECRET_YAML)
    hub = await start(tmp_path, record)
    hubs.append(hub)
    auth = await _token(hub, None)
    path = tmp_path / "automations.yaml"
    waiter = Waiter(hub, "automation_finished")
    hub.bus.async_fire("go", {"who": TOKEN})  # a secret inside rendered text, too
    await waiter.wait_for("automation_finished")
    assert record.calls[0].data["target"] == PHONE  # the automation itself uses the value

    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        async def text_of(url: str) -> str:
            response = await http.get(url)
            assert response.status == 200, await response.text()
            return await response.text()

        for url in ("/api/automations", "/api/automations/call_boss",
                    "/api/automations/call_boss/traces"):
            body = await text_of(url)
            assert PHONE not in body and TOKEN not in body, url
        one = await (await http.get("/api/automations/call_boss")).json()
        config = one["config"]
        assert config["actions"][0]["data"]["target"] == "!secret boss_phone"
        trace = (await (await http.get("/api/automations/call_boss/traces")).json())[0]
        (call,) = [s for s in trace["steps"] if s["kind"] == "call_service"]
        assert call["data"] == {"target": "!secret boss_phone",
                                "message": "call !secret sms_token"}

        # what was shown, with one change, saves back: the tag stays, the value never lands
        config["actions"][0]["data"]["message"] = "hello"
        response = await http.put("/api/automations/call_boss", json=config)
        assert response.status == 200, await response.text()
        assert PHONE not in await response.text()
        assert path.read_text(encoding="utf-8") == SECRET_YAML.replace(
            'message: "call {{ trigger.event.data.who }}"', 'message: "hello"')
        engine_conf = hub.automations.automations["call_boss"].conf
        assert engine_conf["actions"][0]["data"]["target"] == PHONE

        # a secret in a new place: by reference, or its value sent plain (an old client)
        config["actions"][0]["data"]["token"] = "!secret sms_token"
        config["actions"][0]["data"]["copy_to"] = PHONE
        response = await http.put("/api/automations/call_boss", json=config)
        assert response.status == 200, await response.text()
        written = path.read_text(encoding="utf-8")
        assert PHONE not in written and TOKEN not in written
        assert "token: !secret sms_token" in written and "copy_to: !secret boss_phone" in written
        engine_conf = hub.automations.automations["call_boss"].conf
        assert engine_conf["actions"][0]["data"]["token"] == TOKEN

        versions = await text_of("/api/automations/call_boss/versions")
        assert PHONE not in versions and TOKEN not in versions

        config["actions"][0]["data"]["token"] = "!secret no_such_secret"
        response = await http.put("/api/automations/call_boss", json=config)
        assert response.status == 400
        error = await response.json()
        assert error["details"] == [{"path": "actions.0.data.token",
                                     "reason": "!secret no_such_secret: not found in "
                                               "secrets.yaml"}]
    assert "no_such_secret" not in path.read_text(encoding="utf-8")


def test_secret_redaction_rules() -> None:
    """By value: whole values (strings, and numbers of 4+ digits such as an unquoted phone
    number), inside longer strings only where asked (rendered text), never a short number."""
    import pytest

    from hub.core.automations.secrets import SecretError, Secrets

    secrets = Secrets({"phone": 13800000000, "token": "tok-abc", "port": 80, "flag": True})
    data = {"to": 13800000000, "text": "call 13800000000 with tok-abc", "port": 80,
            "n": 1, "on": True}
    assert secrets.redact(data) == {**data, "to": "!secret phone"}
    assert secrets.redact(data, partial=True)["text"] == "call !secret phone with !secret token"
    assert secrets.resolve({"a": ["!secret token", "!secret  phone "]}) == {
        "a": ["tok-abc", 13800000000]}
    with pytest.raises(SecretError, match=r"a\.1: !secret nope: not found"):
        secrets.resolve({"a": ["x", "!secret nope"]})


async def test_yaml_typed_in_the_editor_is_saved_as_typed_with_its_comments(
        tmp_path: Path, hubs: list[Any]) -> None:
    """`PUT /api/automations/{id}/yaml`: the YAML view's text lands in the file as typed (new
    comments included), neighbours stay byte for byte, `!secret` stays a tag, and a text that
    is not one automation, says another id, uses `!include` or would swallow a neighbour is
    refused with nothing written."""
    (tmp_path / "secrets.yaml").write_text(f"boss_phone: '{PHONE}'\n", encoding="utf-8")
    hub, auth, path = await _system_hub(tmp_path, hubs, ORIGINAL)
    head = ORIGINAL.split("# the one we edit")[0]
    typed = ("- id: edit_me\n"
             "  alias: Typed  # written in the browser\n"
             "  # why: GB 51348 asks for 300 mA\n"
             "  triggers: [{trigger: event, event_type: go3}]\n"
             "  actions:\n"
             "    - action: test.record\n"
             "      data: {to: !secret boss_phone}\n")
    async with ClientSession(base_url=hub.http.url, headers=auth) as http:
        response = await http.put("/api/automations/edit_me/yaml", json={"yaml": typed})
        assert response.status == 200, await response.text()
        text = path.read_text(encoding="utf-8")
        assert text.startswith(head) and text.endswith("\n# trailing note\n")
        assert typed in text and PHONE not in text
        conf = hub.automations.automations["edit_me"].conf
        assert conf["alias"] == "Typed" and conf["actions"][0]["data"]["to"] == PHONE
        shown = await (await http.get("/api/automations/edit_me")).json()
        assert "# why: GB 51348 asks for 300 mA" in shown["yaml"]

        # a mapping without the dash is a new automation, indented into the list
        response = await http.put("/api/automations/new_one/yaml", json={
            "yaml": "# added from the YAML view\nid: new_one\n"
                    "triggers: [{trigger: event, event_type: x}]\nactions: []\n"})
        assert response.status == 201, await response.text()
        assert path.read_text(encoding="utf-8").endswith(
            "# added from the YAML view\n- id: new_one\n"
            "  triggers: [{trigger: event, event_type: x}]\n  actions: []\n")
        assert "new_one" in hub.automations.automations

        before = path.read_text(encoding="utf-8")
        for body, reason in (
                ({"yaml": "- id: edit_me\n  triggers: [\n"}, "line"),
                ({"yaml": "- id: other\n  triggers: []\n  actions: []\n"}, "differs"),
                ({"yaml": "id: edit_me\ntriggers: !include /etc/passwd\nactions: []\n"},
                 "include"),
                ({"yaml": "- id: edit_me\n  triggers: []\n  actions: []\n"
                          "- id: keep_me\n  triggers: []\n  actions: []\n"}, "exactly one"),
                ({"yaml": "alias: no id\ntriggers: []\nactions: []\n"}, "id: edit_me"),
        ):
            response = await http.put("/api/automations/edit_me/yaml", json=body)
            assert response.status == 400, (body, await response.text())
            assert reason in (await response.text()), (reason, await response.text())
        assert path.read_text(encoding="utf-8") == before  # nothing written

        # a secret's value typed out in full never lands in the file
        response = await http.put("/api/automations/edit_me/yaml", json={"yaml": typed.replace(
            "!secret boss_phone", f"'{PHONE}'")})
        assert response.status == 200, await response.text()
        assert PHONE not in path.read_text(encoding="utf-8")
        assert "!secret boss_phone" in path.read_text(encoding="utf-8")

        # a version whose text says `!secret name` rolls back (it is resolved, not parsed away)
        response = await http.post("/api/automations/edit_me/rollback", json={"version": 1})
        assert response.status == 200, await response.text()
        assert typed in path.read_text(encoding="utf-8")
        conf = hub.automations.automations["edit_me"].conf
        assert conf["actions"][0]["data"]["to"] == PHONE
