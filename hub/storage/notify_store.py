"""Persistence of notifications: delivery records, subscriptions, running escalations.

Every change of a delivery's status is one short transaction: the record is what the API
shows and what a restart resumes, so it must be written before the next step is taken (a
message marked `sending` that the hub never saw come back is resumed as queued: SMS is
at-least-once, a duplicate beats a lost alarm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, desc, func, insert, or_, select, update

from .database import Database
from .schema import notify_deliveries, notify_escalations, notify_subscriptions

_LOGGER = logging.getLogger(__name__)

OPEN_STATUSES = ("queued", "sending")


def _subscription_defaults() -> dict[str, Any]:
    """A subscription row's columns with their defaults, as a read of the row would show the
    ones an insert left out (a listener gets the whole row, not what the caller passed)."""
    out: dict[str, Any] = {}
    for column in notify_subscriptions.columns:
        default = column.default
        if default is None:
            out[column.name] = None
        elif getattr(default, "is_callable", False):
            out[column.name] = default.arg(None)  # type: ignore[attr-defined]
        else:
            out[column.name] = getattr(default, "arg", None)
    return out


class SqlNotifyStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        #: moves on every subscription write (hub/core/notify/directory.py caches them)
        self.subscriptions_version = 0
        #: called after each subscription write of this process: ("insert", row with its id)
        #: or ("delete", id); the notification directory patches its lists with it
        self.subscription_written: list[Callable[[str, Any], None]] = []

    async def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(stmt)).mappings()]

    # -- deliveries -------------------------------------------------------------------------
    async def insert_delivery(self, row: dict[str, Any]) -> int:
        values = {k: v for k, v in row.items() if k != "id"}
        async with self._db.engine.begin() as conn:
            result = await conn.execute(insert(notify_deliveries).values(**values))
            return int(result.inserted_primary_key[0])

    async def update_delivery(self, delivery_id: int, changes: dict[str, Any]) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(update(notify_deliveries)
                               .where(notify_deliveries.c.id == delivery_id).values(**changes))

    async def update_many(self, ids: Sequence[int], changes: dict[str, Any]) -> None:
        if not ids:
            return
        async with self._db.engine.begin() as conn:
            await conn.execute(update(notify_deliveries)
                               .where(notify_deliveries.c.id.in_(list(ids))).values(**changes))

    async def open_deliveries(self) -> list[dict[str, Any]]:
        t = notify_deliveries
        return await self._rows(select(t).where(t.c.status.in_(OPEN_STATUSES)).order_by(t.c.id))

    async def held(self, recipient: str | None = None,
                   due_before: float | None = None) -> list[dict[str, Any]]:
        t = notify_deliveries
        stmt = select(t).where(t.c.status == "held")
        if recipient is not None:
            stmt = stmt.where(t.c.recipient == recipient)
        if due_before is not None:
            stmt = stmt.where(t.c.next_attempt_at <= due_before)
        return await self._rows(stmt.order_by(t.c.id))

    async def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = await self._rows(select(notify_deliveries)
                                .where(notify_deliveries.c.id == delivery_id))
        return rows[0] if rows else None

    async def list_deliveries(self, *, projects: frozenset[str] | None, status: list[str] | None,
                              alarm_id: int | None, recipient: str | None, limit: int,
                              offset: int) -> list[dict[str, Any]]:
        """Newest first; `projects` None = every row, else only rows of those projects."""
        t = notify_deliveries
        stmt = select(t)
        if projects is not None:
            stmt = stmt.where(t.c.project.in_(sorted(projects)))
        if status:
            stmt = stmt.where(t.c.status.in_(status))
        if alarm_id is not None:
            stmt = stmt.where(t.c.alarm_id == alarm_id)
        if recipient is not None:
            stmt = stmt.where(t.c.recipient == recipient)
        return await self._rows(stmt.order_by(desc(t.c.id)).limit(limit).offset(offset))

    async def latest_alarm_sent_to(self, recipients: Sequence[str]) -> dict[str, Any] | None:
        """The newest alarm message handed to a modem/gateway for any of these numbers."""
        t = notify_deliveries
        rows = await self._rows(
            select(t).where(t.c.recipient.in_(list(recipients)), t.c.alarm_id.is_not(None),
                            t.c.status.in_(("sent", "delivered")))
            .order_by(desc(t.c.sent_at), desc(t.c.id)).limit(1)
        )
        return rows[0] if rows else None

    async def sent_with_reference(self, channel: str, reference: str,
                                  recipients: Sequence[str] | None = None
                                  ) -> dict[str, Any] | None:
        """The newest `sent` record of `channel` whose reference list holds `reference`.

        A modem's message references wrap at 256, so the newest one wins; the recipient of
        the report narrows it further when given.
        """
        t = notify_deliveries
        ref = t.c.reference
        stmt = select(t).where(
            t.c.channel == channel, t.c.status == "sent",
            or_(ref == reference, ref.like(f"{reference},%"), ref.like(f"%,{reference}"),
                ref.like(f"%,{reference},%")))
        if recipients:
            stmt = stmt.where(t.c.recipient.in_(list(recipients)))
        rows = await self._rows(stmt.order_by(desc(t.c.sent_at), desc(t.c.id)).limit(1))
        return rows[0] if rows else None

    async def count_by_channel(self, projects: frozenset[str] | None
                               ) -> dict[str, dict[str, int]]:
        """{channel: {status: records}}; `projects` None = every row, else those projects."""
        t = notify_deliveries
        stmt = select(t.c.channel, t.c.status, func.count().label("n"))
        if projects is not None:
            stmt = stmt.where(t.c.project.in_(sorted(projects)))
        out: dict[str, dict[str, int]] = {}
        for row in await self._rows(stmt.group_by(t.c.channel, t.c.status)):
            out.setdefault(row["channel"], {})[row["status"]] = int(row["n"])
        return out

    async def count_by_status(self) -> dict[str, int]:
        t = notify_deliveries
        rows = await self._rows(select(t.c.status, func.count().label("count"))
                                .group_by(t.c.status))
        return {row["status"]: int(row["count"]) for row in rows}

    # -- subscriptions ----------------------------------------------------------------------
    async def subscriptions(self, user_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        t = notify_subscriptions
        stmt = select(t)
        if user_ids is not None:
            stmt = stmt.where(t.c.user_id.in_(list(user_ids)))
        return await self._rows(stmt.order_by(t.c.id))

    async def get_subscription(self, sub_id: int) -> dict[str, Any] | None:
        rows = await self._rows(select(notify_subscriptions)
                                .where(notify_subscriptions.c.id == sub_id))
        return rows[0] if rows else None

    async def insert_subscription(self, row: dict[str, Any]) -> int:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(insert(notify_subscriptions).values(**row))
        self.subscriptions_version += 1
        sub_id = int(result.inserted_primary_key[0])
        self._tell("insert", {**_subscription_defaults(), **row, "id": sub_id})
        return sub_id

    async def delete_subscription(self, sub_id: int) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(notify_subscriptions)
                               .where(notify_subscriptions.c.id == sub_id))
        self.subscriptions_version += 1
        self._tell("delete", sub_id)

    def _tell(self, action: str, what: Any) -> None:
        for listener in list(self.subscription_written):
            try:
                listener(action, what)
            except Exception:  # a cache must not fail the write that succeeded
                _LOGGER.exception("A subscription-write listener failed")

    # -- escalations ------------------------------------------------------------------------
    async def escalations(self) -> list[dict[str, Any]]:
        return await self._rows(select(notify_escalations))

    async def save_escalation(self, row: dict[str, Any]) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(notify_escalations)
                               .where(notify_escalations.c.alarm_id == row["alarm_id"]))
            await conn.execute(insert(notify_escalations).values(**row))

    async def delete_escalation(self, alarm_id: int) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(notify_escalations)
                               .where(notify_escalations.c.alarm_id == alarm_id))
