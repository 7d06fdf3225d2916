"""Fault drills with two workers on one PostgreSQL and one Mosquitto (issue 12): a worker killed
mid-stream (a real process, SIGKILL) and a broker restart under load. What a user checks: no
alarm lost or doubled, the telemetry keeps flowing, the dead worker's share is not lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import voltwatch_mqtt
from voltwatch_mqtt.testing import MosquittoBroker, free_port

from hub.fleet import run_fleet, write_devices
from hub.http.tokens import create_token_with_id
from hub.storage.alarm_store import AlarmQuery

from .fleetkit import (
    WAIT,
    EventLog,
    fleet_args,
    fleet_entries,
    hub_config,
    run_in_background,
    start_hub,
    stop,
    wait_until,
)

ALARMED = "fleet-smoke-3"
pytestmark = pytest.mark.timeout(300)


def mqtt_section(broker: MosquittoBroker, name: str) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, "reconnect_min": "50ms",
            "reconnect_max": "500ms", "shared_group": "workers", "client_id": f"worker-{name}"}


async def publish_event(broker: MosquittoBroker, device_id: str, state: str) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="drill-publisher") as client:
        await client.publish(f"voltwatch/dev/{device_id}/event",
                             json.dumps({"event": "smoke_alarm", "state": state}), qos=1)


class WorkerProcess:
    """`voltwatch run` in its own process, so it can be killed like a real crash."""

    def __init__(self, config_dir: Path, pg_url: str, broker: MosquittoBroker,
                 entries: list[dict[str, Any]]) -> None:
        self.config_dir = config_dir
        self.port = free_port()
        config_dir.mkdir(parents=True, exist_ok=True)
        write_devices(config_dir / "fleet.yaml", entries)
        mqtt = mqtt_section(broker, "a")
        (config_dir / "configuration.yaml").write_text(textwrap.dedent(f"""
            hub: {{name: drill worker a, language: en}}
            http: {{host: 127.0.0.1, port: {self.port}}}
            database: {{url: "{pg_url}"}}
            mqtt: {json.dumps(mqtt)}
            projects: [{{id: fleet, name: Fleet}}]
            devices: !include fleet.yaml
        """), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        env = {**os.environ, "VOLTWATCH_PLUGINS": "mqtt,smoke"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "--config", str(self.config_dir)], env=env,
            stdout=subprocess.DEVNULL, stderr=(self.config_dir / "worker.log").open("ab"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return (self.config_dir / "worker.log").read_text(errors="replace")[-3000:]

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{self.port}{path}",
                headers={"Authorization": f"Bearer {self.token}"}) as answer:
            answer.raise_for_status()
            return await (answer.json() if path.startswith("/api/") else answer.text())

    async def wait_up(self) -> None:
        """Until /api/mqtt says connected and subscribed (bounded; the process may fail)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                if (await self.get("/api/mqtt")).get("subscribed"):
                    return
            except aiohttp.ClientError:
                pass
            assert loop.time() < deadline, f"worker a did not come up: {self.log()}"
            await asyncio.sleep(0.1)

    async def telemetry(self) -> int:
        return int((await self.get("/api/mqtt"))["stats"]["messages_telemetry"])

    async def events(self) -> int:
        return int((await self.get("/api/mqtt"))["stats"]["messages_event"])


async def wait_for(probe: Any, predicate: Any, timeout: float = WAIT) -> Any:
    """Poll an async probe until the predicate holds; the timeout only bounds a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if predicate(value):
            return value
        assert loop.time() < deadline, f"not reached within {timeout} s (last {value!r})"
        await asyncio.sleep(0.05)


async def test_killed_worker_loses_no_alarm_and_gets_its_share_back(
        tmp_path: Path, pg_url: str, broker: MosquittoBroker) -> None:
    found, args, plan = fleet_args(
        "--devices", "20", "--per-connection", "10", "--interval", "1",
        "--broker", f"{broker.host}:{broker.port}", "--report-every", "0")
    entries = fleet_entries(found, args)
    hub_b = await start_hub(tmp_path / "b", hub_config(tmp_path, pg_url, entries,
                                                       mqtt=mqtt_section(broker, "b")),
                            "mqtt", "smoke")
    worker_a = WorkerProcess(tmp_path / "a", pg_url, broker, entries)
    fleet = None
    try:
        worker_a.token, _ = await create_token_with_id(hub_b.storage, "drill")
        conn_b = voltwatch_mqtt.get_connection(hub_b)
        await conn_b.wait_ready()
        worker_a.start()
        await worker_a.wait_up()
        log = EventLog([hub_b], "alarm_raised", "alarm_updated")
        fleet = await run_in_background(run_fleet(found, args, plan))
        await wait_for(worker_a.telemetry, lambda n: n > 0)  # a has its share
        await wait_until(lambda: conn_b.kinds["telemetry"] > 0)  # and b has its own

        worker_a.kill()  # mid-stream, no goodbye: the broker keeps a's session
        await publish_event(broker, ALARMED, "active")
        await wait_until(lambda: any(r["device_id"] == ALARMED for r in log.of("alarm_raised")))
        after_kill = conn_b.kinds["telemetry"]
        await wait_until(lambda: conn_b.kinds["telemetry"] >= after_kill + 20)  # b goes on
        await stop(fleet)
        fleet = None

        worker_a.start()  # same config dir: same client id, same session
        await worker_a.wait_up()
        # What the broker kept for a while it was dead arrives though the fleet has stopped.
        await wait_for(worker_a.telemetry, lambda n: n > 0)
        await wait_for(worker_a.events, lambda n: n == 1)
        metrics = await wait_for(
            lambda: worker_a.get("/metrics"),
            lambda text: "voltwatch_alarms_cleared_elsewhere_total" in text)
        rows = await hub_b.alarms.store.query(AlarmQuery(devices=[ALARMED]))
        assert [(r["type"], r["status"]) for r in rows] == [("smoke", "active")]
        assert len(log.of("alarm_raised")) == 1  # b announced it once ...
        assert "voltwatch_alarms_raised_total 0" in metrics  # ... and a did not again
    finally:
        if fleet is not None:
            await stop(fleet)
        worker_a.kill()
        await hub_b.async_stop()


async def test_broker_restart_under_load(tmp_path: Path, pg_url: str,
                                         broker: MosquittoBroker) -> None:
    found, args, plan = fleet_args(
        "--devices", "20", "--per-connection", "10", "--interval", "1",
        "--broker", f"{broker.host}:{broker.port}", "--report-every", "0")
    entries = fleet_entries(found, args)
    hubs = []
    fleet = None
    try:
        for name in ("a", "b"):
            hubs.append(await start_hub(tmp_path / name, hub_config(
                tmp_path, pg_url, entries, mqtt=mqtt_section(broker, name)), "mqtt", "smoke"))
        connections = [voltwatch_mqtt.get_connection(hub) for hub in hubs]
        for connection in connections:
            await connection.wait_ready()
        log = EventLog(hubs, "alarm_raised", "alarm_updated")
        fleet = await run_in_background(run_fleet(found, args, plan))
        await wait_until(lambda: all(c.kinds["telemetry"] > 0 for c in connections))

        await asyncio.to_thread(broker.restart)
        await wait_until(lambda: all(c.reconnects >= 1 and c.ready for c in connections))
        await wait_until(lambda: plan.counters["mqtt_connects"] >= 4)  # the fleet is back too
        before = [c.kinds["telemetry"] for c in connections]
        await wait_until(lambda: all(c.kinds["telemetry"] > n
                                     for c, n in zip(connections, before, strict=True)))
        await publish_event(broker, ALARMED, "active")
        await wait_until(lambda: len([r for _, _, r in log.seen
                                      if r["device_id"] == ALARMED]) == 2)
        rows = await hubs[0].alarms.store.query(AlarmQuery(devices=[ALARMED]))
        assert [(r["type"], r["status"]) for r in rows] == [("smoke", "active")]
        assert len(log.of("alarm_raised")) == 1 and len(log.of("alarm_updated")) == 1
    finally:
        if fleet is not None:
            await stop(fleet)
        for hub in hubs:
            await hub.async_stop()
