"""Voltwatch transport plugin `gsm`: the DTU socket server (CONTRACTS §7).

GSM/4G DTUs dial in to the hub, register with their IMEI, heartbeat, and carry Modbus-RTU to
the RS485 bus behind them. This plugin provides the `gsm:` configuration section, the `gsm`
link transport (`link: {transport: gsm, imei: "860000000000001", unit: 1}`) for detector
plugins, `GET /api/gsm/dtus`, the `voltwatch simulate dtu` simulator and a demo DTU.

One `GsmServer` per Hub, created by whichever hook needs it first: the core asks for link
factories before it sets plugins up, and a factory must be able to hand out a link for a DTU
that has not dialled in yet.
"""

from __future__ import annotations

import importlib.metadata
import logging
import secrets
import weakref
from typing import TYPE_CHECKING, Any

import voluptuous as vol

from hub import hookimpl

from .link import GsmLink
from .server import EVENT_DTU_PENDING, Dtu, GsmServer, dtu_device_id
from .settings import GSM_SCHEMA, LINK_SCHEMA, GsmSettings
from .simulator import SimOptions, add_arguments, run_dtus, simulate

if TYPE_CHECKING:
    from hub.demo import DemoSite
    from hub.hub import Hub

__all__ = [
    "EVENT_DTU_PENDING", "Dtu", "GsmLink", "GsmServer", "GsmSettings", "dtu_device_id",
    "get_server", "stats",
]

_LOGGER = logging.getLogger(__name__)
_SERVERS: weakref.WeakKeyDictionary[Any, GsmServer] = weakref.WeakKeyDictionary()

DEMO_IMEI = "860000000000001"


def get_server(hub: Hub) -> GsmServer:
    """The hub's DTU server (created on first use, listening once `voltwatch_setup` ran)."""
    server = _SERVERS.get(hub)
    if server is None:
        server = _SERVERS[hub] = GsmServer(hub, GsmSettings.from_config(hub.config.get("gsm")))
    return server


def stats(hub: Hub) -> dict[str, float]:
    """Totals for /metrics (see docs/plugins/gsm.md for the names)."""
    server = _SERVERS.get(hub)
    return server.stats() if server is not None else {}


@hookimpl
def voltwatch_metrics(hub: Hub) -> dict[str, float]:
    return stats(hub)


def _uses_gsm(config: dict[str, Any]) -> bool:
    return "gsm" in config or any(
        (device.get("link") or {}).get("transport") == "gsm"
        for device in config.get("devices", [])
    )


@hookimpl
def voltwatch_config_schema() -> dict[str, vol.Schema]:
    return {"gsm": GSM_SCHEMA}


@hookimpl
def voltwatch_link_schemas() -> dict[str, vol.Schema]:
    return {"gsm": LINK_SCHEMA}


@hookimpl
def voltwatch_link_factories(hub: Hub) -> dict[str, Any]:
    def make(link_config: dict[str, Any]) -> GsmLink:
        conf = LINK_SCHEMA(dict(link_config))  # API-created links get defaults too
        server = get_server(hub)
        server.register_link(conf["imei"], conf["unit"])
        link = server.links.get(conf["imei"])
        if link is None:
            link = server.links[conf["imei"]] = GsmLink(server, conf["imei"])
        return link

    return {"gsm": make}


@hookimpl
def voltwatch_setup(hub: Hub, config: dict[str, Any]) -> Any:
    if not _uses_gsm(config):
        return None
    return get_server(hub).async_start()


@hookimpl
def voltwatch_shutdown(hub: Hub) -> Any:
    server = _SERVERS.get(hub)
    if server is None or not server.started:
        return None
    return server.async_stop()


@hookimpl
def voltwatch_http_routes(hub: Hub) -> list[Any]:
    from aiohttp import web

    async def list_dtus(request: web.Request) -> web.Response:
        """DTUs seen since start and DTUs configured: known ones and pending (unknown IMEI).

        Each entry: imei, device_id, status (known | pending), connected, online,
        communication_lost, peer, connected_at, last_seen, units, devices and counters
        (frames, heartbeats, bytes_up, bytes_down, crc_errors, garbage, requests, timeouts,
        exception_replies, connects, reconnects, impostors, refused, throttled), `auth`
        (key | open) and `weak` (no key: anyone who reads the label can claim it), `owner`
        (the worker holding the DTU's socket; null when none does) and `owned_here`.
        `?status=pending` filters. `refusals`: the latest refused connections (peer, claimed
        id, reason), newest last; `policy`: the registration policy (gsm.auth).
        """
        server = _SERVERS.get(hub)
        dtus = server.listing() if server is not None else []
        wanted = request.query.get("status")
        if wanted in ("known", "pending"):
            dtus = [dtu for dtu in dtus if dtu["status"] == wanted]
        return web.json_response({
            "dtus": dtus, "stats": stats(hub),
            "policy": server.settings.auth if server is not None else None,
            "refusals": list(server.refusals.recent) if server is not None else [],
        })

    return [web.get("/api/gsm/dtus", list_dtus)]


@hookimpl
def voltwatch_simulators() -> dict[str, Any]:
    return {"dtu": (add_arguments, simulate)}


@hookimpl
def voltwatch_fleet_members() -> dict[str, Any]:
    from .fleet import MEMBER

    return {"dtu": MEMBER}


def _arcm_installed() -> bool:
    from hub.core.plugins import allowed_plugins

    allowed = allowed_plugins()
    names = {ep.name for ep in importlib.metadata.entry_points(group="voltwatch.plugins")}
    return "arcm" in names and (allowed is None or "arcm" in allowed)


@hookimpl
def voltwatch_demo_site(demo: DemoSite) -> None:
    port = demo.free_port()
    # The demo DTU registers with a key (docs/plugins/gsm.md, "Registration keys"), made
    # afresh for each demo: the API shows it as `auth: key`, not weak.
    key = secrets.token_urlsafe(12)
    demo.set_section("gsm", {"host": "127.0.0.1", "port": port, "heartbeat_timeout": "180s",
                             "dtus": {DEMO_IMEI: {"key": key}}})
    options = SimOptions(host="127.0.0.1", port=port, heartbeat_interval=60.0, alarm_every=900.0,
                         registration_key=key.encode("ascii"))
    demo.start(run_dtus([DEMO_IMEI], [1, 2], options), name="gsm demo DTU")
    if not _arcm_installed():
        _LOGGER.info("GSM demo: the arcm plugin is not installed; the demo DTU has no devices")
        return
    for unit in (1, 2):
        demo.add_device(
            id=f"dtu1-arcm-{unit}", name=f"市场配电箱{unit}（4G）", platform="arcm",
            profile="arcm-ref", project="market-1", area="一层", location=f"{unit}号配电箱",
            link={"transport": "gsm", "imei": DEMO_IMEI, "unit": unit},
        )

