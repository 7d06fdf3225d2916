"""Wiring of the hazard features (issue #5) that build on the alarm engine: work orders,
patrols, reminders and statistics.

Kept out of hub.py so the Hub's start and stop each need one line: these start after the
alarm engine (they read its records and call it to mark alarms handled) and before plugins
(an automation set up by a plugin may call `workorder.create` at once), and stop before it.
"""

from __future__ import annotations

from typing import Any


async def async_start_hazards(hub: Any) -> None:
    from .core.patrols import PatrolManager
    from .core.reminders import ReminderService
    from .core.statistics import Statistics
    from .core.workorders import WorkOrderManager
    from .storage.patrol_store import SqlPatrolStore
    from .storage.reminder_store import SqlReminderStore
    from .storage.report_store import SqlReportStore
    from .storage.statistics_store import SqlStatisticsStore
    from .storage.workorder_store import SqlWorkOrderStore

    hub.workorders = WorkOrderManager(hub, hub.config.get("workorders"),
                                      SqlWorkOrderStore(hub.storage))
    await hub.workorders.async_start()
    hub.patrols = PatrolManager(hub, SqlPatrolStore(hub.storage), hub.workorders)
    await hub.patrols.async_start()
    hub.reminders = ReminderService(hub, hub.config.get("reminders"),
                                    SqlReminderStore(hub.storage))
    await hub.reminders.async_start()
    hub.statistics = Statistics(hub, SqlStatisticsStore(hub.storage))
    hub.statistics.async_start()  # its cache listens for alarm / work-order / patrol events
    hub.report_store = SqlReportStore(hub.storage)  # the monthly report's (hub/reports/)
    hub.hazard_analysis = _analyzer(hub)
    await hub.hazard_analysis.async_start()


def _analyzer(hub: Any) -> Any:
    """The trend forecast on the recorder's daily rollups, deduplicated by the alarm records."""
    from .core.hazard_analysis import HAZARD_WARNING, HazardAnalyzer
    from .storage.alarm_store import AlarmQuery
    from .storage.rollups import DayStarts

    async def peaks(entity_id: str, since: float, until: float) -> list[tuple[float, float]]:
        reader = hub.recorder.reader
        today = DayStarts(reader.zone)(until)  # complete days only: today's peak is partial
        rows = await reader.buckets(entity_id, since, today, "1d")
        return [(row[0], row[4]) for row in rows]

    async def recent(since: float) -> set[str]:
        records = await hub.alarms.store.query(
            AlarmQuery(types=[HAZARD_WARNING], since=since, limit=100_000))
        return {r["entity_id"] for r in records if r.get("entity_id")}

    async def hourly(entity_id: str, since: float, until: float) -> list[tuple[float, float]]:
        rows = await hub.recorder.reader.buckets(entity_id, since, until, "1h")
        return [(row[0], row[2] / row[1]) for row in rows]

    return HazardAnalyzer(hub, hub.config.get("hazard_analysis"), peaks, recent, hourly)


async def async_stop_hazards(hub: Any) -> None:
    for name in ("statistics", "hazard_analysis", "reminders", "patrols", "workorders"):
        part = getattr(hub, name, None)
        if part is not None:
            await part.async_stop()
