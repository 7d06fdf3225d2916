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


async def async_stop_hazards(hub: Any) -> None:
    for name in ("reminders", "patrols", "workorders"):
        part = getattr(hub, name, None)
        if part is not None:
            await part.async_stop()
