"""`voltwatch token create` as a user runs it: a real process, a real config directory."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

VOLTWATCH = Path(sys.executable).with_name("voltwatch")

CONFIG = """\
hub:
  name: CLI test
http:
  host: 127.0.0.1
  port: 0
database:
  url: "sqlite+aiosqlite:///cli.db"
"""


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(VOLTWATCH),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "VOLTWATCH_PLUGINS": ""},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_token_create_prints_a_token_that_works(tmp_path: Path, make_plugins: Any) -> None:
    from hub.hub import Hub

    (tmp_path / "configuration.yaml").write_text(CONFIG, encoding="utf-8")
    code, out, err = await run_cli("token", "create", "ci-bot", "--config", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1, f"stdout must hold only the token: {out!r}"
    token = lines[0]
    assert token.startswith("vw_") and len(token) > 40

    code, out, err = await run_cli(
        "token", "create", "short-lived", "--expires", "30d", "--config", str(tmp_path)
    )
    assert code == 0, err
    expiring = out.strip()

    hub = Hub(config_dir=tmp_path, plugin_manager=make_plugins())
    await hub.async_start()
    try:
        async with ClientSession(base_url=hub.http.url) as client:
            for value in (token, expiring):
                headers = {"Authorization": f"Bearer {value}"}
                async with client.get("/api/states", headers=headers) as resp:
                    assert resp.status == 200
            async with client.post(
                "/api/services/test/echo",
                json={"value": 1},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert (await resp.json())["context"]["user_id"] == "ci-bot"
            async with client.get("/api/states", headers={"Authorization": "Bearer vw_x"}) as resp:
                assert resp.status == 401
    finally:
        await hub.async_stop()


async def test_token_create_rejects_a_bad_lifetime(tmp_path: Path) -> None:
    (tmp_path / "configuration.yaml").write_text(CONFIG, encoding="utf-8")
    code, out, err = await run_cli(
        "token", "create", "x", "--expires", "soon", "--config", str(tmp_path)
    )
    assert code == 2
    assert out == ""
    assert "--expires" in err


async def test_token_create_reports_a_bad_configuration(tmp_path: Path) -> None:
    (tmp_path / "configuration.yaml").write_text("http:\n  port: many\n", encoding="utf-8")
    code, out, err = await run_cli("token", "create", "x", "--config", str(tmp_path))
    assert code == 1
    assert out == ""
    assert "port" in err
