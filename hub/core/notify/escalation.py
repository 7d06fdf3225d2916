"""Escalation: an alarm nobody acknowledges climbs the project tree.

Level 0 is the subscribers (router.py). After `delays[0]` without acknowledgement the
project's admins (`roles[0]`, users of that role whose scope covers the alarm's project) get
it, after `delays[1]` more the platform admins, and so on. Acknowledgement (by the web UI, the
API or an SMS reply) or the alarm clearing stops the chain. Chains are rows, so a restart
continues them where they were instead of starting over or forgetting them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import KIND_ESCALATION
from .templates import alarm_context, language_of

if TYPE_CHECKING:
    from .manager import NotifyManager


class Escalation:
    def __init__(self, manager: NotifyManager, conf: dict[str, Any]) -> None:
        self.manager = manager
        self.hub = manager.hub
        self.enabled = bool(conf.get("enabled", True))
        self.delays = [float(d) for d in conf.get("delays", [600.0, 1800.0])]
        self.roles = list(conf.get("roles", ["project_admin", "platform_admin"]))
        self.kinds = set(conf.get("kinds", ["alarm"]))
        self._chains: dict[int, dict[str, Any]] = {}

    @property
    def levels(self) -> int:
        return min(len(self.delays), len(self.roles))

    async def async_load(self) -> None:
        for row in await self.manager.store.escalations():
            self._chains[int(row["alarm_id"])] = row
            self.manager.schedule(float(row["next_at"]), "escalate", int(row["alarm_id"]))

    async def async_begin(self, alarm: dict[str, Any]) -> None:
        if (not self.enabled or not self.levels or alarm.get("id") is None
                or alarm.get("kind") not in self.kinds or alarm.get("acknowledged")):
            return
        now = self.manager.clock()
        row = {"alarm_id": int(alarm["id"]), "project": alarm.get("project"), "level": 0,
               "next_at": now + self.delays[0], "started_at": now}
        self._chains[row["alarm_id"]] = row
        await self.manager.store.save_escalation(row)
        self.manager.schedule(row["next_at"], "escalate", row["alarm_id"])

    async def async_stop_chain(self, alarm_id: int) -> None:
        if self._chains.pop(alarm_id, None) is not None:
            await self.manager.store.delete_escalation(alarm_id)

    async def async_step(self, alarm_id: int, now: float) -> list[dict[str, Any]]:
        """Notify the chain's next level if the alarm is still active and unacknowledged."""
        row = self._chains.get(alarm_id)
        if row is None:
            return []
        if float(row["next_at"]) > now:
            self.manager.schedule(float(row["next_at"]), "escalate", alarm_id)
            return []
        found = await self.hub.alarms.store.get_many([alarm_id])
        alarm = found[0] if found else None
        if alarm is None or alarm.get("acked_at") is not None or alarm.get("status") != "active":
            await self.async_stop_chain(alarm_id)
            return []
        from hub.core.alarms import record_dict

        shown = record_dict(alarm)
        level = int(row["level"])
        role = self.roles[level]
        minutes = round((now - float(row["started_at"])) / 60)
        sent = []
        auth = self.hub.auth
        for user in await self.manager.directory.users():
            if user.role != role or user.disabled or not user.phone:
                continue
            if not auth.scope_for(user).can_see(row.get("project")):
                continue
            language = language_of(user.language or self.hub.language)
            context = alarm_context(self.hub, shown, language)
            text = self.manager.templates.render("escalation", language, minutes=minutes,
                                                 **context)
            sent.append(await self.manager.async_send(
                user.phone, text, kind=KIND_ESCALATION, alarm_id=alarm_id,
                project=row.get("project"), user_name=user.name, language=language,
                severity=shown.get("severity"),
                title=f"{context['place']} {context['words']}".strip()))
        level += 1
        if level >= self.levels:
            await self.async_stop_chain(alarm_id)
            return sent
        row.update(level=level, next_at=now + self.delays[level])
        await self.manager.store.save_escalation(row)
        self.manager.schedule(float(row["next_at"]), "escalate", alarm_id)
        return sent
