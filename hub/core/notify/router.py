"""Who hears about an alarm: subscriptions, scope, quiet hours and the per-recipient limit.

A subscription belongs to a user and can never reach beyond that user's scope: the user's
scope is checked on every alarm (not only when the subscription was made), so a user moved to
another project stops getting the old project's alarms at once.

Quiet hours hold everything but critical alarms; evaluation goes on (the alarm is recorded and
escalation runs), only the delivery waits, and one summary goes out when quiet hours end. The
rate limit does the same for storms: at most `max` messages per recipient per `window`, the
rest held and summarised when the window ends, so a hundred alarms make one extra SMS.
"""

from __future__ import annotations

import collections
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .base import KIND_ALARM, KIND_SUMMARY, STATUS_SUMMARISED
from .templates import alarm_context, language_of

if TYPE_CHECKING:
    from .manager import NotifyManager

SEVERITY_RANK = {"info": 0, "minor": 1, "major": 2, "critical": 3}
HOLD_QUIET = "quiet_hours"
HOLD_RATE = "rate_limit"
_HOLD_WORDS = {HOLD_QUIET: ("免打扰", "quiet hours"), HOLD_RATE: ("限流", "rate limit")}
SUMMARY_LINES = 3


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_end(now: float, start: str | None, end: str | None, zone: str) -> float | None:
    """When the quiet period containing `now` ends (unix seconds), or None outside one."""
    if not start or not end or start == end:
        return None
    local = datetime.fromtimestamp(now, _zone(zone))
    minutes = local.hour * 60 + local.minute
    sh, sm = (int(x) for x in start.split(":"))
    eh, em = (int(x) for x in end.split(":"))
    s, e = sh * 60 + sm, eh * 60 + em
    inside = s <= minutes < e if s < e else (minutes >= s or minutes < e)
    if not inside:
        return None
    ends = local.replace(hour=eh, minute=em, second=0, microsecond=0)
    if ends <= local:
        ends += timedelta(days=1)
    return ends.timestamp()


class Router:
    def __init__(self, manager: NotifyManager) -> None:
        self.manager = manager
        self.hub = manager.hub
        rate = manager.settings.get("rate_limit") or {}
        self.rate_max = int(rate.get("max", 5))
        self.rate_window = float(rate.get("window", 300.0))
        self._recent: dict[str, collections.deque[float]] = {}

    async def recipients(self, alarm: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
        """(user, subscription) for every subscription this alarm matches, one per phone."""
        auth = getattr(self.hub, "auth", None)
        if auth is None:
            return []
        directory = self.manager.directory
        subs = await directory.subscriptions()
        if not subs:
            return []
        users = await directory.users_by_id()
        project = alarm.get("project")
        severity = SEVERITY_RANK.get(alarm.get("severity") or "info", 0)
        out: list[tuple[Any, dict[str, Any]]] = []
        seen: set[str] = set()
        for sub in subs:
            user = users.get(sub["user_id"])
            if not sub.get("enabled", True) or user is None or user.disabled or not user.phone:
                continue
            if sub.get("kinds") and alarm.get("kind") not in sub["kinds"]:
                continue
            if severity < SEVERITY_RANK.get(sub.get("min_severity") or "info", 0):
                continue
            if not directory.user_scope(auth, user).can_see(project):
                continue
            if sub.get("projects") and not directory.projects_scope(auth, sub).can_see(project):
                continue
            if user.phone in seen:
                continue
            seen.add(user.phone)
            out.append((user, sub))
        return out

    async def async_route(self, alarm: dict[str, Any]) -> list[dict[str, Any]]:
        """Queue (or hold) one message per matching subscriber; the delivery rows."""
        rows = []
        now = self.manager.clock()
        for user, sub in await self.recipients(alarm):
            language = language_of(sub.get("language") or user.language or self.hub.language)
            context = alarm_context(self.hub, alarm, language)
            text = self.manager.templates.render("alarm", language, **context)
            hold, why = self.hold(user.phone, sub, alarm.get("severity"), now)
            rows.append(await self.manager.async_send(
                user.phone, text, channel=self.manager.first_channel(sub.get("channels")),
                kind=KIND_ALARM, alarm_id=alarm.get("id"), project=alarm.get("project"),
                user_name=user.name, language=language, severity=alarm.get("severity"),
                title=f"{context['place']} {context['words']}".strip(), hold_until=hold,
                reason=why))
        return rows

    def hold(self, recipient: str, sub: dict[str, Any], severity: str | None,
             now: float) -> tuple[float | None, str | None]:
        """(until, why) when this message must wait for a summary, else (None, None)."""
        if severity != "critical":
            ends = quiet_end(now, sub.get("quiet_start"), sub.get("quiet_end"),
                             self.hub.time_zone)
            if ends is not None:
                return ends, HOLD_QUIET
        recent = self._recent.setdefault(recipient, collections.deque())
        while recent and recent[0] <= now - self.rate_window:
            recent.popleft()
        if len(recent) >= self.rate_max:
            return recent[0] + self.rate_window, HOLD_RATE
        recent.append(now)
        return None, None

    async def async_summarise(self, recipient: str, now: float) -> dict[str, Any] | None:
        """One message for everything held for `recipient` that is due; rows marked."""
        store = self.manager.store
        rows = await store.held(recipient, due_before=now)
        if not rows:
            return None
        language = language_of(rows[-1].get("language"))
        english = language == "en"
        reasons = {r.get("reason") for r in rows}
        why = HOLD_QUIET if HOLD_QUIET in reasons else HOLD_RATE
        text = self.manager.templates.render(
            "summary", language, count=len(rows), reason=_HOLD_WORDS[why][1 if english else 0],
            lines=[r.get("title") or r["message"] for r in rows[-SUMMARY_LINES:]])
        summary = await self.manager.async_send(
            recipient, text, channel=rows[-1]["channel"], kind=KIND_SUMMARY,
            project=rows[-1].get("project"), user_name=rows[-1].get("user_name"),
            language=language, severity=max((r.get("severity") or "info" for r in rows),
                                             key=lambda s: SEVERITY_RANK.get(s, 0)))
        await store.update_many([r["id"] for r in rows], {
            "status": STATUS_SUMMARISED, "updated_at": now,
            "reason": f"{why}: in summary {summary['id']}"})
        for row in rows:
            row.update(status=STATUS_SUMMARISED, updated_at=now,
                       reason=f"{why}: in summary {summary['id']}")
            self.manager.fire(row)
        return summary
