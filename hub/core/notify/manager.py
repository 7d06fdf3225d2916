"""`hub.notify`: notifiers, their queues, delivery records, retries and failover.

Why it is built this way:

* **One queue and one worker per notifier.** A modem that takes 5 s per message, or hangs,
  delays only its own queue; the HTTP gateway's worker goes on. (Home Assistant's notify
  group awaits its members in turn, so one slow member delays the rest.)
* **A failure is never silent.** Every message is a delivery record before it is sent; each
  attempt updates it (attempts, reason). When retries on a channel are used up, or the
  channel is gone (`Notifier.available` False, `DeliveryError(unavailable=True)`), a new
  record goes to the next channel of the chain (`fallback:` or the next `notify:` entry) and
  points back at the failed one. When no channel is left the record stays `failed` with its
  reason and an error is logged; the alarm itself is in the alarm table regardless.
* **Restart-safe.** Queued and sending records are resumed at start (at-least-once: an SMS
  the modem took just before a crash may go twice, which beats losing it). Held messages
  (quiet hours, rate limit) are rows too, summarised when due; escalation chains are rows.
* **A stalled database does not hold a message.** Writing a delivery record (insert and every
  update) is awaited at most `store_timeout` seconds (default 2); then the message goes on
  with a provisional negative id and the writes complete, in order, when the database answers
  (the record then takes its real id, announced by a `notification_delivery` event). An alarm
  announced before its own row exists (`provisional`, hub/core/alarms.py) is sent with
  `alarm_id` None; when `alarm_updated` brings its id (same `ref`) the records are given it
  (so "reply 1" finds it) and escalation begins.
* **Time is injectable.** Summaries and escalations run off `clock` and `run_due()`, so tests
  move a fake clock instead of sleeping; retries use the loop's timer with the configured
  backoff (a small one in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import voluptuous as vol

from ..context import Context
from ..events import Event, callback
from ..services import ServiceValidationError
from ..states import iso
from .base import (
    EVENT_NOTIFICATION,
    EVENT_NOTIFY_REPLY,
    KIND_MANUAL,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_HELD,
    STATUS_QUEUED,
    STATUS_SENDING,
    STATUS_SENT,
    DeliveryError,
    Notifier,
    OutgoingMessage,
)
from .directory import Directory
from .phones import DIGITS as _DIGITS
from .phones import phone_forms
from .reports import DeliveryReports
from .templates import Templates

_LOGGER = logging.getLogger(__name__)

#: The manager's default time source; tests pass their own `clock`.
CLOCK: Callable[[], float] = time.time
DEFAULT_STORE_TIMEOUT = 2.0


def delivery_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A delivery record as the API and the bus show it (times ISO 8601 UTC)."""
    out = {k: row.get(k) for k in (
        "id", "alarm_id", "project", "recipient", "user_name", "channel", "kind", "status",
        "attempts", "reason", "title", "message", "language", "severity", "fallback_of",
        "reference", "reports")}
    for key in ("created_at", "updated_at", "sent_at", "next_attempt_at"):
        value = row.get(key)
        out[key] = iso(value) if value is not None else None
    return out


class NotifyManager:
    """See the module docstring."""

    def __init__(self, hub: Any, settings: dict[str, Any], notify: list[dict[str, Any]],
                 store: Any, clock: Callable[[], float] | None = None) -> None:
        self.hub = hub
        self.settings = settings or {}
        self.notify_config = notify or []
        self.store = store
        self.clock: Callable[[], float] = clock or CLOCK
        self.templates = Templates(getattr(hub, "config_dir", None) and
                                   hub.config_dir / "notify_templates")
        self.notifiers: dict[str, Notifier] = {}
        self.order: list[str] = [entry["name"] for entry in self.notify_config]
        self._conf: dict[str, dict[str, Any]] = {e["name"]: e for e in self.notify_config}
        self._queues: dict[str, asyncio.Queue[int]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._pending: dict[int, dict[str, Any]] = {}
        self._retry_handles: dict[int, asyncio.TimerHandle] = {}
        self._timers: list[tuple[float, int, str, Any]] = []
        self._timer_seq = 0
        self._timer_handle: asyncio.TimerHandle | None = None
        self._unsubs: list[Callable[[], None]] = []
        self._running = False
        self._due_lock = asyncio.Lock()
        self.directory = Directory(hub, store)
        self.router: Any = None
        self.escalation: Any = None
        self.sent_total = 0
        self.failed_total = 0
        self.delivered_total = 0
        self.reports = DeliveryReports(self)
        #: the latest failed attempt per channel: (when, reason)
        self.last_failure: dict[str, tuple[float, str]] = {}
        self.store_timeout = float(self.settings.get("store_timeout", DEFAULT_STORE_TIMEOUT))
        self.directory.stale_timeout = self.store_timeout
        #: delivery-record writes that outlasted `store_timeout` (went on in the background)
        self.deferred_writes = 0
        #: failed delivery-record writes (each is retried while the manager runs)
        self.write_failures = 0
        #: delivery-record writes not finished yet (a delivery report waits for them)
        self.writes_in_flight: set[asyncio.Task[Any]] = set()
        self._next_provisional = 0
        #: provisional id -> real id, for ids still in a queue or a retry timer
        self._alias: dict[int, int] = {}
        #: provisional id -> its insert, still waiting for the database
        self._inserting: dict[int, asyncio.Task[Any]] = {}
        #: a provisional alarm's `ref` -> its delivery rows, until alarm_updated brings the id
        self._alarm_rows: dict[str, list[dict[str, Any]]] = {}
        #: refs being routed now, and ids that arrived while they were
        self._routing: set[str] = set()
        self._alarm_ids: dict[str, dict[str, Any]] = {}

    # -- lifecycle --------------------------------------------------------------------------
    async def async_start(self) -> None:
        """Create and start every configured notifier, resume open deliveries, listen."""
        platforms = self.hub.plugins.merged_dict("voltwatch_notifiers")
        for entry in self.notify_config:
            found = platforms.get(entry["platform"])
            if found is None:
                _LOGGER.error("Notifier %s: platform %s is not installed", entry["name"],
                              entry["platform"])
                continue
            try:
                notifier = found[1](self.hub, entry)
                await notifier.async_start()
            except Exception:
                _LOGGER.exception("Notifier %s failed to start", entry["name"])
                continue
            self.notifiers[entry["name"]] = notifier
        loop = asyncio.get_running_loop()
        for name in self.order:
            self._queues[name] = asyncio.Queue()
            self._workers.append(loop.create_task(self._worker(name), name=f"notify {name}"))
        self._running = True
        from .escalation import Escalation
        from .router import Router

        self.router = Router(self)
        if self.store is not None:
            # read once now: during a later database stall routing can use these lists
            try:
                await self.directory.users()
            except Exception:
                _LOGGER.exception("Notification recipients could not be read at start")
        self.escalation = Escalation(self, self.settings.get("escalation") or {})
        if self.store is not None:
            for row in await self.store.open_deliveries():
                row["status"] = STATUS_QUEUED
                self._pending[int(row["id"])] = row
                self._enqueue(row)
            for row in await self.store.held():
                self.schedule(float(row["next_attempt_at"] or self.clock()), "summary",
                              row["recipient"])
            await self.escalation.async_load()
        bus = self.hub.bus
        self._unsubs = [
            bus.listen("alarm_raised", self._on_alarm_raised),
            bus.listen("alarm_updated", self._on_alarm_updated),
            bus.listen("alarm_acknowledged", self._on_alarm_done),
            bus.listen("alarm_cleared", self._on_alarm_done),
        ]
        self._register_services()
        self._arm()

    async def async_stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        for handle in self._retry_handles.values():
            handle.cancel()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001, S110 - stopping: a worker's end is not news
                pass
        self._workers = []
        for name, notifier in self.notifiers.items():
            try:
                await notifier.async_stop()
            except Exception:
                _LOGGER.exception("Notifier %s failed to stop", name)
        for service in list(self.hub.services.services().get("notify", {})):
            self.hub.services.remove("notify", service)

    # -- chains -----------------------------------------------------------------------------
    def next_channel(self, name: str, tried: Iterable[str]) -> str | None:
        """The channel after `name`: its `fallback:`, else the next entry of `notify:`."""
        tried = set(tried) | {name}
        conf = self._conf.get(name, {})
        fallback = conf.get("fallback")
        if fallback and fallback not in tried:
            return str(fallback)
        if fallback is None and "fallback" in conf:
            return None  # `fallback: null` ends the chain here
        if name in self.order:
            for candidate in self.order[self.order.index(name) + 1:]:
                if candidate not in tried:
                    return candidate
        return None

    def first_channel(self, wanted: Iterable[str] | None = None) -> str | None:
        wanted = [w for w in (wanted or []) if w in self._conf]
        if wanted:
            return wanted[0]
        return self.order[0] if self.order else None

    # -- sending ----------------------------------------------------------------------------
    async def async_send(self, recipient: str, text: str, *, channel: str | None = None,
                         kind: str = KIND_MANUAL, alarm_id: int | None = None,
                         project: str | None = None, user_name: str | None = None,
                         language: str | None = None, severity: str | None = None,
                         title: str | None = None, hold_until: float | None = None,
                         fallback_of: int | None = None,
                         reason: str | None = None) -> dict[str, Any]:
        """Record one message and queue it (or hold it until `hold_until` for a summary)."""
        channel = channel or self.first_channel()
        if channel is None:
            raise DeliveryError("no notifier is configured", retryable=False)
        now = self.clock()
        row: dict[str, Any] = {
            "created_at": now, "updated_at": now, "sent_at": None, "alarm_id": alarm_id,
            "project": project, "recipient": recipient, "user_name": user_name,
            "channel": channel, "kind": kind,
            "status": STATUS_HELD if hold_until is not None else STATUS_QUEUED,
            "attempts": 0, "reason": reason, "title": title, "message": text,
            "language": language or self.hub.language, "severity": severity,
            "next_attempt_at": hold_until, "fallback_of": fallback_of, "reference": None,
        }
        await self._insert(row)
        self.fire(row)
        if hold_until is not None:
            self.schedule(hold_until, "summary", recipient)
        else:
            self._pending[row["id"]] = row
            self._enqueue(row)
        return row

    def _enqueue(self, row: dict[str, Any]) -> None:
        queue = self._queues.get(row["channel"])
        if queue is None:
            # a channel removed from the configuration since: hand it on, never drop it
            self._queues[row["channel"]] = queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._orphan(row), name="notify orphan")
            return
        queue.put_nowait(int(row["id"]))

    # -- delivery-record writes: in order per record, bounded by `store_timeout` -------------
    def _chain(self, row: dict[str, Any], write: Callable[[], Any]) -> asyncio.Task[Any]:
        """Run `write()` after the record's previous write (so a late insert still precedes
        its updates, and updates land in the order they were made)."""
        previous = row.get("_write")

        async def run() -> Any:
            if previous is not None and not previous.done():
                try:
                    await asyncio.shield(previous)
                except Exception:  # noqa: BLE001, S110 - logged by its own callback
                    pass
            backoff = 0.05
            while True:
                try:
                    return await write()
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    # the database may come back: a record is not given up while running
                    self.write_failures += 1
                    if not self._running:
                        raise
                    if self.write_failures % 10 == 1:
                        _LOGGER.error("Delivery record %s: write failed (%s: %s); retrying",
                                      row["id"], type(err).__name__, err)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

        task = asyncio.get_running_loop().create_task(run(), name=f"notify write {row['id']}")
        row["_write"] = task
        self.writes_in_flight.add(task)
        task.add_done_callback(self._write_done)
        return task

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self.writes_in_flight.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:
            _LOGGER.error("Delivery record write failed (%s: %s)", type(err).__name__, err)

    async def _bounded(self, task: asyncio.Task[Any], row: dict[str, Any]) -> bool:
        """Wait for a write at most `store_timeout`; True when it is done (errors raised)."""
        done, _ = await asyncio.wait({task}, timeout=self.store_timeout)
        if task in done:
            task.result()
            return True
        self.deferred_writes += 1
        if self.deferred_writes % 20 == 1:
            _LOGGER.warning("Delivery record %s to %s: the database did not answer within "
                            "%g s; the message goes on, the record is written when it does",
                            row["id"], row["recipient"], self.store_timeout)
        return False

    async def _insert(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k != "id" and not k.startswith("_")}

        async def write() -> int:
            parent = values.get("fallback_of")
            if parent is not None and parent < 0:
                # failover from a record not written yet: point at its real id
                writing = self._inserting.get(parent)
                if writing is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(writing)
                values["fallback_of"] = self._alias.get(parent)
            new_id = await self.store.insert_delivery(values)
            old = row.get("id")
            row["id"] = new_id
            if old is not None and old != new_id:  # it went on with a provisional id
                self._alias[old] = new_id
                if old in self._pending:
                    self._pending[new_id] = self._pending.pop(old)
                handle = self._retry_handles.pop(old, None)
                if handle is not None:
                    self._retry_handles[new_id] = handle
                self.fire(row)
            return new_id

        row["id"] = None
        task = self._chain(row, write)
        if not await self._bounded(task, row) and row["id"] is None:  # not written meanwhile
            self._next_provisional -= 1
            row["id"] = provisional = self._next_provisional
            self._inserting[provisional] = task
            task.add_done_callback(lambda _t: self._inserting.pop(provisional, None))

    async def _save(self, row: dict[str, Any], changes: dict[str, Any]) -> None:
        """Update the record's columns; bounded like the insert, in order after it."""
        await self._bounded(self._chain(row, lambda: self.store.update_delivery(row["id"],
                                                                                changes)), row)

    async def _orphan(self, row: dict[str, Any]) -> None:
        await self.fail(row, f"notifier {row['channel']} is not configured", failover=True)

    async def _worker(self, name: str) -> None:
        queue = self._queues[name]
        while True:
            delivery_id = await queue.get()
            delivery_id = self._alias.get(delivery_id, delivery_id)
            row = self._pending.get(delivery_id)
            if row is None or row["status"] != STATUS_QUEUED:
                continue
            try:
                await self._attempt(name, row)
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("Notifier %s: delivery %s crashed", name, delivery_id)

    async def _attempt(self, name: str, row: dict[str, Any]) -> None:
        notifier = self.notifiers.get(name)
        if notifier is None:
            await self.fail(row, f"notifier {name} did not start", failover=True)
            return
        if not notifier.available:
            row["attempts"] += 1
            # the channel's own trouble says which device (a modem names its port)
            trouble = notifier.last_error
            reason = f"{name} unavailable" + (f" ({trouble})" if trouble else "")
            await self.fail(row, reason, failover=True)
            return
        row["status"] = STATUS_SENDING
        row["attempts"] += 1
        row["updated_at"] = self.clock()
        await self._save(row, {"status": STATUS_SENDING, "attempts": row["attempts"],
                               "updated_at": row["updated_at"]})
        message = OutgoingMessage(recipient=row["recipient"], text=row["message"],
                                  title=row.get("title"), delivery_id=row["id"],
                                  alarm_id=row.get("alarm_id"),
                                  language=row.get("language") or "zh-CN",
                                  severity=row.get("severity"))
        timeout = float(self._conf.get(name, {}).get("timeout", 30.0))
        try:
            result = await asyncio.wait_for(notifier.async_send(message), timeout)
        except DeliveryError as err:
            await self._failed_attempt(name, row, err.reason, err.retryable, err.unavailable)
            return
        except TimeoutError:
            await self._failed_attempt(name, row, f"no answer within {timeout:g} s", True, False)
            return
        except Exception as err:  # noqa: BLE001 - a notifier bug is a failed attempt, not a loss
            await self._failed_attempt(name, row, f"{type(err).__name__}: {err}", True, False)
            return
        async with self.reports.lock:
            now = self.clock()
            row.update(status=STATUS_DELIVERED if result.delivered else STATUS_SENT,
                       sent_at=now, updated_at=now, reference=result.reference, reason=None)
            await self._save(row, {
                "status": row["status"], "sent_at": now, "updated_at": now,
                "reference": result.reference, "reason": None})
            self._pending.pop(row["id"], None)
            self.sent_total += 1
            self.fire(row)
            await self.reports.replay(row)

    async def _failed_attempt(self, name: str, row: dict[str, Any], reason: str,
                              retryable: bool, unavailable: bool) -> None:
        self.last_failure[name] = (self.clock(), reason)
        conf = self._conf.get(name, {})
        retries = int(conf.get("retries", 2))
        if retryable and not unavailable and row["attempts"] <= retries and self._running:
            backoff = float(conf.get("retry_backoff", 2.0)) * (2 ** (row["attempts"] - 1))
            row.update(status=STATUS_QUEUED, reason=reason, updated_at=self.clock(),
                       next_attempt_at=self.clock() + backoff)
            await self._save(row, {
                "status": STATUS_QUEUED, "reason": reason[:500], "updated_at": row["updated_at"],
                "next_attempt_at": row["next_attempt_at"]})
            self.fire(row)
            loop = asyncio.get_running_loop()
            self._retry_handles[row["id"]] = loop.call_later(backoff, self._retry, row["id"])
            return
        await self.fail(row, reason, failover=True)

    def _retry(self, delivery_id: int) -> None:
        delivery_id = self._alias.get(delivery_id, delivery_id)
        self._retry_handles.pop(delivery_id, None)
        row = self._pending.get(delivery_id)
        if row is not None and self._running:
            self._enqueue(row)

    async def fail(self, row: dict[str, Any], reason: str, failover: bool) -> None:
        now = self.clock()
        self.last_failure[row["channel"]] = (now, reason)
        row.update(status=STATUS_FAILED, reason=reason, updated_at=now, next_attempt_at=None)
        await self._save(row, {
            "status": STATUS_FAILED, "reason": reason[:500], "updated_at": now,
            "attempts": row["attempts"], "next_attempt_at": None})
        self._pending.pop(row["id"], None)
        self.failed_total += 1
        self.fire(row)
        if not failover:
            return
        tried = await self._tried_channels(row)
        nxt = self.next_channel(row["channel"], tried)
        if nxt is None:
            _LOGGER.error("Notification %s to %s failed on every channel (%s): %s", row["id"],
                          row["recipient"], ", ".join(sorted(tried)), reason)
            return
        _LOGGER.warning("Notification %s: %s failed (%s); trying %s", row["id"], row["channel"],
                        reason, nxt)
        following = await self.async_send(
            row["recipient"], row["message"], channel=nxt, kind=row["kind"],
            alarm_id=row.get("alarm_id"), project=row.get("project"),
            user_name=row.get("user_name"), language=row.get("language"),
            severity=row.get("severity"), title=row.get("title"), fallback_of=row["id"])
        following["_tried"] = tried  # the next failover needs no read (a stalled database)
        ref = row.get("_alarm_ref")
        if ref is not None and following.get("alarm_id") is None:
            # the failed record belongs to an alarm announced before it was stored
            following["_alarm_ref"] = ref
            waiting = self._alarm_rows.get(ref)
            if waiting is not None:
                waiting.append(following)
            elif row.get("alarm_id") is not None:  # it got its id meanwhile
                following["alarm_id"] = row["alarm_id"]
                await self._save(following, {"alarm_id": row["alarm_id"]})

    async def _tried_channels(self, row: dict[str, Any]) -> set[str]:
        if "_tried" in row:
            return {*row["_tried"], row["channel"]}
        tried = {row["channel"]}
        parent = row.get("fallback_of")
        while parent is not None and len(tried) < 64:
            found = await self.store.get_delivery(int(parent))
            if found is None:
                break
            tried.add(found["channel"])
            parent = found.get("fallback_of")
        return tried

    async def async_delivery_report(self, channel: str, reference: str, *,
                                    recipient: str | None = None, delivered: bool = True,
                                    final: bool = True, reason: str | None = None
                                    ) -> dict[str, Any] | None:
        """A channel's delivery report for one message part (see reports.py); the record it
        changed, if any."""
        return await self.reports.async_report(channel, reference, recipient=recipient,
                                               delivered=delivered, final=final,
                                               reason=reason)

    def fire(self, row: dict[str, Any]) -> None:
        self.hub.bus.async_fire(EVENT_NOTIFICATION, delivery_dict(row))

    # -- replies ----------------------------------------------------------------------------
    async def async_reply(self, sender: str, text: str, channel: str | None = None
                          ) -> dict[str, Any]:
        """An incoming message: "1" or "确认" acknowledges the alarm last sent to `sender`.

        The sender is recorded in the audit log whatever the outcome, so an acknowledgement by
        SMS is as traceable as one in the web UI.
        """
        words = {w.strip().lower() for w in self.settings.get("ack_words", ["1", "确认"])}
        body = (text or "").strip()
        forms = phone_forms(sender)
        user = await self._user_by_phone(forms)
        actor = user.name if user is not None else f"sms:{sender}"
        result: dict[str, Any] = {"sender": sender, "text": body, "channel": channel,
                                  "alarm_id": None, "action": "ignored", "user": actor}
        audit = getattr(getattr(self.hub, "auth", None), "audit", None)
        if body.lower() not in words:
            if audit is not None:
                await audit.record("notify.reply", "ignored", actor=actor,
                                   actor_role=getattr(user, "role", None),
                                   detail={"sender": sender, "text": body[:200],
                                           "channel": channel})
            self.hub.bus.async_fire(EVENT_NOTIFY_REPLY, result)
            return result
        last = await self.store.latest_alarm_sent_to(forms)
        if last is None:
            result["action"] = "no_alarm"
            if audit is not None:
                await audit.record("notify.reply", "failed", actor=actor,
                                   detail={"sender": sender, "text": body[:200],
                                           "reason": "no alarm was sent to this number",
                                           "channel": channel})
            self.hub.bus.async_fire(EVENT_NOTIFY_REPLY, result)
            return result
        alarm_id = int(last["alarm_id"])
        result["alarm_id"] = alarm_id
        context = Context(user_id=actor)
        answer = await self.hub.alarms.async_acknowledge(
            [alarm_id], note=f"SMS reply from {sender}", context=context)
        result["action"] = "acknowledged" if answer["done"] else "already_acknowledged"
        if audit is not None:
            await audit.record("notify.reply_ack", "ok" if answer["done"] else "unchanged",
                               actor=actor, actor_role=getattr(user, "role", None),
                               target=f"alarm {alarm_id}", project=last.get("project"),
                               detail={"sender": sender, "text": body[:200], "channel": channel,
                                       "delivery_id": last["id"]},
                               context_id=context.id)
        self.hub.bus.async_fire(EVENT_NOTIFY_REPLY, result)
        return result

    async def _user_by_phone(self, forms: list[str]) -> Any:
        auth = getattr(self.hub, "auth", None)
        if auth is None:
            return None
        wanted = {_DIGITS.sub("", f)[-11:] for f in forms}
        for user in await self.directory.users():
            if user.phone and _DIGITS.sub("", user.phone)[-11:] in wanted and not user.disabled:
                return user
        return None

    # -- alarms -----------------------------------------------------------------------------
    @callback
    def _on_alarm_raised(self, event: Event) -> None:
        if not self._running:
            return
        data = dict(event.data)
        asyncio.get_running_loop().create_task(self._alarm_raised(data),
                                               name=f"notify alarm {data.get('id')}")

    async def _alarm_raised(self, alarm: dict[str, Any]) -> None:
        ref = alarm.get("ref") if alarm.get("id") is None else None
        try:
            if ref is None:
                await self.router.async_route(alarm)
                await self.escalation.async_begin(alarm)
                return
            # Announced before its row was written (a stalled database): send now, give the
            # records the alarm's id when alarm_updated brings it (then escalation begins).
            # Records made meanwhile (a failover) join the list (see `fail`).
            self._alarm_rows[ref] = waiting = []
            self._routing.add(ref)
            try:
                rows = await self.router.async_route(alarm)
            finally:
                self._routing.discard(ref)
            for row in rows:
                row["_alarm_ref"] = ref
            waiting.extend(rows)
            stored = self._alarm_ids.pop(ref, None)
            if stored is not None:
                self._alarm_rows.pop(ref, None)
                self._link(stored, waiting)
        except Exception:
            _LOGGER.exception("Notifications for alarm %s failed", alarm.get("id") or ref)

    @callback
    def _on_alarm_updated(self, event: Event) -> None:
        ref = event.data.get("ref")
        if not ref or not self._running or event.data.get("id") is None:
            return
        if ref in self._routing:  # linked when routing is done
            self._alarm_ids[ref] = dict(event.data)
            return
        rows = self._alarm_rows.pop(ref, None)
        if rows is not None:
            self._link(dict(event.data), rows)

    def _link(self, alarm: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """A provisional alarm got its row: its delivery records get its id (at once in
        memory, so a failover made from now on carries it; in the database when it can)."""
        alarm_id = int(alarm["id"])
        for row in rows:
            row["alarm_id"] = alarm_id
        asyncio.get_running_loop().create_task(self._alarm_stored(alarm, rows),
                                               name=f"notify alarm {alarm_id} stored")

    async def _alarm_stored(self, alarm: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        try:
            for row in rows:
                await self._save(row, {"alarm_id": row["alarm_id"]})
            await self.escalation.async_begin(alarm)
        except Exception:
            _LOGGER.exception("Delivery records of alarm %s not linked", alarm.get("id"))

    @callback
    def _on_alarm_done(self, event: Event) -> None:
        alarm_id = event.data.get("id")
        if alarm_id is not None and self.escalation is not None and self._running:
            asyncio.get_running_loop().create_task(self.escalation.async_stop_chain(int(alarm_id)),
                                                   name=f"notify escalation stop {alarm_id}")

    # -- timers (summaries, escalations) ----------------------------------------------------
    def schedule(self, due: float, what: str, arg: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, what, arg))
        if self._running:
            self._arm()

    def _arm(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        if not self._timers or not self._running:
            return
        delay = max(0.0, self._timers[0][0] - self.clock())
        loop = asyncio.get_running_loop()
        self._timer_handle = loop.call_later(
            min(delay, 3600.0),
            lambda: loop.create_task(self.run_due(), name="notify timers"))

    async def run_due(self) -> None:
        """Run every summary and escalation step due by `clock()` (tests call it directly)."""
        async with self._due_lock:
            now = self.clock()
            due: list[tuple[str, Any]] = []
            while self._timers and self._timers[0][0] <= now:
                _when, _seq, what, arg = heapq.heappop(self._timers)
                due.append((what, arg))
            for what, arg in due:
                try:
                    if what == "summary":
                        await self.router.async_summarise(arg, now)
                    elif what == "escalate":
                        await self.escalation.async_step(int(arg), now)
                except Exception:
                    _LOGGER.exception("Notification timer %s %s failed", what, arg)
            self._arm()

    # -- services ---------------------------------------------------------------------------
    def _register_services(self) -> None:
        def target_or_alarm(data: dict[str, Any]) -> dict[str, Any]:
            if "target" not in data and "alarm_id" not in data:
                raise vol.Invalid("give `target` (phone numbers) or `alarm_id` (its "
                                  "subscribers)")
            return data

        schema = vol.All(vol.Schema({
            vol.Optional("target"): vol.All(vol.Any(str, [str]),
                                            lambda v: [v] if isinstance(v, str) else v,
                                            vol.Length(min=1, max=100)),
            # without `target`: everyone whose subscription matches this alarm
            vol.Optional("alarm_id"): vol.All(vol.Coerce(int), vol.Range(min=1)),
            vol.Required("message"): vol.All(str, vol.Length(min=1, max=2000)),
            vol.Optional("title"): vol.All(str, vol.Length(max=255)),
            vol.Optional("channel"): str,
        }), target_or_alarm)

        def handler(channel: str | None) -> Callable[[Any], Any]:
            async def send(call: Any) -> dict[str, Any]:
                data = call.data
                alarm = await self._service_alarm(data.get("alarm_id"))
                if "target" in data:
                    targets = [(t, None, None) for t in data["target"]]
                else:
                    targets = [(user.phone, user.name, sub.get("channels"))
                               for user, sub in await self.router.recipients(alarm or {})]
                rows = []
                for target, user_name, channels in targets:
                    row = await self.async_send(
                        target, data["message"], title=data.get("title"),
                        channel=channel or data.get("channel") or self.first_channel(channels),
                        user_name=user_name or call.context.user_id,
                        alarm_id=data.get("alarm_id"),
                        project=alarm.get("project") if alarm else None,
                        severity=alarm.get("severity") if alarm else None)
                    rows.append(delivery_dict(row))
                return {"deliveries": rows}

            return send

        for name in self.order:
            self.hub.services.register("notify", name, handler(name), schema=schema,
                                       supports_response=True,
                                       description=f"Send a message through {name}")
        self.hub.services.register("notify", "send", handler(None), schema=schema,
                                   supports_response=True,
                                   description="Send a message through the first channel, "
                                               "failing over down the chain")

    async def _service_alarm(self, alarm_id: int | None) -> dict[str, Any] | None:
        """The alarm record a `notify.*` call names (its subscribers, project, severity)."""
        if alarm_id is None:
            return None
        found = await self.hub.alarms.store.get_many([alarm_id])
        if not found:
            raise ServiceValidationError(f"No alarm {alarm_id}")
        from hub.core.alarms import record_dict

        return dict(record_dict(found[0]))

    # -- what others read -------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        return {"notify_sent_total": float(self.sent_total),
                "notify_failed_total": float(self.failed_total),
                "notify_delivered_total": float(self.delivered_total),
                "notify_pending": float(len(self._pending)),
                "notify_deferred_writes_total": float(self.deferred_writes),
                "notify_write_failures_total": float(self.write_failures)}

    def queue_depth(self, name: str) -> int:
        """Records of this channel waiting to go out: queued (also between retries) or
        being sent; held ones (quiet hours, rate limit) are not counted."""
        return sum(1 for row in self._pending.values() if row["channel"] == name)

    def status(self) -> list[dict[str, Any]]:
        """Each configured channel: health, last error, queue depth, chain position.

        `healthy` is the channel's own last health check (a modem answering `AT`), None for
        channels without one; `last_error` is the channel's own trouble if it has any, else
        the reason of its latest failed send (with `last_error_at`).
        """
        out = []
        for name in self.order:
            notifier = self.notifiers.get(name)
            failure = self.last_failure.get(name)
            if notifier is None:
                info: dict[str, Any] = {"name": name, "platform": self._conf[name]["platform"],
                                        "available": False, "healthy": False,
                                        "checked_at": None, "last_error": "did not start",
                                        "last_error_at": None, "details": {}}
            else:
                own = notifier.last_error
                details = notifier.status()
                for key in ("name", "platform", "available"):
                    details.pop(key, None)
                info = {"name": name, "platform": notifier.platform,
                        "available": notifier.available, "healthy": notifier.healthy,
                        "checked_at": iso(notifier.checked_at) if notifier.checked_at else None,
                        "last_error": own or (failure[1] if failure else None),
                        "last_error_at": (iso(failure[0]) if failure and not own else None),
                        "details": details}
            info["queue_depth"] = self.queue_depth(name)
            info["fallback"] = self.next_channel(name, ())
            out.append(info)
        return out
