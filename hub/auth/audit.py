"""The audit log: who did what, when, from where, to what, and how it ended.

Append-only by construction: this module can only insert and read, and the database refuses
UPDATE and DELETE on the table (triggers, migration 0004_auth). Entries are written before the
request that caused them answers, so "the response came back" implies "it is in the log".

Actions (the `action` column) use dotted names so a filter by prefix works:

| action | when |
|---|---|
| `auth.login` | every login attempt: result ok, failed or locked |
| `auth.logout`, `auth.password`, `auth.preferences` | logout; password change (own); own language |
| `auth.csrf` | a cookie request without a matching CSRF token (result denied) |
| `service.<domain>.<service>` | a control service (trip, close, reset, mute, self_test, set_parameter) whoever called it, and any service a person called; result ok, failed or denied |
| `alarm.ack`, `alarm.handle`, `alarm.clear` | acknowledgement, handling, reset through the API |
| `user.create`, `user.update`, `user.passwd`, `user.disable` | user changes (API or CLI) |
| `token.create`, `token.revoke` | token changes (API or CLI) |
| `access.denied` | a request refused for role or scope |

Other parts of the hub (automations, configuration, work orders) add their own with
`hub.auth.audit.record(...)`.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

_LOGGER = logging.getLogger(__name__)

RESULTS = ("ok", "failed", "denied", "locked")


def _table() -> sa.Table:
    from hub.storage.schema import audit_log

    return audit_log


@dataclass(slots=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    actors: Sequence[str] = ()
    action_prefixes: Sequence[str] = ()
    results: Sequence[str] = ()
    target: str | None = None
    #: Restrict to entries about these projects or these users (None = no restriction).
    visible_projects: Iterable[str] | None = None
    visible_users: Iterable[str] | None = None
    limit: int = 1000
    offset: int = 0


class AuditLog:
    def __init__(self, db: Any, clock: Any = time.time) -> None:
        self.db = db
        self.clock = clock

    async def record(
        self,
        action: str,
        result: str,
        *,
        actor: str | None = None,
        actor_role: str | None = None,
        ip: str | None = None,
        target: str | None = None,
        project: str | None = None,
        detail: dict[str, Any] | None = None,
        context_id: str | None = None,
    ) -> None:
        """Append one entry. A failing write is logged loudly and never hides the action's
        own outcome from its caller (the action already happened or was refused)."""
        values = {
            "ts": self.clock(),
            "actor": actor,
            "actor_role": actor_role,
            "ip": (ip or "")[:64] or None,
            "action": action[:64],
            "target": None if target is None else str(target)[:255],
            "project": project,
            "result": result,
            "detail": detail,
            "context_id": context_id,
        }
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(_table().insert().values(**values))
        except Exception:
            _LOGGER.exception("Could not write audit entry %s", values)
        _LOGGER.info(
            "audit %s %s by %s from %s on %s: %s", action, result, actor or "-", ip or "-",
            target or "-", detail or "",
        )

    async def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        table = _table()
        where: list[Any] = []
        if q.since is not None:
            where.append(table.c.ts >= q.since)
        if q.until is not None:
            where.append(table.c.ts < q.until)
        if q.actors:
            where.append(table.c.actor.in_(list(q.actors)))
        if q.action_prefixes:
            where.append(sa.or_(*[
                sa.or_(table.c.action == p, table.c.action.like(f"{p}.%"))
                for p in q.action_prefixes
            ]))
        if q.results:
            where.append(table.c.result.in_(list(q.results)))
        if q.target is not None:
            where.append(table.c.target == q.target)
        if q.visible_projects is not None or q.visible_users is not None:
            projects = list(q.visible_projects or [])
            people = list(q.visible_users or [])
            where.append(sa.or_(
                table.c.project.in_(projects),
                table.c.actor.in_(people),
                sa.and_(table.c.target.in_(people),
                        sa.or_(table.c.action.like("user.%"), table.c.action.like("auth.%"),
                               table.c.action.like("token.%"))),
            ))
        statement = (
            sa.select(table).where(*where).order_by(table.c.ts.desc(), table.c.id.desc())
            .limit(q.limit).offset(q.offset)
        )
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [dict(row) for row in rows]


CSV_COLUMNS = [
    ("ts", "时间", "Time"), ("actor", "操作人", "Who"), ("actor_role", "角色", "Role"),
    ("ip", "来源", "From"), ("action", "操作", "Action"), ("target", "对象", "Target"),
    ("project", "项目", "Project"), ("result", "结果", "Result"), ("detail", "详情", "Detail"),
]


def audit_csv(rows: list[dict[str, Any]], english: bool, local_time: Any) -> bytes:
    """UTF-8 with a BOM, so Excel on a Chinese Windows opens it as text, not mojibake."""
    import json

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([en if english else zh for _key, zh, en in CSV_COLUMNS])
    for row in rows:
        values = dict(row)
        values["ts"] = local_time(row["ts"])
        values["detail"] = (
            json.dumps(row["detail"], ensure_ascii=False) if row.get("detail") else ""
        )
        writer.writerow(["" if values.get(key) is None else values[key]
                         for key, _zh, _en in CSV_COLUMNS])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
