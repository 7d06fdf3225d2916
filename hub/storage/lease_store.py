"""SQL leases: one owner per named resource across workers sharing one database (issue 12).

Each call is one short transaction. Time is the database's clock (`now()` on PostgreSQL: the
start of the transaction), never a worker's own, so workers whose clocks disagree still agree
on when a lease ran out. The primary key on `name` plus a conditional upsert is the whole
protocol: a claim writes the row only when it is free, expired, already ours, or when the
caller asks to take it over (it holds something newer, e.g. the DTU's fresh socket).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .database import Database
from .schema import leases


class SqlLeaseStore:
    """Claim, renew, release and list leases; `owner` is a worker id."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def _now(self, conn: AsyncConnection) -> float:
        if self._db.dialect == "postgresql":
            result = await conn.execute(select(literal_column("extract(epoch from now())")))
            return float(result.scalar_one())
        return time.time()

    async def claim(self, name: str, owner: str, ttl: float, *, take_over: bool = False,
                    info: dict[str, Any] | None = None) -> tuple[bool, str | None]:
        """Own `name` for `ttl` seconds; returns (owned now, the previous live owner or None).

        Without `take_over` a live lease of another owner wins; with it, the caller takes the
        row (the previous owner finds out at its next renewal).
        """
        owned, previous = await self.claim_many({name: info}, owner, ttl, take_over=take_over)
        return name in owned, previous.get(name)

    async def claim_many(self, names: dict[str, dict[str, Any] | None], owner: str, ttl: float,
                         *, take_over: bool = False) -> tuple[set[str], dict[str, str]]:
        """`claim` for several names in one transaction (a worker restart brings thousands of
        DTUs at once: one transaction each would exhaust the pool). Returns the names owned
        now and, per name, the previous live owner."""
        if not names:
            return set(), {}
        wanted = sorted(names)  # one lock order for every worker: no deadlock between claims
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        async with self._db.engine.begin() as conn:
            now = await self._now(conn)
            previous = {row.name: row.owner for row in await conn.execute(
                select(leases.c.name, leases.c.owner)
                .where(leases.c.name.in_(wanted), leases.c.expires_at > now))}
            stmt = insert(leases).values([
                {"name": name, "owner": owner, "expires_at": now + ttl, "acquired_at": now,
                 "info": names[name]} for name in wanted])
            excluded = stmt.excluded
            condition = None if take_over else or_(
                leases.c.owner == excluded.owner, leases.c.expires_at <= now)
            stmt = stmt.on_conflict_do_update(
                index_elements=[leases.c.name],
                set_={"owner": excluded.owner, "expires_at": excluded.expires_at,
                      "info": excluded.info,
                      "acquired_at": _same_owner_keeps(excluded)},
                where=condition,
            ).returning(leases.c.name, leases.c.owner)
            owned = {row.name for row in await conn.execute(stmt) if row.owner == owner}
        return owned, previous

    async def renew(self, names: Iterable[str], owner: str, ttl: float) -> set[str]:
        """Extend the leases `owner` still holds; returns those names (the others are lost)."""
        wanted = list(names)
        if not wanted:
            return set()
        async with self._db.engine.begin() as conn:
            now = await self._now(conn)
            result = await conn.execute(
                update(leases)
                .where(leases.c.name.in_(wanted), leases.c.owner == owner)
                .values(expires_at=now + ttl)
                .returning(leases.c.name)
            )
            return {row.name for row in result}

    async def release(self, names: Iterable[str], owner: str) -> int:
        """Give up leases; a lease another owner took meanwhile is left alone."""
        wanted = list(names)
        if not wanted:
            return 0
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                delete(leases).where(leases.c.name.in_(wanted), leases.c.owner == owner))
            return int(result.rowcount or 0)

    async def live(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Unexpired leases whose name starts with `prefix`: name -> owner, expires_in, info."""
        async with self._db.engine.begin() as conn:
            now = await self._now(conn)
            result = await conn.execute(
                select(leases.c.name, leases.c.owner, leases.c.expires_at, leases.c.info,
                       leases.c.acquired_at)
                .where(leases.c.name.startswith(prefix, autoescape=True),
                       leases.c.expires_at > now))
            return {row.name: {"owner": row.owner, "expires_in": row.expires_at - now,
                               "held_for": now - row.acquired_at, "info": row.info}
                    for row in result}


def _same_owner_keeps(excluded: Any) -> Any:
    """`acquired_at` stays when the owner renews through a claim, restarts when it changes."""
    from sqlalchemy import case

    return case((leases.c.owner == excluded.owner, leases.c.acquired_at),
                else_=excluded.acquired_at)
