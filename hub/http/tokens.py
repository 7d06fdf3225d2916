"""Bearer tokens for the API (`voltwatch token create NAME`).

Only the SHA-256 of a token is stored, so a copy of the database does not hand out API access.
A token is 32 random bytes: a fast hash is enough (there is nothing to brute-force), which also
lets a lookup be one indexed equality query on `token_hash`.

Verified tokens are cached in memory for a few seconds (`CACHE_TTL`) so that a busy client does
not cost a database round trip per request. Correctness rules for the cache:

* expiry is re-checked on every hit against the token's `expires_at`, and an entry is never
  cached past it;
* `revoke_token` drops the token from this process's cache at once, so a revocation through
  the hub (API, UI) takes effect on the next request;
* a revocation written by another process (a CLI) takes effect within `CACHE_TTL` seconds.

A token either belongs to a user (`user_id`) and then acts as that user, with a scope no
wider than the user's (`scope` may narrow it to some projects), or it has no user: a *system*
token with super_admin rights over everything. System tokens are what tokens were before users
existed; only the CLI on the hub's own machine (`voltwatch token create NAME` where NAME is no
user) and the demo make them. See docs/security.md.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sys
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub.core.context import ulid_now

_LOGGER = logging.getLogger(__name__)

TOKEN_PREFIX = "vw_"
CACHE_TTL = 5.0
CACHE_MAX = 1024
#: `last_used_at` is refreshed at most this often per token (a write per request would be silly).
LAST_USED_RESOLUTION = 60.0


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a verified token tells the hub about its bearer (never the token or its hash)."""

    id: str
    name: str
    user_id: str | None
    created_at: float
    expires_at: float | None
    last_used_at: float | None = None
    #: Project roots this token is narrowed to; None: its user's whole scope.
    scope: list[str] | None = None

    @property
    def audit_user(self) -> str:
        """The name recorded in a Context: the user when tokens belong to users, else the token."""
        return self.user_id or self.name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _table() -> sa.Table:
    from hub.storage.schema import tokens

    return tokens


class _Cache:
    """Verified tokens by hash, each with the time until which it may be trusted unchecked."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[TokenInfo, float]] = {}

    def get(self, token_hash: str, now: float) -> TokenInfo | None:
        entry = self.entries.get(token_hash)
        if entry is None:
            return None
        info, until = entry
        if until <= now or (info.expires_at is not None and info.expires_at <= now):
            del self.entries[token_hash]
            return None
        return info

    def put(self, token_hash: str, info: TokenInfo, now: float) -> None:
        if len(self.entries) >= CACHE_MAX:
            self.entries.clear()  # simple and bounded; the next requests refill it
        until = now + CACHE_TTL
        if info.expires_at is not None:
            until = min(until, info.expires_at)
        self.entries[token_hash] = (info, until)

    def drop_id(self, token_id: str) -> None:
        for key in [k for k, (info, _) in self.entries.items() if info.id == token_id]:
            del self.entries[key]


# One cache per Database object: two hubs in one process (tests) must not share verdicts.
_caches: weakref.WeakKeyDictionary[Any, _Cache] = weakref.WeakKeyDictionary()


def _cache_for(db: Any) -> _Cache:
    cache = _caches.get(db)
    if cache is None:
        cache = _caches[db] = _Cache()
    return cache


def clear_cache(db: Any) -> None:
    """Forget every cached verdict for this database (after an out-of-band change)."""
    _caches.pop(db, None)


async def create_token(
    db: Any,
    name: str,
    expires_in: float | None = None,
    *,
    user_id: str | None = None,
    scope: list[str] | None = None,
    now: float | None = None,
) -> str:
    """Store a new token and return it in plain text: the only time it is ever visible.

    `user_id=None` makes a SYSTEM token (super_admin over everything): meant for the hub's own
    machine (CLI, demo, tests). A caller with a user must pass it, and the scope it passes must
    already be checked against that user's (`hub.auth`).
    """
    token, _token_id = await create_token_with_id(
        db, name, expires_in, user_id=user_id, scope=scope, now=now
    )
    return token


async def create_token_with_id(
    db: Any,
    name: str,
    expires_in: float | None = None,
    *,
    user_id: str | None = None,
    scope: list[str] | None = None,
    now: float | None = None,
) -> tuple[str, str]:
    """`create_token`, also returning the new token's id (for the audit log and the API)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("A token name must be 1-100 characters")
    if expires_in is not None and expires_in <= 0:
        raise ValueError("A token lifetime must be positive")
    created = time.time() if now is None else now
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = ulid_now()
    async with db.engine.begin() as conn:
        await conn.execute(
            _table()
            .insert()
            .values(
                id=token_id,
                name=name,
                user_id=user_id,
                scope=None if scope is None else sorted(set(scope)),
                token_hash=hash_token(token),
                created_at=created,
                expires_at=None if expires_in is None else created + expires_in,
                revoked_at=None,
                last_used_at=None,
            )
        )
    return token, token_id


async def verify_token(db: Any, token: str | None, *, now: float | None = None) -> TokenInfo | None:
    """The token's owner if it exists, is not revoked and has not expired; else None."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    now = time.time() if now is None else now
    token_hash = hash_token(token)
    cache = _cache_for(db)
    info = cache.get(token_hash, now)
    if info is not None:
        return info
    table = _table()
    async with db.engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(table).where(table.c.token_hash == token_hash)))
            .mappings()
            .first()
        )
    if row is None or row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return None
    info = TokenInfo(
        id=row["id"],
        name=row["name"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        scope=None if row.get("scope") is None else list(row["scope"]),
    )
    if info.last_used_at is None or now - info.last_used_at >= LAST_USED_RESOLUTION:
        async with db.engine.begin() as conn:
            await conn.execute(table.update().where(table.c.id == info.id).values(last_used_at=now))
    cache.put(token_hash, info, now)
    return info


async def revoke_token(db: Any, token_id: str, *, now: float | None = None) -> bool:
    """Revoke by id; effective at once in this process. False when no such live token exists."""
    table = _table()
    async with db.engine.begin() as conn:
        result = await conn.execute(
            table.update()
            .where(table.c.id == token_id, table.c.revoked_at.is_(None))
            .values(revoked_at=time.time() if now is None else now)
        )
    _cache_for(db).drop_id(token_id)
    return bool(result.rowcount)


async def list_tokens(db: Any, user_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Tokens' metadata (never the hash), newest first; only these users' when given."""
    table = _table()
    columns = [c for c in table.c if c.name != "token_hash"]
    statement = sa.select(*columns).order_by(table.c.created_at.desc())
    if user_ids is not None:
        statement = statement.where(table.c.user_id.in_(user_ids))
    async with db.engine.connect() as conn:
        rows = (
            (await conn.execute(statement))
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]


async def create_token_cli(
    config_dir: Path, name: str, expires: str | None, projects: list[str] | None = None
) -> int:
    """`voltwatch token create NAME [--expires 30d] [--project ID ...]`: prints only the token.

    NAME is a user's name when such a user exists: the token acts as that user, narrowed to
    `--project` roots when given (each must lie in the user's scope). Otherwise it is a
    system token (full rights), said so on stderr; `--project` is refused for those.
    """
    import voluptuous as vol

    from hub.core.config import duration

    try:
        expires_in = duration(expires) if expires else None
    except vol.Invalid as err:
        print(f"--expires: {err.msg}", file=sys.stderr)
        return 2
    if expires_in is not None and expires_in <= 0:
        print("--expires: the lifetime must be positive", file=sys.stderr)
        return 2
    from hub.auth.cli import open_auth

    async with open_auth(config_dir) as auth:
        if auth is None:
            return 1
        user = await auth.users.get_by_name(name.strip())
        if user is None and projects:
            print(f"No user named {name!r}: --project narrows a user's token only",
                  file=sys.stderr)
            return 2
        if user is not None and projects:
            scope = auth.scope_for(user)
            outside = [p for p in projects if not scope.can_see(p)]
            if outside:
                print(f"Project(s) {', '.join(outside)} are outside the scope of {user.name}",
                      file=sys.stderr)
                return 2
        if user is not None and user.disabled:
            print(f"User {user.name} is disabled", file=sys.stderr)
            return 2
        try:
            token, token_id = await create_token_with_id(
                auth.hub.storage, name, expires_in,
                user_id=user.id if user else None, scope=projects or None,
            )
        except ValueError as err:
            print(str(err), file=sys.stderr)
            return 2
        await auth.audit.record(
            "token.create", "ok", actor="cli", ip="local", target=name,
            detail={"token_id": token_id, "user": user.name if user else None,
                    "system": user is None, "scope": projects or None, "expires_in": expires_in},
        )
    if user is None:
        print(f"Note: no user named {name!r}; this is a SYSTEM token with full rights.",
              file=sys.stderr)
    print(token)
    return 0


async def revoke_token_cli(config_dir: Path, which: str) -> int:
    """`voltwatch token revoke ID_OR_NAME`: by token id, else every live token of that name."""
    from hub.auth.cli import open_auth

    async with open_auth(config_dir) as auth:
        if auth is None:
            return 1
        db = auth.hub.storage
        live = [t for t in await list_tokens(db) if t["revoked_at"] is None]
        chosen = [t for t in live if t["id"] == which] or [t for t in live if t["name"] == which]
        if not chosen:
            print(f"No live token with id or name {which!r}", file=sys.stderr)
            return 1
        for item in chosen:
            await revoke_token(db, item["id"])
            await auth.audit.record("token.revoke", "ok", actor="cli", ip="local",
                                    target=item["name"], detail={"token_id": item["id"]})
            print(f"Revoked token {item['id']} ({item['name']})")
    return 0
