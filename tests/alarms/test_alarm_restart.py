"""Restarts: an alarm active before is still active after and is not raised twice, delay-on
timers resume with what was left of them, and sources not re-reported are re-learnt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import hub.core.alarms as alarms_mod
from hub.storage.schema import alarm_pending, alarms

from .conftest import Recorder, fire, hub_config, settle, start_hub


class FakeClock:
    """The engine's clock, moved by the test: delays run without sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _active_rows(hub: Any) -> list[dict[str, Any]]:
    async with hub.storage.engine.connect() as conn:
        result = await conn.execute(
            select(alarms).where(alarms.c.status == "active").order_by(alarms.c.id))
        return [dict(row) for row in result.mappings()]


async def test_active_alarms_survive_a_restart_and_are_not_raised_again(
    tmp_path: Path, db_url: str
) -> None:
    config = hub_config(db_url)
    first = await start_hub(tmp_path, config)
    before = Recorder(first, "alarm_raised")
    fire(first, "arcm-1", "residual_current_high", value=550, unit="mA")
    fire(first, "arcm-1", "communication_lost", source="arcm")
    fire(first, "arcm-2", "arc_fault", value=20)
    fire(first, "arcm-2", "arc_fault", False)  # latched: stays active
    await before.wait_for("alarm_raised", 3)
    ids = {(r["device_id"], r["type"]): r["id"] for r in before.of("alarm_raised")}
    before.close()
    await first.async_stop()

    second = await start_hub(tmp_path, config)
    after = Recorder(second, "alarm_raised", "alarm_updated", "alarm_cleared")
    try:
        assert {(r.device_id, r.type): r.id for r in second.alarms.active()} == ids
        # The first poll after the restart: the device answers (online) and re-reports the
        # residual current alarm in the same pass; communication is evidently back.
        second.states.async_set("binary_sensor.arcm_1_online", "on")
        fire(second, "arcm-1", "residual_current_high", value=556, unit="mA")
        cleared = await after.wait_for("alarm_cleared")
        await settle(second)
        assert [c["type"] for c in cleared] == ["communication_lost"]
        assert after.of("alarm_raised") == []
        rows = await _active_rows(second)
        assert {(r["device_id"], r["type"]) for r in rows} == {
            ("arcm-1", "residual_current_high"), ("arcm-2", "arc_fault")}
        residual = second.alarms.get_active("arcm-1", "residual_current_high")
        assert residual.id == ids[("arcm-1", "residual_current_high")] and residual.count == 2
        assert residual.message == "剩余电流过大 550mA"  # the record keeps its raise value
        # The latched arc fault is still there, waiting for a reset.
        assert second.alarms.get_active("arcm-2", "arc_fault").latching
    finally:
        after.close()
        await second.async_stop()


async def test_a_pending_delay_resumes_with_what_was_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pending 20 s of a 30 s delay at the restart: raises 10 s after the start, not at once."""
    clock = FakeClock(1_700_000_000.0)
    monkeypatch.setattr(alarms_mod, "CLOCK", clock)
    devices = [dict(d) for d in hub_config()["devices"]]
    devices[0]["thresholds"] = {"residual_current": {"delay": 30}}
    config = hub_config(devices=devices)
    entity = "sensor.arcm_1_residual_current"

    first = await start_hub(tmp_path, config)
    first.states.async_set(entity, 550, timestamp=clock.now)
    assert [p["due"] for p in first.alarms.pending()] == [clock.now + 30]
    clock.now += 20
    first.alarms.run_due_timers()
    assert first.alarms.get_active("arcm-1", "residual_current_high") is None
    await first.async_stop()

    clock.now += 3600  # the hub was down for an hour: that time does not count
    start = clock.now
    second = await start_hub(tmp_path, config)
    recorder = Recorder(second, "alarm_raised")
    try:
        pending = second.alarms.pending()
        assert len(pending) == 1 and pending[0]["due"] == start + 10
        assert not pending[0]["confirmed"]
        clock.now = start + 10
        second.alarms.run_due_timers()  # due, but nobody has confirmed it since the restart
        await settle(second)
        assert recorder.of("alarm_raised") == []
        second.states.async_set(entity, 548, timestamp=clock.now)  # still true: raise now
        raised = await recorder.wait_for("alarm_raised")
        assert raised[0]["type"] == "residual_current_high" and raised[0]["sources"] == ["hub"]
        assert second.alarms.pending() == []
        async with second.storage.engine.connect() as conn:
            left = (await conn.execute(select(alarm_pending))).all()
        assert left == []
    finally:
        recorder.close()
        await second.async_stop()


async def test_a_resumed_delay_raises_on_its_timer_once_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(1_700_000_000.0)
    monkeypatch.setattr(alarms_mod, "CLOCK", clock)
    config = hub_config(alarms={"thresholds": {"temperature": {"delay": 30}}})
    entity = "sensor.arcm_2_temperature_3"
    first = await start_hub(tmp_path, config)
    first.states.async_set(entity, 85.5, timestamp=clock.now)
    clock.now += 20
    await first.async_stop()

    clock.now += 60
    start = clock.now
    second = await start_hub(tmp_path, config)
    recorder = Recorder(second, "alarm_raised")
    try:
        second.states.async_set(entity, 86.0, timestamp=clock.now)  # confirmed, 10 s to go
        clock.now = start + 9.5
        second.alarms.run_due_timers()
        await settle(second)
        assert recorder.of("alarm_raised") == []
        clock.now = start + 10
        second.alarms.run_due_timers()
        raised = await recorder.wait_for("alarm_raised")
        assert raised[0]["message"] == "温度3过大 86.0°C"
        assert raised[0]["started_at"] == alarms_mod.iso(start + 10)
    finally:
        recorder.close()
        await second.async_stop()


async def test_a_pending_delay_that_ended_during_the_restart_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(1_700_000_000.0)
    monkeypatch.setattr(alarms_mod, "CLOCK", clock)
    config = hub_config()
    entity = "sensor.arcm_1_voltage_b"
    first = await start_hub(tmp_path, config)
    first.states.async_set(entity, 270, timestamp=clock.now)
    await first.async_stop()
    second = await start_hub(tmp_path, config)
    try:
        assert len(second.alarms.pending()) == 1
        second.states.async_set(entity, 230, timestamp=clock.now)  # back to normal
        assert second.alarms.pending() == []
        await settle(second)
        async with second.storage.engine.connect() as conn:
            assert (await conn.execute(select(alarm_pending))).all() == []
    finally:
        await second.async_stop()


async def test_a_threshold_alarm_active_before_the_restart_is_not_raised_again(
    tmp_path: Path,
) -> None:
    config = hub_config(alarms={"thresholds": {"residual_current": {"delay": 0}}})
    entity = "sensor.arcm_1_residual_current"
    first = await start_hub(tmp_path, config)
    recorder = Recorder(first, "alarm_raised")
    first.states.async_set(entity, 700)
    await recorder.wait_for("alarm_raised")
    recorder.close()
    await first.async_stop()

    second = await start_hub(tmp_path, config)
    recorder = Recorder(second, "alarm_raised", "alarm_cleared")
    try:
        second.states.async_set(entity, 650)  # still high after the restart
        await settle(second)
        assert recorder.of("alarm_raised") == []
        assert second.alarms.get_active("arcm-1", "residual_current_high") is not None
        second.states.async_set(entity, 10)
        await recorder.wait_for("alarm_cleared")
        assert recorder.of("alarm_raised") == []
    finally:
        recorder.close()
        await second.async_stop()


async def test_spool_left_by_a_stopped_hub_is_written_once_and_announced_again(
    tmp_path: Path, db_url: str
) -> None:
    """A hub that died during a database stall leaves `alarm_spool.jsonl`: the next start
    writes what is not in the database yet (once), skips what is, and announces it again."""
    import json

    from hub.hub import Hub

    from .conftest import make_plugins

    config = hub_config(db_url)
    first = await start_hub(tmp_path, config)
    seen = Recorder(first, "alarm_raised")
    fire(first, "arcm-1", "residual_current_high", value=550, unit="mA")
    (written,) = await seen.wait_for("alarm_raised")
    seen.close()
    stored = (await first.alarms.store.get_many([written["id"]]))[0]
    await first.async_stop()
    # What the dead hub left: the written alarm's line (its row made it, the removal did not),
    # a record whose row never made it (twice: the later line is its latest state), one the
    # database refuses (kept for the next start), and a torn last line.
    lost = alarms_mod.AlarmRecord(
        device_id="arcm-2", type="smoke", kind="alarm", severity="critical",
        message="烟雾报警", message_en="Smoke alarm", started_at=1_790_000_000.25,
        last_seen_at=1_790_000_000.25, sources={"device"}, ref="b" * 32)
    earlier = {**lost.row(), "count": 1}
    lost.count = 3
    refused = {**lost.row(), "device_id": "arcm-3", "kind": None}
    lines = [json.dumps({"ref": "a" * 32, "announced": True, "row": {**stored, "id": None}}),
             json.dumps({"ref": lost.ref, "announced": True, "row": earlier}),
             json.dumps({"ref": "c" * 32, "announced": True, "row": refused}),
             json.dumps({"ref": lost.ref, "announced": False, "row": lost.row()}),
             '{"ref": "torn']
    (tmp_path / alarms_mod.SPOOL_NAME).write_text("\n".join(lines) + "\n")

    second = Hub(config_dir=tmp_path, config=config, plugin_manager=make_plugins())
    after = Recorder(second, "alarm_raised")
    await second.async_start()
    try:
        (again,) = await after.wait_for("alarm_raised")
        assert again["ref"] == lost.ref and again["id"] is not None
        assert again["type"] == "smoke" and not again["provisional"] and again["count"] == 3
        (kept,) = (tmp_path / alarms_mod.SPOOL_NAME).read_text().splitlines()
        assert json.loads(kept)["ref"] == "c" * 32
        assert second.alarms.spool_replayed == 1
        rows = await _active_rows(second)
        assert sorted((r["device_id"], r["type"]) for r in rows) == [
            ("arcm-1", "residual_current_high"), ("arcm-2", "smoke")]
        assert {r.id for r in second.alarms.active()} == {r["id"] for r in rows}
        await settle(second)
        assert len(after.of("alarm_raised")) == 1
    finally:
        after.close()
        await second.async_stop()
