"""`voltwatch demo` (what `make run` starts): a newcomer gets live data within a minute."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _read_until(stream: asyncio.StreamReader, pattern: re.Pattern[str], seen: list[str]) -> re.Match[str]:
    while True:
        line = (await stream.readline()).decode("utf-8", "replace")
        if not line:
            raise AssertionError("demo exited before printing its login:\n" + "".join(seen))
        seen.append(line)
        match = pattern.search(line)
        if match:
            return match


async def test_demo_serves_live_detector_values(tmp_path: Path) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "demo", "--port", str(port), "--data-dir", str(tmp_path / "demo"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        # Without the test-only plugins that tests/conftest.py puts on PYTHONPATH: as `make run`.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ""},
    )
    seen: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        assert proc.stdout is not None
        login = await asyncio.wait_for(
            _read_until(proc.stdout, re.compile(r"\(demo login\): user (\S+) password (\S+)"),
                        seen), 60
        )
        match = await asyncio.wait_for(
            _read_until(proc.stdout, re.compile(r"API token: (vw_\S+)"), seen), 60
        )
        token = match.group(1)
        assert any(f"http://127.0.0.1:{port}/?token={token}" in line for line in seen)
        assert any(f"http://127.0.0.1:{port}/login" in line for line in seen)
        # Keep draining the demo's log so it never blocks on a full pipe.
        drain = asyncio.create_task(proc.stdout.read())
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        # unsafe=True: keep cookies of an IP-address host (127.0.0.1), as a browser does.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            # from the start: every notification record change, to see a demo alarm's SMS
            notices = await session.ws_connect(f"{base}/api/websocket", headers=headers)
            assert (await notices.receive_json(timeout=10))["type"] == "auth_ok"
            await notices.send_json({"id": 1, "type": "subscribe_events",
                                     "event_type": "notification_delivery"})
            assert (await notices.receive_json(timeout=10))["success"] is True
            async with session.get(f"{base}/api/health") as response:
                assert await response.json() == {"status": "ok"}
            async with session.ws_connect(f"{base}/api/websocket", headers=headers) as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "auth_ok"
                await ws.send_json({
                    "id": 1, "type": "subscribe_states",
                    "entity_ids": ["sensor.arcm_1_residual_current"],
                })
                assert (await ws.receive_json(timeout=10))["success"] is True
                # A detector value arrives live (polled from the simulator every second).
                event = (await ws.receive_json(timeout=30))["event"]
                assert event["new_state"]["attributes"]["unit_of_measurement"] == "mA"
                assert float(event["new_state"]["state"]) >= 0
            async with session.get(f"{base}/api/plugins", headers=headers) as response:
                plugins = {p["name"] for p in (await response.json())["plugins"]}
            # The printed demo login signs in (a super_admin: it sees every detector).
            async with session.post(
                f"{base}/api/auth/login",
                json={"name": login.group(1), "password": login.group(2)},
            ) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["user"]["role"] == "super_admin"
            async with session.get(f"{base}/api/states") as response:
                assert response.status == 200
                entity_ids = {s["entity_id"] for s in await response.json()}
            assert "sensor.arcm_1_residual_current" in entity_ids
            # A demo alarm (an ARCM unit leaks ~30 s after start) is sent by SMS to the demo
            # user through the simulated modem, whose status report makes it `delivered`.
            while True:
                record = (await notices.receive_json(timeout=120))["event"]["data"]
                if record["kind"] == "alarm" and record["status"] == "delivered":
                    break
            assert record["channel"] == "sms" and record["recipient"] == "+8613800138000"
            assert record["user_name"] == login.group(1) and record["alarm_id"]
            await notices.close()
            async with session.get(f"{base}/api/notifications/notifiers",
                                   headers=headers) as response:
                (sms,) = await response.json()
            assert sms["name"] == "sms" and sms["healthy"] is True and sms["delivered"] >= 1
            # The demo's broker takes no anonymous clients: the hub and the smoke detector
            # got in with the credentials the hub generated, and nobody was refused.
            async with session.get(f"{base}/api/mqtt", headers=headers) as response:
                mqtt = await response.json()
            assert mqtt["connected"] is True and mqtt["refusals"] == []
            (smoke,) = [d for d in mqtt["devices"] if d["device_id"] == "smoke-1"]
            assert smoke["online"] is True
        broker_conf = (tmp_path / "demo" / "mosquitto" / "mosquitto.conf").read_text()
        assert "allow_anonymous false" in broker_conf and "password_file" in broker_conf
        assert {"arcm", "modbus", "gsm", "mqtt"} <= plugins
        assert "broken" not in plugins  # test-only plugins never reach the demo
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            drain.cancel()
    assert proc.returncode == 0, "".join(seen)
