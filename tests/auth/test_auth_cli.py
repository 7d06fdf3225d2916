"""`voltwatch user add|passwd|disable|list` and `voltwatch token create|revoke`, as an operator
runs them: real processes on a real config directory, then a real hub answers accordingly."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, CookieJar

VOLTWATCH = Path(sys.executable).with_name("voltwatch")

CONFIG = """\
hub:
  name: CLI auth test
http:
  host: 127.0.0.1
  port: 0
database:
  url: "sqlite+aiosqlite:///cli.db"
projects:
  - {id: school-1, name: 第一中学, children: [{id: school-1-a, name: 教学楼A}]}
  - {id: market-1, name: 市场}
"""


async def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(VOLTWATCH), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "VOLTWATCH_PLUGINS": ""},
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_user_and_token_commands(tmp_path: Path) -> None:
    from hub.hub import Hub

    (tmp_path / "configuration.yaml").write_text(CONFIG, encoding="utf-8")
    cfg = ("--config", str(tmp_path))
    code, out, err = await run("user", "add", "王工", "--role", "project_admin",
                               "--project", "school-1", "--phone", "13800000000",
                               "--password-stdin", *cfg, stdin="s3cret-pass\n")
    assert code == 0, err
    assert "Created project_admin 王工" in out
    code, _, err = await run("user", "add", "王工", "--role", "user", "--project", "school-1",
                             "--password-stdin", *cfg, stdin="s3cret-pass\n")
    assert code == 2 and "already exists" in err
    code, _, err = await run("user", "add", "short", "--role", "user", "--project", "school-1",
                             "--password-stdin", *cfg, stdin="abc\n")
    assert code == 2 and "at least 8" in err
    code, _, err = await run("user", "add", "x", "--role", "emperor", "--password-stdin", *cfg,
                             stdin="s3cret-pass\n")
    assert code != 0

    code, token, err = await run("token", "create", "王工", *cfg)
    assert code == 0, err
    token = token.strip()
    assert token.startswith("vw_") and "SYSTEM" not in err
    code, narrow, err = await run("token", "create", "王工", "--project", "school-1-a", *cfg)
    assert code == 0, err
    code, _, err = await run("token", "create", "王工", "--project", "market-1", *cfg)
    assert code == 2 and "outside the scope" in err
    code, system, err = await run("token", "create", "ci-bot", *cfg)
    assert code == 0 and "SYSTEM token" in err

    code, out, _ = await run("user", "list", *cfg)
    assert code == 0 and "王工" in out and "project_admin" in out

    hub = Hub(config_dir=tmp_path)
    await hub.async_start()
    try:
        async with ClientSession(base_url=hub.http.url,
                                 cookie_jar=CookieJar(unsafe=True)) as client:
            async def me(value: str) -> Any:
                async with client.get("/api/auth/me",
                                      headers={"Authorization": f"Bearer {value}"}) as resp:
                    return resp.status, await resp.json()

            status, body = await me(token)
            assert status == 200 and body["name"] == "王工" and body["projects"] == ["school-1"]
            status, body = await me(narrow.strip())
            assert body["projects"] == ["school-1-a"]
            status, body = await me(system.strip())
            assert body["role"] == "super_admin" and body["system"] is True
            async with client.post("/api/auth/login",
                                   json={"name": "王工", "password": "s3cret-pass"}) as resp:
                assert resp.status == 200

            code, out, err = await run("user", "passwd", "王工", "--password-stdin", *cfg,
                                       stdin="another-pass\n")
            assert code == 0, err
            async with client.get("/api/auth/me") as resp:
                assert resp.status == 401  # the password change ended the session
            async with client.post("/api/auth/login",
                                   json={"name": "王工", "password": "another-pass"}) as resp:
                assert resp.status == 200

            code, out, err = await run("token", "revoke", "ci-bot", *cfg)
            assert code == 0 and "Revoked" in out
            code, out, err = await run("user", "disable", "王工", *cfg)
            assert code == 0, err
            # Another process changed things: forget the few seconds of cache, don't wait.
            from hub.http.tokens import clear_cache

            hub.auth.forget_user((await hub.auth.users.get_by_name("王工")).id)
            clear_cache(hub.storage)
            async with client.get("/api/auth/me") as resp:
                assert resp.status == 401
            assert (await me(token))[0] == 401
            assert (await me(system.strip()))[0] == 401
        from hub.auth.audit import AuditQuery

        rows = await hub.auth.audit.query(AuditQuery(actors=["cli"]))
        assert [(r["action"], r["result"]) for r in rows] == [
            ("user.disable", "ok"), ("token.revoke", "ok"), ("user.passwd", "ok"),
            ("token.create", "ok"), ("token.create", "ok"), ("token.create", "ok"),
            ("user.create", "failed"), ("user.create", "failed"), ("user.create", "ok"),
        ]
    finally:
        await hub.async_stop()
