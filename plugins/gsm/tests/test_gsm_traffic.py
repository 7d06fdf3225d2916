"""Traffic accounting and the data budget per DTU (issue #13).

Accounting is checked against the bytes the simulated DTU itself counted, with the modelled
TCP/IP overhead computed here from the DTU's own event counts (not by calling the model). The
budget runs on an injected wall clock, so "this month" is a fixed calendar month.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import voltwatch_gsm
import voluptuous as vol
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from gsm_testkit import IMEI_A, IMEI_B, close_harness, device, make_harness
from voltwatch_gsm.settings import MB, GsmSettings, data_size, percent
from voltwatch_gsm.simulator import SimOptions, SimStats, SimulatedDtu
from voltwatch_gsm.traffic import STATUS_OK, STATUS_OVER, STATUS_STRETCHED, Usage

from hub.core.conditions import EVENT_DEVICE_CONDITION
from hub.core.events import Event, callback
from hub.core.links import MeteredLink, PollSchedule
from hub.core.plugins import PluginManager
from hub.hub import Hub

HAVE_ARCM = any(ep.name == "arcm"
                for ep in importlib.metadata.entry_points(group="voltwatch.plugins"))
SHANGHAI = ZoneInfo("Asia/Shanghai")
JUNE_1 = dt.datetime(2025, 6, 1, 0, 0, tzinfo=SHANGHAI).timestamp()  # a 30-day month


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def schedule(device_id: str, unit: int, status: float, measure: float) -> PollSchedule:
    return PollSchedule(device_id=device_id, unit=unit, status_reads=[(32, 3)],
                        status_interval=status, measure_reads=[(0, 22)],
                        measure_interval=measure)


def test_sizes_and_percentages() -> None:
    assert data_size("30MB") == 30 * MB == data_size(30 * MB) == data_size("30 mb")
    assert data_size("512KB") == 512 * 1024 and data_size("1GB") == 1024 * MB
    assert percent("5%") == pytest.approx(0.05) and percent(0.1) == pytest.approx(0.1)
    with pytest.raises(vol.Invalid):
        data_size("lots")
    with pytest.raises(vol.Invalid):
        data_size(30)  # bytes: surely meant 30MB
    # Validating a validated section changes nothing (the core validates first).
    once = GsmSettings.from_config({"budget": "20MB", "traffic": {"cellular_overhead": "7%"}})
    from voltwatch_gsm.settings import GSM_SCHEMA
    again = GsmSettings.from_config(GSM_SCHEMA({"budget": "20MB",
                                                "traffic": {"cellular_overhead": "7%"}}))
    assert again == once
    settings = GsmSettings.from_config({"budget": "20MB", "dtus": {
        IMEI_A: {"budget": "50MB", "heartbeat_timeout": "60s", "status_interval": "15s"}}})
    assert settings.for_dtu(IMEI_A, "budget") == 50 * MB
    assert settings.for_dtu("860000000000009", "budget") == 20 * MB
    assert settings.for_dtu(IMEI_A, "heartbeat_timeout") == 60.0
    with pytest.raises(vol.Invalid):
        GsmSettings.from_config({"dtus": {"12345": {}}})


async def test_accounting_equals_the_dtus_own_byte_counts(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, devices=[device("arcm-a1", IMEI_A, 1)])
    try:
        sim = await h.start_sim(IMEI_A, [1, 2], heartbeat_interval=0.02)
        link = h.link(IMEI_A, 1)
        server = h.server
        dtu = server.dtus[IMEI_A]
        for _ in range(5):
            await link.read_holding_registers(1, 0, 22)
            await link.read_holding_registers(2, 32, 3)
        await link.write_register(1, 48, 400)
        await server.wait_until(lambda: dtu.heartbeats >= 3)
        sim.close()  # stop the DTU so both sides have finished counting
        await server.wait_until(lambda: not dtu.connected)

        server.traffic.settle()
        entry = server.traffic.entry(IMEI_A)
        month = entry.month_usage()
        own = sim.own
        assert month.up == own.bytes_sent and month.down == own.bytes_received
        assert own.requests == 11 and own.replies == 11 and own.connects == 1
        assert own.heartbeats == dtu.heartbeats >= 3
        # Default model: 40 bytes per packet; a request + 1 ACK, a reply, a heartbeat + its
        # ACK, the registration + its ACK, and 320 bytes of handshake per connection.
        expected = 40 * (own.requests * 2 + own.replies + own.heartbeats * 2
                         + own.connects * 2) + 320 * own.connects
        assert month.overhead == expected
        report = server.traffic.report(IMEI_A)
        assert report["month"]["up"] == own.bytes_sent
        assert report["month"]["total"] == round((own.bytes_sent + own.bytes_received
                                                  + expected) * 1.05)
        assert report["today"]["total"] == report["month"]["total"]
        # Settling again adds nothing: usage comes from counter growth, not from re-reading.
        server.traffic.settle()
        assert entry.month_usage().up == own.bytes_sent
    finally:
        await close_harness(h)


async def test_data_mode_prefixes_are_billed_too(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, gsm={"registration": "data"},
                           devices=[device("arcm-a1", IMEI_A, 1)])
    try:
        sim = await h.start_sim(IMEI_A, [1], registration="data")
        link = h.link(IMEI_A, 1)
        for _ in range(3):
            await link.read_holding_registers(1, 32, 3)
        sim.close()
        dtu = h.server.dtus[IMEI_A]
        await h.server.wait_until(lambda: not dtu.connected)
        h.server.traffic.settle()
        assert h.server.traffic.entry(IMEI_A).month_usage().up == sim.own.bytes_sent
    finally:
        await close_harness(h)


async def test_budget_stretches_measurements_and_says_why(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, gsm={"budget": "10MB"},
                           devices=[device("arcm-a1", IMEI_A, 1)])
    try:
        traffic = h.server.traffic
        traffic.clock = Clock(JUNE_1)
        link = h.link(IMEI_A, 1)
        assert isinstance(link, MeteredLink)
        changed: list[float] = []
        mine = schedule("arcm-a1", 1, status=100.0, measure=30.0)
        mine.on_change.append(lambda: changed.append(mine.measure_scale))
        withdraw = link.declare_schedule(mine)

        entry = traffic.entry(IMEI_A)
        assert entry.status == STATUS_STRETCHED
        assert mine.status_interval == 100.0  # never the status tier
        assert mine.measure_scale > 1.0 and changed == [mine.measure_scale]
        assert entry.projected <= 10 * MB and entry.projected_unstretched > 10 * MB
        assert "measurement interval stretched 30s ->" in mine.reason

        event = await h.condition("dtu-860000000000001", "data_budget_exceeded", True)
        assert event["kind"] == "event" and event["unit"] == "MB"
        assert event["message"].startswith("流量超预算 ")
        assert event["message_en"].startswith("Data budget exceeded ")
        assert event["value"] == pytest.approx(entry.projected_unstretched / MB, abs=0.01)

        # The reason is visible in the API; the event fires once a month, not per settle.
        app = web.Application()
        app.add_routes(voltwatch_gsm.voltwatch_http_routes(h.hub))
        async with TestClient(TestServer(app)) as client:
            body = await (await client.get("/api/gsm/dtus")).json()
        shown = {e["imei"]: e for e in body["dtus"]}[IMEI_A]["traffic"]
        assert shown["status"] == STATUS_STRETCHED and shown["budget_mb"] == 10
        assert "stretched" in shown["reason_en"] and shown["projected_month_mb"] <= 10
        assert shown["schedules"][0]["effective_measure_interval"] > 30
        assert body["stats"]["gsm_dtus_over_budget"] == 1
        traffic.settle()
        fired = [c for c in h.conditions if c["type"] == "data_budget_exceeded"]
        assert len(fired) == 1

        withdraw()
        assert entry.status == "idle" and entry.schedules == []
    finally:
        await close_harness(h)


async def test_status_polling_alone_over_budget_is_reported(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, gsm={"budget": "8MB", "dtus": {IMEI_B: {"budget": "1MB"}}},
                           devices=[device("arcm-a1", IMEI_A, 1), device("arcm-b1", IMEI_B, 1)])
    try:
        traffic = h.server.traffic
        traffic.clock = Clock(JUNE_1)
        link = h.link(IMEI_A, 1)
        mine = schedule("arcm-a1", 1, status=10.0, measure=300.0)
        link.declare_schedule(mine)
        entry = traffic.entry(IMEI_A)
        assert entry.status == STATUS_OVER
        assert mine.status_interval == 10.0
        assert mine.effective_measure_interval == 86400.0  # stretched to its limit, no more
        assert entry.fit_status_interval is not None and entry.fit_status_interval > 10
        assert f"status_interval >= {entry.fit_status_interval}s" in mine.reason
        # Where even the heartbeats do not fit, only a bigger plan helps.
        other = schedule("arcm-b1", 1, status=10.0, measure=300.0)
        h.link(IMEI_B, 1).declare_schedule(other)
        assert traffic.entry(IMEI_B).fit_status_interval is None
        assert other.reason.endswith("raise the budget")
        assert h.server.stats()["gsm_dtus_budget_unfit"] == 2
    finally:
        await close_harness(h)


async def test_a_budget_that_fits_changes_nothing(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, devices=[device("arcm-a1", IMEI_A, 1)])
    try:
        traffic = h.server.traffic
        traffic.clock = Clock(JUNE_1)
        mine = schedule("arcm-a1", 1, status=60.0, measure=300.0)
        h.link(IMEI_A, 1).declare_schedule(mine)
        entry = traffic.entry(IMEI_A)
        assert entry.status == STATUS_OK and mine.measure_scale == 1.0 and mine.reason is None
        assert entry.projected < 30 * MB
        recommended = traffic.report(IMEI_A)["heartbeat"]["recommended"]
        assert recommended["heartbeat_bytes_month"] <= 0.1 * 30 * MB
        assert recommended["heartbeat_timeout"] >= 2 * recommended["heartbeat_interval"]
        assert not [c for c in h.conditions if c["type"] == "data_budget_exceeded"]
    finally:
        await close_harness(h)


def _hub(tmp_path: Path) -> Hub:
    plugins = PluginManager()
    plugins.load_entrypoints(only=["gsm"])
    config: dict[str, Any] = {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        "http": {"enabled": False},
        "gsm": {"port": 0, "heartbeat_timeout": "180s"},
    }
    return Hub(tmp_path, config=config, plugin_manager=plugins)


async def test_usage_survives_a_hub_restart(tmp_path: Path) -> None:
    hub = _hub(tmp_path)
    await hub.async_start()
    task = None
    try:
        server = voltwatch_gsm.get_server(hub)
        link = hub.links.acquire({"transport": "gsm", "imei": IMEI_A, "unit": 1})
        sim = SimulatedDtu(IMEI_A, [1], SimOptions("127.0.0.1", server.port), SimStats())
        task = asyncio.get_running_loop().create_task(sim.run())
        await server.wait_until(lambda: IMEI_A in server.dtus and server.dtus[IMEI_A].connected)
        for _ in range(2):
            await link.read_holding_registers(1, 0, 22)
        server.traffic.settle()
        assert await server.traffic.flush() == 1  # the month's row is inserted
        for _ in range(2):
            await link.read_holding_registers(1, 0, 22)
        sim.close()
        await server.wait_until(lambda: not server.dtus[IMEI_A].connected)
        assert voltwatch_gsm.stats(hub)["gsm_bytes_estimated_total"] > 0
        before = server.traffic.entry(IMEI_A).month_usage()
        assert before.up == sim.own.bytes_sent
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await hub.async_stop()  # the final write updates the row

    hub = _hub(tmp_path)
    await hub.async_start()
    try:
        server = voltwatch_gsm.get_server(hub)
        after = server.traffic.entry(IMEI_A).month_usage()
        assert (after.up, after.down, after.overhead) == (before.up, before.down,
                                                          pytest.approx(before.overhead))
        stats = voltwatch_gsm.stats(hub)
        assert stats["gsm_bytes_month"] >= before.up + before.down
        assert stats["gsm_bytes_estimated_total"] == 0  # a counter of this process
    finally:
        await hub.async_stop()


@pytest.mark.skipif(not HAVE_ARCM, reason="the arcm plugin is not installed")
async def test_arcm_behind_a_dtu_polls_in_tiers_and_alarms_carry_values(tmp_path: Path) -> None:
    plugins = PluginManager()
    plugins.load_entrypoints(only=["gsm", "arcm", "modbus"])
    config = {
        "http": {"enabled": False},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        # Status every 50 ms, measurements every 10 min: only the alarm-triggered read can
        # give the alarm message a leak-time value.
        "gsm": {"port": 0, "status_interval": "50ms", "measure_interval": "10m"},
        "projects": [{"id": "market-1", "name": "中心市场"}],
        "devices": [{"id": "dtu1-arcm-1", "platform": "arcm", "project": "market-1",
                     "link": {"transport": "gsm", "imei": IMEI_A, "unit": 1}}],
    }
    hub = Hub(tmp_path, config=config, plugin_manager=plugins)
    found: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    @callback
    def on_condition(event: Event) -> None:
        data = event.data
        if data["type"] == "residual_current_high" and data["active"] and not found.done():
            found.set_result(data)

    await hub.async_start()
    task = None
    try:
        hub.bus.listen(EVENT_DEVICE_CONDITION, on_condition)
        from voltwatch_arcm import runtime_for

        arcm = runtime_for(hub)
        assert arcm is not None
        detector = arcm.devices["dtu1-arcm-1"]
        assert detector.tiered and detector.status_interval == 0.05
        assert detector.measure_interval == 600 and detector.measure_interval_source == "link"
        server = voltwatch_gsm.get_server(hub)
        sim = SimulatedDtu(IMEI_A, [1], SimOptions("127.0.0.1", server.port), SimStats())
        task = asyncio.get_running_loop().create_task(sim.run())
        await server.wait_until(lambda: IMEI_A in server.dtus and server.dtus[IMEI_A].connected)

        # A few good status polls after the first measurement (awaited, not slept on).
        while detector.tier_reads["measure"] < 1 or detector.good_polls < 4:
            await asyncio.wait_for(_next_poll(detector), 10)
        sim.units[1].raise_alarm(60.0)
        alarm = await asyncio.wait_for(found, 10)
        assert alarm["value"] >= 420 and alarm["message"].startswith("剩余电流过大 ")
        assert detector.tier_reads["alarm_measure"] == 1 and detector.tier_reads["measure"] == 1
        listing = server.listing()
        schedules = {e["imei"]: e for e in listing}[IMEI_A]["traffic"]["schedules"]
        assert schedules[0]["device_id"] == "dtu1-arcm-1"
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await hub.async_stop()


async def _next_poll(detector: Any) -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    unsub = detector.add_poll_listener(
        lambda _d: future.done() or future.set_result(None))
    try:
        await future
    finally:
        unsub()


def test_usage_rows_from_before_dropped_bytes_still_load() -> None:
    """A month stored by an older hub has three numbers a day; it loads with nothing dropped."""
    old = Usage.from_list([1000, 500, 40.5])
    assert (old.up, old.down, old.overhead, old.dropped) == (1000, 500, 40.5, 0)
    again = Usage.from_list(Usage(1000, 500, 40.5, 12000).as_list())
    assert again.dropped == 12000 and again.total(1.0) == 1000 + 500 + 40.5 + 12000
