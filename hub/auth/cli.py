"""`voltwatch user add|passwd|disable|enable|list` (and the plumbing `token` shares).

These run on the hub's own machine against its database (the configuration names it), with
or without the hub running. Passwords come from stdin only (`--password-stdin`), never from
the command line where `ps` and shell history would keep them. Every change is audited with
actor `cli`; a running hub notices within a few seconds (its user cache), and a disabled
user's sessions are deleted at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .permissions import ROLES, SUPER_ADMIN
from .users import UserError, check_password, hash_password


@asynccontextmanager
async def open_auth(config_dir: Path) -> AsyncIterator[Any]:
    """An AuthManager on the configured database (None after printing why it cannot be)."""
    from hub.offline import open_configured

    from .manager import AuthManager

    async with open_configured(config_dir) as opened:
        if opened is None:
            yield None
            return
        config, db = opened
        hub = SimpleNamespace(config=config, storage=db, devices=[], http=None)
        yield AuthManager(hub, config.get("auth"))


def _read_password() -> str:
    text = sys.stdin.readline()
    return text.rstrip("\r\n")


async def user_add(config_dir: Path, name: str, role: str, projects: list[str],
                   phone: str | None, password_stdin: bool, language: str | None) -> int:
    if role not in ROLES:
        print(f"--role: one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    if not password_stdin:
        print("Give the password on stdin with --password-stdin", file=sys.stderr)
        return 2
    password = _read_password()
    async with open_auth(config_dir) as auth:
        if auth is None:
            return 1
        try:
            check_password(password, auth.settings["password_min_length"])
            unknown = [p for p in projects if p not in auth.tree]
            if unknown:
                print(f"Note: project(s) {', '.join(unknown)} are not in the configured tree",
                      file=sys.stderr)
            user = await auth.users.create(
                name, role, await hash_password(password), projects=projects, phone=phone,
                language=language, created_by="cli",
            )
        except UserError as err:
            print(str(err), file=sys.stderr)
            await auth.audit.record("user.create", "failed", actor="cli", ip="local",
                                    target=name, detail={"reason": str(err)})
            return 2
        await auth.audit.record("user.create", "ok", actor="cli", ip="local", target=user.name,
                                detail={"role": role, "projects": list(user.projects),
                                        "phone": phone})
    print(f"Created {user.role} {user.name} (id {user.id})"
          + ("" if role == SUPER_ADMIN else f", projects {', '.join(user.projects)}"))
    return 0


async def user_passwd(config_dir: Path, name: str, password_stdin: bool) -> int:
    if not password_stdin:
        print("Give the new password on stdin with --password-stdin", file=sys.stderr)
        return 2
    password = _read_password()
    async with open_auth(config_dir) as auth:
        if auth is None:
            return 1
        user = await auth.users.get_by_name(name)
        if user is None:
            print(f"No user named {name!r}", file=sys.stderr)
            return 1
        try:
            check_password(password, auth.settings["password_min_length"])
        except UserError as err:
            print(str(err), file=sys.stderr)
            return 2
        await auth.users.update(user.id, password_hash=await hash_password(password),
                                password_changed_at=auth.clock(), failed_logins=0,
                                locked_until=None)
        ended = await auth.sessions.delete_for_user(user.id)
        await auth.audit.record("user.passwd", "ok", actor="cli", ip="local", target=user.name,
                                detail={"sessions_ended": ended})
    print(f"Password of {name} changed; {ended} session(s) ended")
    return 0


async def user_set_disabled(config_dir: Path, name: str, disabled: bool) -> int:
    async with open_auth(config_dir) as auth:
        if auth is None:
            return 1
        user = await auth.users.get_by_name(name)
        if user is None:
            print(f"No user named {name!r}", file=sys.stderr)
            return 1
        await auth.users.update(user.id, disabled=disabled)
        ended = await auth.sessions.delete_for_user(user.id) if disabled else 0
        await auth.audit.record("user.disable" if disabled else "user.enable", "ok",
                                actor="cli", ip="local", target=user.name,
                                detail={"sessions_ended": ended})
    print(f"User {name} {'disabled' if disabled else 'enabled'}")
    return 0


async def user_list(config_dir: Path, as_json: bool) -> int:
    async with open_auth(config_dir) as auth:
        if auth is None:
            return 1
        users = await auth.users.list()
    if as_json:
        print(json.dumps([u.public() for u in users], ensure_ascii=False, indent=2))
        return 0
    for user in users:
        state = "disabled" if user.disabled else "active"
        print(f"{user.name:<20} {user.role:<15} {state:<9} {','.join(user.projects) or '*'}")
    return 0
