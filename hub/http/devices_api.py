"""Device writes over HTTP: add, edit and remove devices in the registry (docs/api.md).

The handlers only touch the core's device registry. Plugins react to its
`device_registry_updated` event: a detector plugin starts or stops its poller, the `gsm`
plugin treats a device whose link names a pending DTU's IMEI as the adoption of that DTU.
So adopting a DTU is `POST /api/devices` with `link: {transport: gsm, imei, unit}`, and the
core never needs to know what a DTU is.

A device is checked by the same rules as `devices:` in configuration.yaml
(`hub.core.config.validate_device`), so the API never accepts a device the next
`check-config` would refuse; a 400 names each offending key in `details`. Devices named in
configuration.yaml belong to the file (the hub re-reads them at start): editing or removing
them here is a 409 that says so, rather than a change that silently reverts at the next start.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from hub.auth.permissions import PROJECT_ADMIN
from hub.core.config import ConfigError, validate_device

from .api import _DEVICE_SCHEMA, _device_dict, device_in_scope
from .auth import auth_manager, context_for, principal, require_project
from .routes import BODY, HUB, ApiError, RouteTable, json_response

routes = RouteTable()

#: Registry fields an edit may set; anything else in a body is a platform setting (`options`).
_PLACEMENT = ("name", "project", "area", "location")
_TEXT = vol.All(str, vol.Length(max=200))

NEW_DEVICE_SCHEMA = vol.Schema(
    {
        vol.Required("id", description="letters, digits, '-', '_' and '.'; at most 64"):
            vol.All(str, vol.Length(min=1, max=64)),
        vol.Required("platform", description="a device platform, e.g. arcm, arc_fault, smoke"):
            vol.All(str, vol.Length(min=1, max=64)),
        vol.Optional("name"): _TEXT,
        vol.Optional("project", description="a node of the project tree"): _TEXT,
        vol.Optional("area"): _TEXT,
        vol.Optional("location"): _TEXT,
        vol.Optional("profile", description="register map, e.g. arcm-ref"): _TEXT,
        vol.Optional("poll_interval", description="e.g. 1s, 500ms or seconds"):
            vol.Any(str, int, float),
        vol.Optional("link", description="transport and address, e.g. "
                                         "{transport: gsm, imei: ..., unit: 1}"): dict,
    },
    extra=vol.ALLOW_EXTRA,  # platform settings (protection thresholds, polling tiers, ...)
)

EDIT_DEVICE_SCHEMA = vol.Schema(
    {
        vol.Optional("name", description="null clears it"): vol.Any(None, _TEXT),
        vol.Optional("project"): _TEXT,
        vol.Optional("area", description="null clears it"): vol.Any(None, _TEXT),
        vol.Optional("location", description="null clears it"): vol.Any(None, _TEXT),
        vol.Optional("profile"): _TEXT,
        vol.Optional("poll_interval"): vol.Any(str, int, float),
        vol.Optional("link"): dict,
    },
    extra=vol.ALLOW_EXTRA,
)

_WRITE_RESPONSES = {200: "The device as GET /api/devices/{device_id} shows it",
                    201: "Created", 409: "The id exists, or the device belongs to "
                                          "configuration.yaml"}


def _invalid(err: ConfigError) -> ApiError:
    reasons = "; ".join(f"{issue.key or 'device'}: {issue.reason}" for issue in err.issues)
    return ApiError(400, f"Invalid device: {reasons}", [
        {"path": [part for part in issue.key.replace("[", ".").replace("]", "").split(".")
                  if part], "message": issue.reason}
        for issue in err.issues])


def _check(request: web.Request, raw: dict[str, Any]) -> dict[str, Any]:
    """The device as `devices:` would accept it; its project must be a node of the tree."""
    hub = request.app[HUB]
    manager = auth_manager(request)
    project = raw.get("project")
    if project is not None and manager is not None and project not in manager.tree:
        raise ApiError(400, f"Invalid device: project: unknown project {project!r}",
                       [{"path": ["project"], "message": "unknown project"}])
    try:
        # No project list: the tree (above) is the authority, not configuration.yaml alone.
        return validate_device(raw, hub.plugins, [], hub.config_dir)
    except ConfigError as err:
        raise _invalid(err) from err


async def _audit(request: web.Request, action: str, device_id: str, project: str | None,
                 detail: dict[str, Any], context_id: str) -> None:
    manager = auth_manager(request)
    if manager is None:
        return
    who = principal(request)
    await manager.audit.record(action, "ok", actor=who.name, actor_role=who.role,
                               ip=request.remote, target=device_id, project=project,
                               detail=detail, context_id=context_id)


def _shown(body: dict[str, Any]) -> dict[str, Any]:
    """What the audit keeps of a body: a registration key in a link is not for the log."""
    out = dict(body)
    if isinstance(out.get("link"), dict):
        out["link"] = {k: ("***" if "key" in k or "password" in k else v)
                       for k, v in out["link"].items()}
    return out


def _writable(device: Any) -> Any:
    """The device, when the API may change it."""
    if device.source == "config":
        raise ApiError(409, f"Device {device.id} is defined in configuration.yaml: change it "
                            "there (the hub reads the file at every start)")
    if device.source != "api":
        raise ApiError(409, f"Device {device.id} is managed by its plugin ({device.platform})")
    return device


@routes.post(
    "/api/devices",
    "Add a device (project_admin and above, in a project of my scope); adopts a pending DTU",
    description=(
        "Checked as an entry of `devices:` in configuration.yaml would be (platform and link "
        "schemas of the installed plugins); a 400 names each key in `details`. The device's "
        "plugin starts it at once. A `gsm` link naming a pending DTU's IMEI adopts that DTU. "
        "Audited as `device.create`."
    ),
    scope=PROJECT_ADMIN,
    body_schema=NEW_DEVICE_SCHEMA,
    responses=_WRITE_RESPONSES,
    response_schema=_DEVICE_SCHEMA,
    tags=("registry",),
)
async def create_device(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    body = dict(request[BODY])
    await require_project(request, body.get("project"),
                          None if body.get("project") else "A device without a project")
    if hub.devices.get(body["id"]) is not None:
        raise ApiError(409, f"Device {body['id']} exists already")
    checked = _check(request, body)
    context = context_for(request)
    entry = await hub.devices.async_upsert(**{**checked, "source": "api"}, context=context)
    await _audit(request, "device.create", entry.id, entry.project, _shown(body), context.id)
    return json_response(_device_dict(hub, entry), status=201)


@routes.patch(
    "/api/devices/{device_id}",
    "Edit a device added through the API: name, place in the project tree, link, settings",
    description=(
        "Keys not given keep their value; the result is checked as a new device would be. "
        "Moving a device needs the old and the new project in my scope. Audited as "
        "`device.update` with the changes."
    ),
    scope=PROJECT_ADMIN,
    body_schema=EDIT_DEVICE_SCHEMA,
    responses=_WRITE_RESPONSES,
    response_schema=_DEVICE_SCHEMA,
    tags=("registry",),
)
async def edit_device(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    device = _writable(await device_in_scope(request))
    body = dict(request[BODY])
    if "project" in body:
        await require_project(request, body["project"])
    current = {**device.options, "id": device.id, "platform": device.platform,
               **{k: getattr(device, k) for k in (*_PLACEMENT, "profile")
                  if getattr(device, k) is not None}}
    if device.link:
        current["link"] = device.link
    # null clears a key (an area that no longer applies).
    merged = {k: v for k, v in {**current, **body}.items() if v is not None}
    checked = _check(request, merged)
    context = context_for(request)
    # Plugin settings replace the old ones as a whole: a key the edit dropped is gone.
    fields = {**dict.fromkeys((*_PLACEMENT, "profile")), **checked,
              "link": checked.get("link") or {}, "source": "api"}
    entry = await hub.devices.async_upsert(**fields, replace_options=True, context=context)
    await _audit(request, "device.update", entry.id, entry.project,
                 {"changes": _shown(body), "from_project": device.project}, context.id)
    return json_response(_device_dict(hub, entry))


@routes.delete(
    "/api/devices/{device_id}",
    "Remove a device added through the API, with its entities and current states",
    description="Its alarm records and history stay. Audited as `device.delete`.",
    scope=PROJECT_ADMIN,
    responses={200: "Removed", 409: "The device belongs to configuration.yaml"},
    response_schema={"type": "object", "properties": {"id": {"type": "string"},
                                                      "removed": {"type": "boolean"}}},
    tags=("registry",),
)
async def delete_device(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    device = _writable(await device_in_scope(request))
    device_id = device.id
    context = context_for(request)
    removed = await hub.devices.async_remove(device_id, context=context)
    for entity in hub.entities.for_device(device_id):
        await hub.entities.async_remove(entity.entity_id)
        hub.states.async_remove(entity.entity_id, context=context)
    await _audit(request, "device.delete", device_id, device.project,
                 {"platform": device.platform}, context.id)
    return json_response({"id": device_id, "removed": removed})
