"""The alarm engine on a real hub: records and their words, sources, latching, thresholds with
delay-on and hysteresis, and one active record per (device, type) under concurrency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.storage.schema import alarms

from .conftest import Recorder, fire, hub_config, settle, start_hub


async def _rows(hub: Any, **where: Any) -> list[dict[str, Any]]:
    stmt = select(alarms).order_by(alarms.c.id)
    for name, value in where.items():
        stmt = stmt.where(alarms.c[name] == value)
    async with hub.storage.engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(stmt)).mappings()]


async def test_condition_becomes_a_record_in_the_seed_words(hub: Any, recorder: Recorder) -> None:
    fire(hub, "arcm-1", "residual_current_high", value=550, unit="mA",
         entity_id="sensor.arcm_1_residual_current")
    fire(hub, "arcm-1", "probe_open_4")
    fire(hub, "arcm-1", "tripped", entity_id="switch.arcm_1_breaker")
    raised = await recorder.wait_for("alarm_raised", 3)
    by_type = {record["type"]: record for record in raised}

    alarm = by_type["residual_current_high"]
    assert alarm["message"] == "剩余电流过大 550mA"
    assert alarm["message_en"] == "Residual current high 550mA"
    assert (alarm["kind"], alarm["severity"], alarm["status"]) == ("alarm", "major", "active")
    assert alarm["value"] == 550 and alarm["entity_id"] == "sensor.arcm_1_residual_current"
    assert (alarm["project"], alarm["area"], alarm["location"]) == ("school-1-a", "一层", "配电室")
    assert alarm["device_name"] == "配电箱1" and alarm["platform"] == "meter"
    assert alarm["address"] == "modbus_tcp 127.0.0.1:5020" and alarm["unit_address"] == "1"
    assert alarm["started_at"].endswith("+00:00") and alarm["acked_at"] is None

    fault = by_type["probe_open_4"]
    assert (fault["kind"], fault["severity"], fault["message"]) == ("fault", "minor", "温度4断线")

    event = by_type["tripped"]
    assert (event["kind"], event["severity"], event["message"]) == ("event", "info", "分闸")
    assert event["status"] == "cleared" and event["cleared_at"] == event["started_at"]

    rows = await _rows(hub)
    assert len(rows) == 3
    assert {row["status"] for row in rows if row["kind"] != "event"} == {"active"}
    assert hub.alarms.active_counts() == {"alarm": 1, "fault": 1}


async def test_repeats_update_the_record_and_clear_ends_it(hub: Any, recorder: Recorder) -> None:
    for value in (550, 560, 570):
        fire(hub, "arcm-1", "residual_current_high", value=value, unit="mA")
    fire(hub, "arcm-1", "residual_current_high", False)
    cleared = await recorder.wait_for("alarm_cleared")
    assert len(recorder.of("alarm_raised")) == 1
    rows = await _rows(hub)
    assert len(rows) == 1
    assert rows[0]["status"] == "cleared" and rows[0]["count"] == 3
    assert cleared[0]["id"] == rows[0]["id"] and cleared[0]["cleared_at"] is not None
    # A new occurrence after the clear is a new record.
    fire(hub, "arcm-1", "residual_current_high", value=600, unit="mA")
    await recorder.wait_for("alarm_raised", 2)
    assert [row["status"] for row in await _rows(hub)] == ["cleared", "active"]


async def test_communication_loss_from_two_sources_clears_when_both_cleared(
    hub: Any, recorder: Recorder
) -> None:
    fire(hub, "arcm-2", "communication_lost", source="gsm", detail="DTU dtu-1")
    fire(hub, "arcm-2", "communication_lost", source="arcm")
    await settle(hub)
    record = hub.alarms.get_active("arcm-2", "communication_lost")
    assert record is not None and record.sources == {"gsm", "arcm"}
    assert record.message == "通讯中断：DTU dtu-1"
    fire(hub, "arcm-2", "communication_lost", False, source="gsm")
    await settle(hub)
    assert hub.alarms.get_active("arcm-2", "communication_lost") is not None
    assert recorder.of("alarm_cleared") == []
    fire(hub, "arcm-2", "communication_lost", False, source="arcm")
    cleared = await recorder.wait_for("alarm_cleared")
    assert cleared[0]["type"] == "communication_lost" and cleared[0]["kind"] == "fault"
    assert len(recorder.of("alarm_raised")) == 1
    assert len(await _rows(hub, type="communication_lost")) == 1


async def test_latching_alarm_stays_until_the_device_resets(hub: Any, recorder: Recorder) -> None:
    fire(hub, "arcm-1", "arc_fault", value=20)
    fire(hub, "arcm-1", "arc_fault", False)
    await settle(hub)
    record = hub.alarms.get_active("arcm-1", "arc_fault")
    assert record is not None and record.latching and record.severity == "critical"
    assert recorder.of("alarm_cleared") == []

    fire(hub, "arcm-1", "reset")  # the detector's reset event (复位)
    cleared = await recorder.wait_for("alarm_cleared")
    assert cleared[0]["type"] == "arc_fault" and cleared[0]["cleared_by"] == "device"
    events = [row for row in await _rows(hub) if row["kind"] == "event"]
    assert [row["message"] for row in events] == ["复位"]


async def test_reset_while_the_condition_holds_clears_when_it_lets_go(
    hub: Any, recorder: Recorder
) -> None:
    fire(hub, "arcm-1", "short_circuit")
    await recorder.wait_for("alarm_raised")
    fire(hub, "arcm-1", "reset")
    await settle(hub)
    assert hub.alarms.get_active("arcm-1", "short_circuit") is not None  # still short
    fire(hub, "arcm-1", "short_circuit", False)
    await recorder.wait_for("alarm_cleared")
    assert hub.alarms.get_active("arcm-1", "short_circuit") is None


async def test_reset_service_clears_a_latched_record(hub: Any, recorder: Recorder) -> None:
    from hub.core.context import Context

    fire(hub, "arcm-3", "arc_fault")
    fire(hub, "arcm-3", "arc_fault", False)
    raised = await recorder.wait_for("alarm_raised")
    answer = await hub.services.async_call("alarm", "reset", {"id": raised[0]["id"]},
                                           context=Context(user_id="张工"), return_response=True)
    assert answer["status"] == "cleared" and answer["cleared_by"] == "张工"
    assert not answer["reset_pending"]
    assert (await recorder.wait_for("alarm_cleared"))[0]["id"] == raised[0]["id"]


async def test_hub_threshold_and_detector_bit_share_one_record(tmp_path: Path) -> None:
    config = hub_config(alarms={"thresholds": {"residual_current": {"delay": 0}}})
    hub = await start_hub(tmp_path, config)
    recorder = Recorder(hub, "alarm_raised", "alarm_cleared", "alarm_updated")
    try:
        hub.states.async_set("sensor.arcm_1_residual_current", 550,
                             {"unit_of_measurement": "mA"})
        raised = await recorder.wait_for("alarm_raised")
        assert raised[0]["message"] == "剩余电流过大 550mA"
        assert raised[0]["sources"] == ["hub"]
        assert raised[0]["entity_id"] == "sensor.arcm_1_residual_current"
        fire(hub, "arcm-1", "residual_current_high", value=552, unit="mA", source="detector")
        await settle(hub)
        assert hub.alarms.get_active("arcm-1", "residual_current_high").sources == {
            "hub", "detector"}
        hub.states.async_set("sensor.arcm_1_residual_current", 100)  # hub: back to normal
        await settle(hub)
        assert recorder.of("alarm_cleared") == []
        fire(hub, "arcm-1", "residual_current_high", False, source="detector")
        await recorder.wait_for("alarm_cleared")
        assert len(recorder.of("alarm_raised")) == 1
    finally:
        recorder.close()
        await hub.async_stop()


async def test_per_device_thresholds_override_the_defaults(tmp_path: Path) -> None:
    devices = [dict(d) for d in hub_config()["devices"]]
    devices[0]["thresholds"] = {"residual_current": {"alarm": 500, "delay": 0, "hysteresis": 20},
                                "voltage": False}
    hub = await start_hub(tmp_path, hub_config(devices=devices))
    recorder = Recorder(hub, "alarm_raised")
    try:
        settings = hub.alarms.thresholds_for("arcm-1")
        assert settings["residual_current"]["alarm"] == 500
        assert hub.alarms.thresholds_for("arcm-3")["residual_current"]["alarm"] == 300
        assert hub.alarms.thresholds_for("arcm-3")["temperature"]["alarm"] == 80
        hub.states.async_set("sensor.arcm_1_residual_current", 450)  # above 300, below 500
        hub.states.async_set("sensor.arcm_1_voltage_a", 300)  # voltage checks off here
        await settle(hub)
        assert recorder.of("alarm_raised") == [] and hub.alarms.pending() == []
        hub.states.async_set("sensor.arcm_1_residual_current", 510)
        raised = await recorder.wait_for("alarm_raised")
        assert raised[0]["message"] == "剩余电流过大 510mA"
        # The default still applies to a device without its own setting (with its delay).
        hub.states.async_set("sensor.arcm_3_residual_current", 350)
        assert [p["type"] for p in hub.alarms.pending()] == ["residual_current_high"]
    finally:
        recorder.close()
        await hub.async_stop()


async def test_value_flapping_around_the_setpoint_makes_one_alarm(tmp_path: Path) -> None:
    """Delay 0.2 s, hysteresis 20 mA around 300 mA: 290..310 flapping is one alarm."""
    devices = [dict(d) for d in hub_config()["devices"]]
    devices[0]["thresholds"] = {"residual_current": {"delay": "200ms", "hysteresis": 20}}
    hub = await start_hub(tmp_path, hub_config(devices=devices))
    recorder = Recorder(hub, "alarm_raised", "alarm_cleared", "alarm_updated")
    entity = "sensor.arcm_1_residual_current"
    try:
        # Crossing and falling well below before the delay ran out: nothing at all.
        for _ in range(50):
            hub.states.async_set(entity, 305)
            hub.states.async_set(entity, 150)
        assert hub.alarms.pending() == []
        # Flapping inside the hysteresis band keeps one delay running, then one alarm.
        for value in (305, 295, 310, 285, 301, 299, 290, 306):
            hub.states.async_set(entity, value)
        assert len(hub.alarms.pending()) == 1
        raised = await recorder.wait_for("alarm_raised")
        for _ in range(20):
            for value in (295, 305, 281, 320):
                hub.states.async_set(entity, value)
        await settle(hub)
        assert len(recorder.of("alarm_raised")) == 1 and recorder.of("alarm_cleared") == []
        hub.states.async_set(entity, 270)  # below 300 - 20: cleared
        cleared = await recorder.wait_for("alarm_cleared")
        assert cleared[0]["id"] == raised[0]["id"]
        async with hub.storage.engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(alarms))).scalar()
        assert count == 1
    finally:
        recorder.close()
        await hub.async_stop()


async def test_under_voltage_on_any_phase_is_one_record(tmp_path: Path) -> None:
    hub = await start_hub(tmp_path, hub_config(
        alarms={"thresholds": {"voltage": {"delay": 0}}}))
    recorder = Recorder(hub, "alarm_raised", "alarm_cleared")
    try:
        hub.states.async_set("sensor.arcm_1_voltage_a", 180)
        hub.states.async_set("sensor.arcm_1_voltage_b", 175)
        raised = await recorder.wait_for("alarm_raised")
        assert raised[0]["message"] == "欠压 180.0V"
        hub.states.async_set("sensor.arcm_1_voltage_a", 220)
        await settle(hub)
        assert recorder.of("alarm_cleared") == []  # phase b still low
        hub.states.async_set("sensor.arcm_1_voltage_b", "unavailable")  # no news: no change
        await settle(hub)
        assert recorder.of("alarm_cleared") == []
        hub.states.async_set("sensor.arcm_1_voltage_b", 221)
        await recorder.wait_for("alarm_cleared")
        assert len(recorder.of("alarm_raised")) == 1
    finally:
        recorder.close()
        await hub.async_stop()


async def test_concurrent_conditions_and_readings_make_one_active_row(
    tmp_path: Path, db_url: str
) -> None:
    """Many producers racing on one (device, type), on SQLite and PostgreSQL."""
    hub = await start_hub(tmp_path, hub_config(
        db_url, alarms={"thresholds": {"residual_current": {"delay": 0}}}))
    recorder = Recorder(hub, "alarm_raised")
    try:
        async def producer(n: int) -> None:
            for i in range(20):
                if (n + i) % 3 == 0:
                    hub.states.async_set("sensor.arcm_1_residual_current", 400 + n + i)
                else:
                    fire(hub, "arcm-1", "residual_current_high", value=500 + i, unit="mA",
                         source=f"detector{n % 2}")
                await asyncio.sleep(0)  # interleave with the writer and the other producers

        await asyncio.gather(*(producer(n) for n in range(50)))
        await settle(hub)
        rows = await _rows(hub, device_id="arcm-1", type="residual_current_high")
        assert len(rows) == 1 and rows[0]["status"] == "active"
        assert set(rows[0]["sources"]) == {"hub", "detector0", "detector1"}
        assert len(recorder.of("alarm_raised")) == 1
    finally:
        recorder.close()
        await hub.async_stop()


async def test_two_hubs_on_one_database_keep_one_active_row(
    tmp_path: Path, db_url: str
) -> None:
    """The database's partial unique index, not only memory: the loser merges into the winner."""
    (tmp_path / "a").mkdir()
    url = db_url if db_url.startswith("postgresql") else f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    first = await start_hub(tmp_path / "a", hub_config(url))
    second = await start_hub(tmp_path / "a", hub_config(url))
    seen = [Recorder(first, "alarm_raised", "alarm_updated"),
            Recorder(second, "alarm_raised", "alarm_updated")]
    try:
        for round_ in range(5):
            fire(first, "arcm-2", "communication_lost", source="gsm")
            fire(second, "arcm-2", "communication_lost", source="arcm")
            await asyncio.gather(settle(first), settle(second))
            rows = await _rows(first, device_id="arcm-2", type="communication_lost",
                               status="active")
            assert len(rows) == 1, round_
            assert set(rows[0]["sources"]) == {"gsm", "arcm"}
            fire(first, "arcm-2", "communication_lost", False, source="gsm")
            fire(first, "arcm-2", "communication_lost", False, source="arcm")
            fire(second, "arcm-2", "communication_lost", False, source="gsm")
            fire(second, "arcm-2", "communication_lost", False, source="arcm")
            await asyncio.gather(settle(first), settle(second))
        async with first.storage.engine.connect() as conn:
            active = (await conn.execute(
                select(func.count()).select_from(alarms).where(alarms.c.status == "active")
            )).scalar()
        assert active == 0
        # Each round one hub raised and the other found the slot taken and merged into it.
        assert sum(len(r.of("alarm_raised")) for r in seen) == 5
    finally:
        for r in seen:
            r.close()
        await second.async_stop()
        await first.async_stop()


async def test_alarm_raised_is_caused_by_the_condition(hub: Any, recorder: Recorder) -> None:
    from hub.core.conditions import EVENT_DEVICE_CONDITION, Condition
    from hub.core.context import Context

    cause = Context(user_id="poller")
    hub.bus.async_fire(EVENT_DEVICE_CONDITION,
                       Condition.create("arcm-1", "smoke").as_dict(), context=cause)
    raised = await recorder.wait_for("alarm_raised")
    event = next(e for e in recorder.events if e.event_type == "alarm_raised")
    assert event.context.parent_id == cause.id and raised[0]["severity"] == "critical"


def test_threshold_settings_are_validated_with_the_key() -> None:
    from hub.core.config import ConfigError, validate_configuration

    from .conftest import make_plugins

    config = hub_config()
    config["devices"] = [dict(config["devices"][0],
                              thresholds={"residual_current": {"alarm": "much"}})]
    config["alarms"] = {"thresholds": {"temperature": {"hysteresis": "5 percent"}},
                        "severity": {"smoke": "urgent"}}
    with pytest.raises(ConfigError) as caught:
        validate_configuration(config, make_plugins())
    text = str(caught.value)
    assert "devices[0].thresholds.residual_current.alarm" in text
    assert "alarms.thresholds.temperature.hysteresis" in text
    assert "alarms.severity.smoke" in text


async def test_a_mirrored_reading_raises_no_threshold_alarm_here(tmp_path: Path) -> None:
    """Another worker's state (origin remote, issue 12): that worker checked its thresholds."""
    config = hub_config(alarms={"thresholds": {"residual_current": {"delay": 0}}})
    hub = await start_hub(tmp_path, config)
    recorder = Recorder(hub, "alarm_raised")
    try:
        now = time.time()
        hub.states.async_mirror("sensor.arcm_1_residual_current", "550",
                                {"unit_of_measurement": "mA"}, now, now)
        await settle(hub)
        assert recorder.of("alarm_raised") == []
        hub.states.async_set("sensor.arcm_1_residual_current", 560)  # a local reading does
        raised = await recorder.wait_for("alarm_raised")
        assert raised[0]["message"] == "剩余电流过大 560mA"
    finally:
        recorder.close()
        await hub.async_stop()
