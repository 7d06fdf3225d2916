"""Automations over HTTP (CONTRACTS §5): list, read, create, update, delete, traces, versions,
rollback, dry run. project_admin and above.

Every change is written to automations.yaml (only the edited automation's lines change, see
hub/core/automations/yamlfile.py), versioned in the database with who and when and the old and
new text, applied to the running engine, and audited (`automation.create|update|delete|
rollback`). A validation error is a 400 whose details name the path inside the automation.

Scope: an automation with a `project` is visible to whoever can see that project; one without
a project acts hub-wide and needs an unrestricted principal (super_admin, system tokens).

Secrets (hub/core/automations/secrets.py): nothing answered here carries a value of
secrets.yaml; it reads `!secret name`, and a body may say `!secret name` wherever a value goes
(resolved before validation), so what an editor was shown saves back unchanged.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from hub.core.automations.schema import validate_one
from hub.core.automations.secrets import SecretError, Secrets
from hub.core.automations.yamlfile import (
    AutomationFile,
    AutomationFileError,
    parse_item,
    typed_item,
)

from .auth import deny, principal
from .query import MAX_ROW_ID
from .routes import BODY, HUB, ApiError, RouteTable, json_response

routes = RouteTable()
ROLE = "project_admin"


def _engine(request: web.Request) -> Any:
    engine = getattr(request.app[HUB], "automations", None)
    if engine is None:
        raise ApiError(503, "The automation engine is not running")
    return engine


def _file(request: web.Request) -> AutomationFile:
    return AutomationFile(request.app[HUB].config_dir / "automations.yaml")


def _visible(request: web.Request, conf: dict[str, Any]) -> bool:
    who = principal(request)
    project = conf.get("project")
    return who.scope.unrestricted if not project else who.scope.can_see(project)


async def _require(request: web.Request, conf: dict[str, Any]) -> None:
    if not _visible(request, conf):
        raise await deny(request, f"Automation {conf['id']} is outside the scope of "
                                  f"{principal(request).name}", target=conf["id"],
                         project=conf.get("project"))


def _existing(request: web.Request) -> dict[str, Any]:
    automation_id = request.match_info["automation_id"]
    automation = _engine(request).automations.get(automation_id)
    if automation is None:
        raise ApiError(404, f"Automation {automation_id} not found")
    return automation.conf


def _secrets(request: web.Request) -> Secrets:
    try:
        return Secrets.of_dir(request.app[HUB].config_dir)
    except Exception as err:  # noqa: BLE001 - an unreadable secrets.yaml shows nothing of it
        raise ApiError(500, f"secrets.yaml cannot be read: {err}") from None


def _shown(request: web.Request, conf: dict[str, Any]) -> dict[str, Any]:
    automation = _engine(request).automations.get(conf["id"])
    shown = {"id": conf["id"], "alias": conf.get("alias"), "enabled": conf.get("enabled", True),
             "mode": conf.get("mode"), "project": conf.get("project"),
             "last_triggered": getattr(automation, "last_triggered", None), "config": conf}
    return dict(_secrets(request).redact(shown))


def _resolved(request: web.Request, body: Any) -> Any:
    """The body with `!secret name` strings replaced by their values (a 400 naming the path
    when secrets.yaml has no such secret)."""
    try:
        return _secrets(request).resolve(body)
    except SecretError as err:
        path, _, reason = str(err).partition(": ")
        raise ApiError(400, reason, details=[{"path": path, "reason": reason}]) from None


def _validate(body: Any, automation_id: str | None = None) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "expected an automation object")
    if automation_id is not None:
        if body.get("id", automation_id) != automation_id:
            raise ApiError(400, "the id in the body differs from the id in the path")
        body = {**body, "id": automation_id}
    checked, issues = validate_one(body)
    if issues:
        raise ApiError(400, issues[0].reason, details=[
            {"path": issue.key, "reason": issue.reason} for issue in issues])
    assert checked is not None
    return checked


async def _save(request: web.Request, raw: dict[str, Any], checked: dict[str, Any],
                action: str, text: str | None = None) -> dict[str, Any]:
    """Write the file (`text` verbatim when given: a rollback), version, apply, audit."""
    engine = _engine(request)
    who = principal(request)
    automation_file = _file(request)
    if text is not None:
        try:
            old, new = automation_file.replace_text(
                checked["id"], text, check=lambda item: validate_one(item)[0] == checked)
        except AutomationFileError as err:
            raise ApiError(400, str(err)) from None
    else:
        # the file must read back as exactly the automation the engine will run
        old, new = automation_file.put(raw, check=lambda item: validate_one(item)[0] == checked)
    version = await engine.store.add_version(checked["id"], action, who.name, old, new)
    await engine.async_set(checked)
    await _audit(request, f"automation.{action}", checked, {"version": version})
    return {**_shown(request, checked), "version": version}


async def _audit(request: web.Request, action: str, conf: dict[str, Any],
                 detail: dict[str, Any]) -> None:
    manager = getattr(request.app[HUB], "auth", None)
    if manager is None:
        return
    who = principal(request)
    await manager.audit.record(action, "ok", actor=who.name, actor_role=who.role,
                               ip=request.remote, target=f"automation {conf['id']}",
                               project=conf.get("project"), detail=detail)


@routes.get("/api/automations", "Automations (in my scope)", scope=ROLE, tags=("automations",))
async def list_automations(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    return json_response([_shown(request, a.conf) for a in engine.automations.values()
                          if _visible(request, a.conf)])


@routes.post("/api/automations", "Create an automation (written to automations.yaml)",
             scope=ROLE, body_schema=vol.Schema(dict), responses={201: "Created"},
             tags=("automations",))
async def create_automation(request: web.Request) -> web.StreamResponse:
    raw = _resolved(request, request[BODY])
    checked = _validate(raw)
    if checked["id"] in _engine(request).automations:
        raise ApiError(409, f"Automation {checked['id']} exists (use PUT to change it)")
    await _require(request, checked)
    return json_response(await _save(request, raw, checked, "create"), status=201)


@routes.get("/api/automations/{automation_id}", "One automation", scope=ROLE,
            tags=("automations",))
async def get_automation(request: web.Request) -> web.StreamResponse:
    conf = _existing(request)
    await _require(request, conf)
    # Its own lines of automations.yaml, comments included: what the web editor shows.
    try:
        text = _file(request).item_text(conf["id"])
    except Exception:  # noqa: BLE001 - an unreadable file: the editor falls back to config
        text = None
    return json_response({**_shown(request, conf), "yaml": text})


@routes.put("/api/automations/{automation_id}", "Replace an automation", scope=ROLE,
            body_schema=vol.Schema(dict), tags=("automations",))
async def update_automation(request: web.Request) -> web.StreamResponse:
    conf = _existing(request)
    await _require(request, conf)
    raw = {**_resolved(request, request[BODY]), "id": conf["id"]}
    checked = _validate(raw, conf["id"])
    await _require(request, checked)
    return json_response(await _save(request, raw, checked, "update"))


MAX_YAML_TEXT = 64 * 1024


@routes.put("/api/automations/{automation_id}/yaml",
            "Create or replace an automation from its YAML text, kept as typed (comments too)",
            scope=ROLE,
            body_schema=vol.Schema({vol.Required("yaml"): vol.All(
                str, vol.Length(min=1, max=MAX_YAML_TEXT))}),
            responses={200: "Replaced", 201: "Created"}, tags=("automations",))
async def put_automation_yaml(request: web.Request) -> web.StreamResponse:
    """What the editor's YAML view sends: the text goes into automations.yaml as typed, so a
    comment written in the browser is kept. `!secret name` stays a tag in the file; `!include`
    and other tags are refused. A text that would not read back as exactly this automation
    (wrong indentation swallowing a neighbour, say) is refused and nothing is written."""
    automation_id = request.match_info["automation_id"]
    try:
        item_text, typed = typed_item(request[BODY]["yaml"])
    except AutomationFileError as err:
        raise ApiError(400, f"YAML: {err}") from None
    if "id" not in typed:
        raise ApiError(400, f"the YAML must say `id: {automation_id}`",
                       details=[{"path": "id", "reason": "required"}])
    engine = _engine(request)
    existing = engine.automations.get(automation_id)
    if existing is not None:
        await _require(request, existing.conf)
    raw = _resolved(request, typed)
    checked = _validate(raw, automation_id)
    await _require(request, checked)
    action = "update" if existing is not None else "create"
    if _secrets(request).refs(typed) != typed:
        # A secret's value typed out in full: written through the object path, which puts
        # `!secret name` in its place (the file never holds a secret; the typed comments of
        # this one edit are lost, the old text's are kept).
        saved = await _save(request, raw, checked, action)
    else:
        saved = await _save(request, raw, checked, action, text=item_text)
    return json_response(saved, status=201 if existing is None else 200)


@routes.delete("/api/automations/{automation_id}", "Delete an automation", scope=ROLE,
               tags=("automations",))
async def delete_automation(request: web.Request) -> web.StreamResponse:
    conf = _existing(request)
    await _require(request, conf)
    engine = _engine(request)
    old = _file(request).remove(conf["id"])
    version = await engine.store.add_version(conf["id"], "delete", principal(request).name,
                                             old, None)
    await engine.async_remove(conf["id"])
    await _audit(request, "automation.delete", conf, {"version": version})
    return json_response({"id": conf["id"], "deleted": True, "version": version})


@routes.get("/api/automations/{automation_id}/traces",
            "Stored runs: the last N and the latest of each outcome, newest first",
            scope=ROLE, tags=("automations",))
async def automation_traces(request: web.Request) -> web.StreamResponse:
    conf = _existing(request)
    await _require(request, conf)
    engine = _engine(request)
    await engine.async_flush()
    return json_response(_secrets(request).redact(await engine.store.traces(conf["id"]),
                                                  partial=True))


@routes.get("/api/automations/{automation_id}/versions",
            "Every edit: version, action, who, when, old and new text", scope=ROLE,
            tags=("automations",))
async def automation_versions(request: web.Request) -> web.StreamResponse:
    automation_id = request.match_info["automation_id"]
    engine = _engine(request)
    rows = await engine.store.versions(automation_id)
    if not rows and automation_id not in engine.automations:
        raise ApiError(404, f"Automation {automation_id} not found")
    current = engine.automations.get(automation_id)
    if current is not None:
        await _require(request, current.conf)
    elif not principal(request).scope.unrestricted:
        raise await deny(request, "A deleted automation's history needs an unrestricted scope")
    return json_response(_secrets(request).redact(rows, partial=True))


@routes.post("/api/automations/{automation_id}/rollback",
             "Restore the text of an earlier version (recorded as a new version)", scope=ROLE,
             body_schema=vol.Schema({vol.Required("version"): vol.All(int, vol.Range(min=1, max=MAX_ROW_ID))}),
             tags=("automations",))
async def rollback_automation(request: web.Request) -> web.StreamResponse:
    automation_id = request.match_info["automation_id"]
    engine = _engine(request)
    current = engine.automations.get(automation_id)
    if current is not None:
        await _require(request, current.conf)
    row = await engine.store.version(automation_id, request[BODY]["version"])
    if row is None:
        raise ApiError(404, f"Automation {automation_id} has no version {request[BODY]['version']}")
    if not row["new_text"]:
        raise ApiError(400, "That version is a deletion; roll back to one before it")
    try:
        raw = _resolved(request, parse_item(row["new_text"]))
    except AutomationFileError as err:
        raise ApiError(400, f"version {request[BODY]['version']}: {err}") from None
    checked = _validate(raw, automation_id)
    await _require(request, checked)
    # the version's own text, comments and all, not a re-dump of its values
    return json_response(await _save(request, raw, checked, "rollback", text=row["new_text"]))


@routes.post("/api/automations/{automation_id}/dry_run",
             "Replay recorded history through the triggers, conditions and actions; nothing "
             "is called",
             scope=ROLE,
             body_schema=vol.Schema({vol.Required("start"): vol.Any(str, int, float),
                                     vol.Required("end"): vol.Any(str, int, float)}),
             tags=("automations",))
async def dry_run_automation(request: web.Request) -> web.StreamResponse:
    from hub.core.automations.dryrun import async_dry_run

    from .query import query_time as _timestamp

    conf = _existing(request)
    await _require(request, conf)
    try:
        start, end = _timestamp(request[BODY]["start"]), _timestamp(request[BODY]["end"])
    except vol.Invalid as err:
        raise ApiError(400, str(err)) from None
    if end <= start:
        raise ApiError(400, "end must be after start")
    return json_response(_secrets(request).redact(
        await async_dry_run(request.app[HUB], conf, start, end), partial=True))
