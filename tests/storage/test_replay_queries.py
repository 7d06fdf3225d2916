"""The reads a dry run replays from, on SQLite and PostgreSQL: the last reading before a
moment, recorded events by type and window, and alarm records with a transition in a window."""

from __future__ import annotations

from typing import Any

from hub.storage.alarm_store import SqlAlarmStore
from hub.storage.database import Database
from hub.storage.recorder import Recorder

from .conftest import MiniHub


async def test_state_before_and_events_between(hub: MiniHub, recorder: Recorder) -> None:
    entity = "sensor.arcm_1_residual_current"
    for when, value in [(100.0, 10), (200.0, 20), (300.0, 30)]:
        hub.states.async_set(entity, value, timestamp=when)
    hub.bus.async_fire("panel_button", {"button": "trip"}, time_fired=150.0)
    hub.bus.async_fire("panel_button", {"button": "mute"}, time_fired=250.0)
    hub.bus.async_fire("other", {"x": 1}, time_fired=260.0)
    hub.bus.async_fire("panel_button", {}, time_fired=400.0)
    await recorder.async_flush()

    assert await recorder.state_before(entity, 100.0) is None
    before = await recorder.state_before(entity, 250.0)
    assert before is not None and (before["state"], before["last_updated"]) == ("20", 200.0)
    assert (await recorder.state_before(entity, 1e9) or {})["state"] == "30"
    assert await recorder.state_before("sensor.never", 1e9) is None

    found = await recorder.events_between(["panel_button", "other"], 150.0, 400.0)
    assert [(e["event_type"], e["data"], e["time_fired"]) for e in found] == [
        ("panel_button", {"button": "trip"}, 150.0), ("panel_button", {"button": "mute"}, 250.0),
        ("other", {"x": 1}, 260.0)]
    assert await recorder.events_between(["panel_button"], 400.0, 400.0) == []
    assert [e["data"] for e in await recorder.events_between(["panel_button"], 400.0, 401.0)
            ] == [{}]


def _record(type_: str, started: float, **extra: Any) -> dict[str, Any]:
    return {"device_id": "arcm-1", "type": type_, "kind": "alarm", "severity": "high",
            "status": "active", "message": type_, "started_at": started,
            "last_seen_at": started, "sources": ["t"], "count": 1, "latching": False, **extra}


async def test_alarm_transitions_in_a_window(database: Database) -> None:
    store = SqlAlarmStore(database)
    inside = await store.insert(_record("a", 150.0))
    acked_inside = await store.insert(_record("b", 50.0, status="cleared", cleared_at=60.0,
                                              acked_at=120.0))
    cleared_inside = await store.insert(_record("c", 50.0, status="cleared", cleared_at=199.0))
    await store.insert(_record("d", 50.0, status="cleared", cleared_at=90.0))  # all before
    await store.insert(_record("e", 200.0))  # at the end: outside (end exclusive)
    handled = await store.insert(_record("f", 20.0, status="cleared", cleared_at=30.0,
                                         acked_at=40.0, handled_at=100.0))  # start inclusive
    rows = await store.transitions(100.0, 200.0)
    assert [row["id"] for row in rows] == [handled, acked_inside, cleared_inside, inside]
