"""Voltwatch transport plugin `mqtt`: push devices over MQTT (CONTRACTS §6).

Two connections per hub (aiomqtt, MQTT 3.1.1, persistent sessions, QoS 1; connection.py says
why two) receive telemetry, events, retained status (the devices' wills) and command acks under
`<prefix>/dev/<id>/…`.
Status is this plugin's own business (`binary_sensor.<obj>_online`, `communication_lost`);
telemetry and events go to the device-type plugin that owns the device's platform through
`hub.push_handlers` (the `voltwatch_push_handlers` hook), so this plugin knows nothing about
smoke detectors. Commands go out through the `mqtt` link (`hub.links.acquire({"transport":
"mqtt"})`), which waits for the device's ack.

Also here: the `mqtt:` section, `GET /api/mqtt`, `voltwatch simulate mqtt-device`, a demo
broker, and `voltwatch_mqtt.testing.MosquittoBroker` for tests of plugins built on this one.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import secrets
import weakref
from typing import TYPE_CHECKING, Any

import voluptuous as vol

from hub import hookimpl

from .connection import DeviceStatus, MqttConnection, MqttLink
from .credentials import BrokerFiles, device_secret, write_broker_files
from .settings import DOMAIN, LINK_SCHEMA, MQTT_SCHEMA, MqttSettings
from .simulator import SimOptions, SimulatedDevice, add_arguments, run_devices, simulate

if TYPE_CHECKING:
    from hub.demo import DemoSite
    from hub.hub import Hub

__all__ = [
    "DeviceStatus", "MqttConnection", "MqttLink", "MqttSettings", "SimOptions",
    "SimulatedDevice", "demo_device_options", "ensure_demo_broker", "get_connection", "stats",
]

_LOGGER = logging.getLogger(__name__)
_CONNECTIONS: weakref.WeakKeyDictionary[Any, MqttConnection] = weakref.WeakKeyDictionary()
_BROKER_FILES: weakref.WeakKeyDictionary[Any, BrokerFiles] = weakref.WeakKeyDictionary()


def get_connection(hub: Hub) -> MqttConnection:
    """The hub's MQTT connection, created on first use (link factories come before setup)."""
    connection = _CONNECTIONS.get(hub)
    if connection is None:
        settings = MqttSettings.from_config(
            hub.config.get(DOMAIN), hub.config_dir, hub.config.get("hub", {}).get("name", ""),
        )
        connection = _CONNECTIONS[hub] = MqttConnection(hub, settings)
    return connection


def stats(hub: Hub) -> dict[str, Any]:
    """Counters for /metrics and /api/mqtt (names in docs/plugins/mqtt.md)."""
    connection = _CONNECTIONS.get(hub)
    return connection.stats() if connection is not None else {}


_GAUGES = frozenset({"connected", "commands_pending", "devices_online", "devices_offline",
                     "mirror_pending", "intake_lag_seconds", "intake_lag_max_seconds",
                     "peer_pending"})


@hookimpl
def voltwatch_metrics(hub: Hub) -> dict[str, float]:
    """The counters of `stats()` for /metrics: `voltwatch_mqtt_<name>_total` (counters) and
    `voltwatch_mqtt_<name>` (connected, commands_pending, devices_online/offline, the intake
    lag)."""
    return {f"mqtt_{key}" if key in _GAUGES else f"mqtt_{key}_total": value
            for key, value in stats(hub).items()}


def _uses_mqtt(config: dict[str, Any]) -> bool:
    return DOMAIN in config or any(
        (device.get("link") or {}).get("transport") == "mqtt"
        for device in config.get("devices", [])
    )


@hookimpl
def voltwatch_config_schema() -> dict[str, vol.Schema]:
    return {DOMAIN: MQTT_SCHEMA}


@hookimpl
def voltwatch_link_schemas() -> dict[str, vol.Schema]:
    return {"mqtt": LINK_SCHEMA}


@hookimpl
def voltwatch_link_factories(hub: Hub) -> dict[str, Any]:
    def make(link_config: dict[str, Any]) -> MqttLink:
        LINK_SCHEMA(dict(link_config))  # an API-created device's link is checked here too
        connection = get_connection(hub)
        if not connection.started and hub.loop is not None and hub.loop.is_running():
            # A device created through the API on a hub without an `mqtt:` section.
            connection.start()
        return connection.link

    return {"mqtt": make}


@hookimpl
def voltwatch_setup(hub: Hub, config: dict[str, Any]) -> Any:
    if not _uses_mqtt(config):
        return None

    async def start() -> None:
        connection = get_connection(hub)
        if connection.settings.broker_files:
            files = _BROKER_FILES[hub] = BrokerFiles(hub, connection.settings)
            await files.start()
        connection.start()

    return start()


@hookimpl
def voltwatch_shutdown(hub: Hub) -> Any:
    files = _BROKER_FILES.pop(hub, None)
    if files is not None:
        files.stop()
    connection = _CONNECTIONS.get(hub)
    if connection is None or not connection.started:
        return None
    return connection.stop()


@hookimpl
def voltwatch_http_routes(hub: Hub) -> list[Any]:
    from aiohttp import web

    async def get_mqtt(request: web.Request) -> web.Response:
        """The MQTT connection: broker, client id, subscriptions, counters and devices seen.

        Returns `{"enabled": false}` when no `mqtt:` section and no MQTT device is configured;
        otherwise broker, client_id, topic_prefix, shared_group, mirror_states, connected,
        subscribed,
        last_error, subscriptions, stats (messages, messages_<kind>, malformed,
        malformed_<reason>, unknown_device, unhandled, handler_errors, connects, reconnects,
        commands_sent / acked / failed / refused / timed_out, acks_unmatched, devices_online,
        devices_offline, refused, refused_not_authorised, refused_publish_denied,
        refused_subscribe_denied, broker_log_lines, broker_log_file_lines, broker_reloads and,
        with mirror_states, mirror_relayed / batches / received / applied / reported / stale /
        malformed / publish_failed / pending),
        devices (device_id, entity_id, online, status_at, last_seen, messages), refusals: the
        latest logins, publishes and subscriptions the broker refused, read from its log (at,
        peer, claimed, reason, message, broker_line; username and topic for the ACL ones),
        and broker_log_file (null, or path, error, reopens of the tailed log file).
        """
        connection = _CONNECTIONS.get(hub)
        if connection is None:
            return web.json_response({"enabled": False})
        return web.json_response({"enabled": True, **connection.describe()})

    async def get_credentials(request: web.Request) -> web.Response:
        """A device's broker user name and password (super_admin; every read is audited).

        Needs `mqtt.broker_files`; 404 for a device that is not an MQTT device. The password
        is derived from the hub's secret, so it is the same on every read until the secret
        file (`<config>/.mqtt_device_secret`) is replaced.
        """
        files = _BROKER_FILES.get(hub)
        device_id = request.match_info["device_id"]
        if files is None:
            raise web.HTTPConflict(text="mqtt.broker_files is not configured")
        if device_id not in files.device_ids():
            raise web.HTTPNotFound(text=f"{device_id} is not an MQTT device")
        auth = getattr(hub, "auth", None)
        if auth is not None:
            from hub.http.auth import request_user

            await auth.audit.record("mqtt.credentials", "ok", actor=request_user(request),
                                    ip=request.remote, target=device_id)
        return web.json_response({"device_id": device_id, "username": device_id,
                                  "password": files.password(device_id)})

    return [web.get("/api/mqtt", get_mqtt),
            web.get("/api/mqtt/credentials/{device_id}", get_credentials)]


@hookimpl
def voltwatch_simulators() -> dict[str, Any]:
    return {"mqtt-device": (add_arguments, simulate)}


@hookimpl
def voltwatch_fleet_members() -> dict[str, Any]:
    from .fleet import MEMBER

    return {"mqtt": MEMBER}


# -- demo ---------------------------------------------------------------------------------
_DEMO_BROKER_ATTR = "_voltwatch_mqtt_broker"
_DEMO_BROKER_DIR = "mosquitto"
_DEMO_FILES = "broker"
_DEMO_HUB_USER = "hub"


async def ensure_demo_broker(demo: DemoSite) -> tuple[str, int] | None:
    """Start the demo's own Mosquitto once (idempotent) and set the `mqtt:` section.

    The broker runs as a site should run it: no anonymous clients, the password and ACL files
    the hub generates (`broker_files`), reloaded by SIGHUP when they change
    (`broker_pid_file`), and its log on `$SYS/broker/log/#` so its refusals show in the hub.
    The files are written here once before the broker starts (the devices known so far, the
    hub's user) and again by the hub from its registry. Returns (host, port), or None when
    mosquitto is not installed. Other plugins' demo hooks (smoke) may call this to find the
    broker whatever order the hooks run in.
    """
    existing = getattr(demo, _DEMO_BROKER_ATTR, None)
    if existing is not None:
        return existing.host, existing.port
    from .testing import MosquittoBroker, find_mosquitto

    if find_mosquitto() is None:
        _LOGGER.info("MQTT demo: mosquitto is not installed; the demo runs without MQTT")
        return None
    section: dict[str, Any] = {"topic_prefix": "voltwatch", "reconnect_max": "5s"}
    extra: list[str] = []
    anonymous = True
    hub_password = secrets.token_urlsafe(18)  # a new one at every start, as the demo login
    ids = [d["id"] for d in demo.devices if (d.get("link") or {}).get("transport") == "mqtt"]
    try:
        passwd, acl = await write_broker_files(
            demo.data_dir / _DEMO_FILES, "voltwatch", device_secret(demo.data_dir), ids,
            _DEMO_HUB_USER, hub_password)
    except (OSError, RuntimeError) as err:
        _LOGGER.warning("MQTT demo: cannot write the broker's password/ACL files (%s); the "
                        "demo broker accepts anonymous clients", err)
    else:
        anonymous = False
        extra = [f"password_file {passwd}", f"acl_file {acl}"]
        section.update(username=_DEMO_HUB_USER, password=hub_password,
                       broker_files=_DEMO_FILES,
                       broker_pid_file=f"{_DEMO_BROKER_DIR}/mosquitto.pid")
    broker = MosquittoBroker(demo.data_dir / _DEMO_BROKER_DIR, port=demo.free_port(),
                             anonymous=anonymous, log_topic=True, extra=extra)
    # Started from this (the main) thread, so it dies with the demo even on SIGKILL; the short
    # wait for its port happens once, before the demo serves anything.
    broker.start()
    setattr(demo, _DEMO_BROKER_ATTR, broker)
    demo.set_section(DOMAIN, {"host": broker.host, "port": broker.port, **section})
    demo.start(_keep_broker(broker), name="mqtt demo broker")
    return broker.host, broker.port


def demo_device_options(demo: DemoSite, **options: Any) -> SimOptions:
    """Simulator options for the demo broker: its address and the devices' credentials."""
    broker = getattr(demo, _DEMO_BROKER_ATTR)
    secret = None if broker.anonymous else device_secret(demo.data_dir)
    return SimOptions(host=broker.host, port=broker.port, prefix="voltwatch", secret=secret,
                      **options)


async def _keep_broker(broker: Any) -> None:
    """Lives as long as the demo; stopping the demo (cancel) stops the broker."""
    try:
        await asyncio.Event().wait()
    finally:
        broker.stop()


def _plugin_installed(name: str) -> bool:
    from hub.core.plugins import allowed_plugins

    allowed = allowed_plugins()
    names = {ep.name for ep in importlib.metadata.entry_points(group="voltwatch.plugins")}
    return name in names and (allowed is None or name in allowed)


@hookimpl
async def voltwatch_demo_site(demo: DemoSite) -> None:
    from .testing import find_mosquitto

    add_smoke = find_mosquitto() is not None and _plugin_installed("smoke") and not any(
        device.get("id") == "smoke-1" for device in demo.devices)  # smoke's own hook may add it
    if add_smoke:
        # Added before the broker starts, so its credentials are in the first files.
        demo.add_device(id="smoke-1", name="厨房烟感", platform="smoke", project="school-1-b",
                        area="一层", location="厨房", link={"transport": "mqtt"})
    if await ensure_demo_broker(demo) is None:
        return
    if not _plugin_installed("smoke"):
        _LOGGER.info("MQTT demo: no push device platform (smoke) installed; broker only")
        return
    if add_smoke:
        options = demo_device_options(demo, interval=30.0, smoke_alarm_every=900.0)
        demo.start(run_devices(["smoke-1"], options), name="mqtt demo smoke detector")
