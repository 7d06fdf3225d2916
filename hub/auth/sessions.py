"""Browser sessions: an opaque cookie, its SHA-256 in the database, a CSRF token per session.

The cookie is 32 random bytes; only its hash is stored (like API tokens), so a copy of the
database does not let anyone in. The cookie is HttpOnly (scripts cannot read it), SameSite=
Strict (other sites cannot make the browser send it) and Secure when the hub is reached over
https (`http.secure_cookies`).

CSRF: the synchronizer-token pattern (OWASP). Login answers with a random token kept in the
session row; every state-changing request authenticated by the cookie must repeat it in the
`X-CSRF-Token` header, which a page on another site can neither read nor set. Bearer-token
requests are exempt: browsers never attach a bearer header by themselves.

A session ends at `expires_at` (absolute lifetime) or after `idle` seconds without a request,
whichever is first; logout and a password change delete it at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

COOKIE_NAME = "voltwatch_session"
CSRF_HEADER = "X-CSRF-Token"
#: `last_seen_at` is written at most this often per session (not a write per request).
LAST_SEEN_RESOLUTION = 60.0


def hash_session(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # the hash
    user_id: str
    created_at: float
    expires_at: float
    last_seen_at: float | None
    csrf_token: str
    ip: str | None
    user_agent: str | None

    def csrf_matches(self, given: str | None) -> bool:
        return bool(given) and secrets.compare_digest(self.csrf_token, str(given))


def _table() -> sa.Table:
    from hub.storage.schema import sessions

    return sessions


class SessionStore:
    def __init__(self, db: Any) -> None:
        self.db = db

    async def create(
        self, user_id: str, now: float, lifetime: float, ip: str | None, user_agent: str | None
    ) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown once) and the stored session."""
        cookie = secrets.token_urlsafe(32)
        session = Session(
            id=hash_session(cookie),
            user_id=user_id,
            created_at=now,
            expires_at=now + lifetime,
            last_seen_at=now,
            csrf_token=secrets.token_urlsafe(32),
            ip=(ip or "")[:64] or None,
            user_agent=(user_agent or "")[:255] or None,
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(_table().insert().values(**_values(session)))
        return cookie, session

    async def get(self, cookie: str, now: float, idle: float | None) -> Session | None:
        """The live session for a cookie; an expired or idle one is deleted and None."""
        if not cookie or len(cookie) > 128:
            return None
        table = _table()
        session_id = hash_session(cookie)
        async with self.db.engine.connect() as conn:
            row = (
                (await conn.execute(sa.select(table).where(table.c.id == session_id)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        session = Session(**dict(row))
        seen = session.last_seen_at or session.created_at
        if session.expires_at <= now or (idle is not None and seen + idle <= now):
            await self.delete(session.id)
            return None
        if now - seen >= LAST_SEEN_RESOLUTION:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    table.update().where(table.c.id == session.id).values(last_seen_at=now)
                )
        return session

    async def delete(self, session_id: str) -> None:
        table = _table()
        async with self.db.engine.begin() as conn:
            await conn.execute(table.delete().where(table.c.id == session_id))

    async def delete_for_user(self, user_id: str, keep: str | None = None) -> int:
        """End every session of a user (password change, disabling), except `keep`."""
        table = _table()
        where = table.c.user_id == user_id
        if keep is not None:
            where = sa.and_(where, table.c.id != keep)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(table.delete().where(where))
        return int(result.rowcount or 0)

    async def purge_expired(self, now: float) -> None:
        table = _table()
        async with self.db.engine.begin() as conn:
            await conn.execute(table.delete().where(table.c.expires_at <= now))


def _values(session: Session) -> dict[str, Any]:
    return {name: getattr(session, name) for name in Session.__slots__}
