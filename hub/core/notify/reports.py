"""Delivery reports: what the network says became of a message after the channel took it.

A channel that learns it (a modem's `+CDS` status report, a gateway's callback) calls
`hub.notify.async_delivery_report` once per message part. The record's `reference` lists
every part's reference (a long SMS is several segments, each with its own); `reports` lists
those reported delivered, and is a column, so a restart between two reports forgets nothing.
A report can overtake its own record (a fast network answers before the dispatcher wrote
`sent`): it waits here, in memory and bounded, and is applied when the record is marked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .base import STATUS_DELIVERED, STATUS_SENT
from .phones import phone_forms

if TYPE_CHECKING:
    from .manager import NotifyManager

_LOGGER = logging.getLogger(__name__)

#: Reports kept while their record is not yet `sent` (per channel), and for how long (s).
EARLY_REPORTS_MAX = 256
EARLY_REPORTS_AGE = 600.0

_Early = tuple[float, str | None, bool, bool, str | None]


class DeliveryReports:
    def __init__(self, manager: NotifyManager) -> None:
        self.manager = manager
        #: held by the dispatcher while it marks a record sent and replays early reports
        self.lock = asyncio.Lock()
        self.early: dict[str, dict[str, _Early]] = {}

    async def async_report(self, channel: str, reference: str, *,
                           recipient: str | None = None, delivered: bool = True,
                           final: bool = True, reason: str | None = None
                           ) -> dict[str, Any] | None:
        """A channel's delivery report for one message part; the record it changed, if any.

        `reference` is one part's reference (a record of several SMS segments holds them
        comma-separated). Delivered: the part is added to `reports`, and the record becomes
        `delivered` when every part is there. Not delivered and `final`: the record fails
        with the network's reason and the next channel is tried, since the person did not
        get the message. Not final (the network still tries): the reason is noted only.
        A report that arrives before the send was recorded (a fast network) waits briefly in
        memory and is applied when the record is marked `sent`.
        """
        reference = str(reference)
        forms = phone_forms(recipient) if recipient else None
        # the lock orders this against the dispatcher marking a record sent and then calling
        # `replay`: a report either finds its record sent or is kept for that replay
        store = self.manager.store
        async with self.lock:
            lookup = asyncio.get_running_loop().create_task(
                store.sent_with_reference(channel, reference, forms))
            done, _ = await asyncio.wait({lookup}, timeout=self.manager.store_timeout)
            if lookup in done:
                row = lookup.result()
                if row is None:
                    self._keep_early(channel, reference, recipient, delivered, final, reason)
                    return None
                return await self._apply(row, reference, delivered, final, reason)
        # A stalled database: wait without the lock (the dispatcher must go on sending), and
        # after the record writes made meanwhile, so the record is found once it answers.
        await asyncio.gather(lookup, *list(self.manager.writes_in_flight),
                             return_exceptions=True)
        async with self.lock:
            row = await store.sent_with_reference(channel, reference, forms)
            if row is None:
                self._keep_early(channel, reference, recipient, delivered, final, reason)
                return None
            return await self._apply(row, reference, delivered, final, reason)

    async def _apply(self, row: dict[str, Any], reference: str, delivered: bool,
                     final: bool, reason: str | None) -> dict[str, Any]:
        now = self.manager.clock()
        if delivered:
            parts = [p for p in str(row.get("reference") or "").split(",") if p]
            done = [p for p in str(row.get("reports") or "").split(",") if p]
            if reference not in done:
                done.append(reference)
            changes: dict[str, Any] = {"reports": ",".join(done)[:64], "updated_at": now}
            if set(parts) <= set(done):
                changes["status"] = STATUS_DELIVERED
                self.manager.delivered_total += 1
            row.update(changes)
            await self.manager.store.update_delivery(row["id"], changes)
            self.manager.fire(row)
            return row
        if final:
            _LOGGER.warning("Notification %s to %s: %s", row["id"], row["recipient"], reason)
            await self.manager.fail(row, reason or "delivery report: not delivered",
                                    failover=True)
            return row
        row.update(reason=reason, updated_at=now)
        await self.manager.store.update_delivery(row["id"], {"reason": (reason or "")[:500],
                                                             "updated_at": now})
        self.manager.fire(row)
        return row

    def _keep_early(self, channel: str, reference: str, recipient: str | None,
                    delivered: bool, final: bool, reason: str | None) -> None:
        """Keep a report whose record is not `sent` yet (bounded: the oldest go first)."""
        early = self.early.setdefault(channel, {})
        early[reference] = (self.manager.clock(), recipient, delivered, final, reason)
        while len(early) > EARLY_REPORTS_MAX:
            del early[next(iter(early))]

    async def replay(self, row: dict[str, Any]) -> None:
        """Reports that came in before this record was marked `sent`."""
        early = self.early.get(row["channel"])
        if not early:
            return
        now = self.manager.clock()
        for reference in [p for p in str(row.get("reference") or "").split(",") if p]:
            found = early.get(reference)
            if found is None:
                continue
            at, recipient, delivered, final, reason = found
            if now - at > EARLY_REPORTS_AGE or (
                    recipient and row["recipient"] not in phone_forms(recipient)):
                continue
            del early[reference]
            if row["status"] != STATUS_SENT:
                return
            await self._apply(row, reference, delivered, final, reason)

