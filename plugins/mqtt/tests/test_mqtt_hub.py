"""End to end with a real, started Hub: config validation, hooks, states, commands, HTTP, demo."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest
import voltwatch_mqtt
import voluptuous as vol
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from mqtt_testkit import DEVICE, PLATFORM, wait_until
from voltwatch_mqtt.simulator import SimOptions, SimulatedDevice
from voltwatch_mqtt.testing import MosquittoBroker

from hub import hookimpl
from hub.core.config import ConfigError, validate_configuration
from hub.core.plugins import PluginManager
from hub.core.push import PushMessage
from hub.core.registries import DeviceEntry
from hub.core.tasks import cancel_and_wait
from hub.demo import DemoSite
from hub.hub import Hub


class SmokeLike:
    """A device-type plugin in miniature: a platform and a push handler that sets states."""

    def __init__(self) -> None:
        self.hub: Hub | None = None

    @hookimpl
    def voltwatch_device_schemas(self) -> dict[str, Any]:
        return {PLATFORM: {}}

    @hookimpl
    def voltwatch_push_handlers(self, hub: Hub) -> dict[str, Any]:
        def handle(device: DeviceEntry, message: PushMessage) -> None:
            if message.kind == "telemetry":
                for key, value in message.payload["values"].items():
                    hub.states.async_set(f"sensor.smoke_1_{key}", value, timestamp=message.ts)

        return {PLATFORM: handle}


def plugins() -> PluginManager:
    manager = PluginManager()
    manager.register(voltwatch_mqtt, "mqtt", version="0.1.0")
    manager.register(SmokeLike(), "smokelike")
    return manager


def hub_config(broker: MosquittoBroker, **mqtt: Any) -> dict[str, Any]:
    return {
        "hub": {"name": "test"},
        "http": {"enabled": False},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min": "50ms", **mqtt},
        "devices": [{"id": DEVICE, "platform": PLATFORM, "link": {"transport": "mqtt"}}],
    }


async def test_real_hub_end_to_end(tmp_path, mosquitto: MosquittoBroker) -> None:
    hub = Hub(tmp_path, config=hub_config(mosquitto), plugin_manager=plugins())
    await hub.async_start()
    device_task = None
    try:
        assert hub.plugins.failures == []
        connection = voltwatch_mqtt.get_connection(hub)
        await connection.wait_ready()
        device = SimulatedDevice(DEVICE, SimOptions(host=mosquitto.host, port=mosquitto.port,
                                                    interval=3600, publish_on_connect=False))
        device_task = asyncio.get_running_loop().create_task(device.run())
        await asyncio.wait_for(device.connected.wait(), 10)
        await device.publish_telemetry({"smoke_level": 12, "battery": 87, "temperature": 25.1})

        await wait_until(lambda: hub.states.get("sensor.smoke_1_temperature") is not None)
        assert hub.states.get("sensor.smoke_1_smoke_level").state == "12"
        assert hub.states.get("sensor.smoke_1_temperature").state == "25.1"
        await wait_until(lambda: getattr(hub.states.get("binary_sensor.smoke_1_online"),
                                         "state", None) == "on")

        link = hub.links.acquire(hub.devices.get(DEVICE).link)
        ack = await link.command(DEVICE, "mute")
        assert ack["ok"] is True
        assert device.stats.commands[0]["command"] == "mute"
        await wait_until(lambda: hub.entities.get("binary_sensor.smoke_1_online") is not None)
    finally:
        if device_task is not None:
            await cancel_and_wait(device_task, timeout=10)
            assert device_task.done(), "the simulated device did not stop when cancelled"
        await hub.async_stop()
    assert not connection.started
    assert not connection.connected


async def test_http_route_reports_the_connection(tmp_path, mosquitto: MosquittoBroker) -> None:
    hub = Hub(tmp_path, config=hub_config(mosquitto), plugin_manager=plugins())
    await hub.async_start()
    try:
        await voltwatch_mqtt.get_connection(hub).wait_ready()
        [routes] = [r for name, r in hub.plugins.call_each("voltwatch_http_routes", hub=hub)
                    if name == "mqtt"]
        assert routes[0].handler.__doc__  # documented, so it appears in the OpenAPI document
        app = web.Application()
        app.add_routes(routes)
        async with TestClient(TestServer(app)) as client:
            body = await (await client.get("/api/mqtt")).json()
        assert body["enabled"] is True
        assert body["connected"] is True
        assert body["broker"] == f"127.0.0.1:{mosquitto.port}"
        assert "voltwatch/dev/+/status" in body["subscriptions"]
        assert body["stats"]["connects"] == 1
        assert (tmp_path / ".mqtt_client_id").read_text().strip() == body["client_id"]
    finally:
        await hub.async_stop()


def test_configuration_is_validated() -> None:
    manager = plugins()
    config = validate_configuration(
        {"mqtt": {"command_timeout": "5s", "shared_group": "hubs"},
         "devices": [{"id": "s-1", "platform": PLATFORM,
                      "link": {"transport": "mqtt", "command_timeout": "2s"}}]},
        manager,
    )
    assert config["mqtt"]["command_timeout"] == 5.0
    assert config["mqtt"]["topic_prefix"] == "voltwatch"
    assert config["mqtt"]["port"] == 1883
    assert config["devices"][0]["link"] == {"transport": "mqtt", "command_timeout": 2.0}

    with pytest.raises(ConfigError) as err:
        validate_configuration({"mqtt": {"topic_prefix": "a/#", "shared_group": "x y"}},
                                manager)
    text = str(err.value)
    assert "mqtt.topic_prefix" in text and "mqtt.shared_group" in text


def test_link_schema_rejects_unknown_keys() -> None:
    with pytest.raises(vol.Invalid):
        voltwatch_mqtt.LINK_SCHEMA({"transport": "mqtt", "host": "x"})


async def test_demo_broker_runs_with_the_hubs_credentials(tmp_path) -> None:
    """The demo's Mosquitto is secured as a site's should be: generated passwd/ACL, no
    anonymous clients, devices log in with their derived passwords, refusals reach the hub."""
    demo = DemoSite(tmp_path, http_port=0)
    await voltwatch_mqtt.voltwatch_demo_site(demo)
    section = demo.sections["mqtt"]
    broker = demo._voltwatch_mqtt_broker
    assert broker.running and not broker.anonymous
    assert section["username"] == "hub" and section["broker_files"] == "broker"
    assert await voltwatch_mqtt.ensure_demo_broker(demo) == (section["host"], section["port"])
    demo.launch()
    hub = Hub(tmp_path, config={"mqtt": section})  # the demo's hub lives in its data dir
    hub.loop = asyncio.get_running_loop()
    hub.bus.bind_loop(hub.loop)
    await hub.devices.async_upsert(id="smoke-9", platform=PLATFORM, link={"transport": "mqtt"})
    await voltwatch_mqtt.voltwatch_setup(hub=hub, config=hub.config)
    connection = voltwatch_mqtt.get_connection(hub)
    device = SimulatedDevice("smoke-9", voltwatch_mqtt.demo_device_options(
        demo, interval=3600, publish_on_connect=False))
    task = asyncio.create_task(device.run())
    try:
        await connection.wait_ready()
        # smoke-9 was not in the files the broker started with: the hub rewrote them and
        # made the broker reload (SIGHUP), then the device logs in with its own password.
        await asyncio.wait_for(device.connected.wait(), 30)
        assert "user smoke-9" in (tmp_path / "broker" / "acl").read_text()
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, identifier="anon"):
                pass
        await connection.broker_log.wait_for(lambda log: log.counts["not_authorised"] >= 1)
    finally:
        await cancel_and_wait(task)
        await voltwatch_mqtt.voltwatch_shutdown(hub=hub)
        await demo.stop()
    assert not broker.running
