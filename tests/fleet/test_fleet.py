"""`voltwatch simulate fleet` against a real hub: MQTT detectors on a real Mosquitto, DTUs on
the hub's real DTU listener; every simulated device is seen and the chosen alarms are raised."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import voltwatch_gsm
import voltwatch_mqtt
import yaml
from voltwatch_mqtt.testing import MosquittoBroker

from hub.core.states import slugify
from hub.fleet import run_fleet, write_devices

from .fleetkit import (
    DeviceSeen,
    Raised,
    fleet_args,
    fleet_entries,
    hub_config,
    run_in_background,
    smoke_entities,
    start_hub,
    stop,
)


def test_devices_file_lists_every_simulated_device(tmp_path: Path) -> None:
    found, args, _ = fleet_args("--devices", "3", "--dtus", "2", "--units", "1-2",
                                "--interval", "15")
    path = tmp_path / "fleet-devices.yaml"
    write_devices(path, fleet_entries(found, args))
    devices = yaml.safe_load(path.read_text(encoding="utf-8"))
    ids = [device["id"] for device in devices]
    assert ids == ["fleet-860000000000001-1", "fleet-860000000000001-2",
                   "fleet-860000000000002-1", "fleet-860000000000002-2",
                   "fleet-smoke-1", "fleet-smoke-2", "fleet-smoke-3"]
    dtu = devices[3]
    assert dtu["platform"] == "arcm" and dtu["poll_interval"] == 15
    assert dtu["link"] == {"transport": "gsm", "imei": "860000000000002", "unit": 2}
    smoke = devices[-1]
    assert smoke["platform"] == "smoke" and smoke["link"] == {"transport": "mqtt"}
    assert smoke["reporting_interval"] == 15


def test_cli_refuses_a_fleet_of_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub", "simulate", "fleet", "--report-every", "0"],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert "nothing to simulate" in result.stderr


async def test_mqtt_fleet_reaches_the_hub(tmp_path: Path, broker: MosquittoBroker) -> None:
    found, args, plan = fleet_args(
        "--devices", "40", "--per-connection", "15", "--interval", "3",
        "--broker", f"{broker.host}:{broker.port}", "--alarm", "fleet-smoke-7",
        "--report-every", "0")
    entries = fleet_entries(found, args)
    hub = await start_hub(tmp_path / "hub", hub_config(
        tmp_path, "sqlite+aiosqlite:///hub.db", entries,
        mqtt={"host": broker.host, "port": broker.port, "reconnect_min": "50ms"}),
        "mqtt", "smoke")
    try:
        await voltwatch_mqtt.get_connection(hub).wait_ready()
        seen = DeviceSeen([hub], smoke_entities(entries))
        raised = Raised([hub])
        fleet = await run_in_background(run_fleet(found, args, plan))
        try:
            await seen.wait()
            record = await raised.wait(lambda r: r["device_id"] == "fleet-smoke-7")
        finally:
            await stop(fleet)
        assert record["type"] == "smoke" and record["project"] == "fleet"
        # Only the chosen detector alarms (on a loaded machine a silence fault may also come).
        assert [r["device_id"] for _, r in raised.seen if r["type"] == "smoke"] \
            == ["fleet-smoke-7"]
        assert plan.counters["mqtt_connects"] == 3  # 40 devices, 15 a connection
        assert plan.counters["mqtt_failed"] == 0
        connection = voltwatch_mqtt.get_connection(hub)
        assert connection.unknown_device == 0 and sum(connection.malformed.values()) == 0
    finally:
        await hub.async_stop()


async def test_dtu_fleet_is_polled_by_the_hub(tmp_path: Path) -> None:
    config = hub_config(tmp_path, "sqlite+aiosqlite:///hub.db", [],
                        gsm={"port": 0, "heartbeat_timeout": "180s"})
    found, args, plan = fleet_args("--dtus", "3", "--units", "1-2", "--interval", "0.5",
                                   "--alarm", "fleet-860000000000002-2", "--report-every", "0")
    config["devices"] = fleet_entries(found, args)
    hub = await start_hub(tmp_path / "hub", config, "gsm", "arcm", "modbus")
    try:
        args.dtu = f"127.0.0.1:{voltwatch_gsm.get_server(hub).port}"
        entities = {f"sensor.{slugify(d['id'])}_residual_current" for d in config["devices"]}
        assert len(entities) == 6
        seen = DeviceSeen([hub], entities)
        raised = Raised([hub])
        fleet = await run_in_background(run_fleet(found, args, plan))
        try:
            await seen.wait()
            record = await raised.wait(lambda r: r["type"] == "residual_current_high")
        finally:
            await stop(fleet)
        assert record["device_id"] == "fleet-860000000000002-2"
        assert plan.counters["dtu_connects"] == 3 and plan.counters["dtu_bad_crc"] == 0
    finally:
        await hub.async_stop()
