"""The monthly report (GET /api/reports/monthly, `voltwatch report monthly`) checked against a
month seeded at known times: alarms and their acknowledgements, work orders, hazard warnings
and residual-current readings written through the recorder (so the daily rollups are the
real ones). The HTML is parsed for its figures; the PDF is read back with pypdf. On SQLite and
PostgreSQL (`db_url`)."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pypdf
import yaml
from aiohttp import ClientSession

from hub.cli import main as cli_main
from hub.http import tokens
from tests.alarms.conftest import PROJECTS

from .conftest import FakeClock, Recorder, hazard_config, install_clock, start_hub
from .test_statistics_month import _raise, at

RESIDUAL = "sensor.arcm_1_residual_current"


class Figures(HTMLParser):
    """Every `data-figure` value of a report, keyed by the figure's name and by the
    `data-device` / `data-row` / `data-type` of the row holding it."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[tuple[str, str], str] = {}
        self._row = ""
        self._open: tuple[str, str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr":
            self._row = a.get("data-device") or a.get("data-row") or a.get("data-type") or ""
        if "data-figure" in a:
            self._open = (self._row, a["data-figure"] or "")
            self.figures[self._open] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "b", "span"):
            self._open = None
        if tag == "tr":
            self._row = ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._open is not None:
            self.figures[self._open] += data.strip()


def figures(html: str) -> Figures:
    parser = Figures()
    parser.feed(html)
    return parser


async def _seed(hub: Any) -> None:
    recorder = Recorder(hub, "alarm_raised")
    first = await _raise(hub, recorder, "arcm-1", "residual_current_high",
                         at("2026-03-01T00:30:00"), value=550, unit="mA")
    second = await _raise(hub, recorder, "arcm-1", "temperature_high_1",
                          at("2026-03-15T12:00:00"), value=85, unit="°C")
    fault = await _raise(hub, recorder, "arcm-2", "communication_lost", at("2026-03-20T08:00:00"))
    await _raise(hub, recorder, "arcm-1", "hazard_warning", at("2026-03-25T09:00:00"),
                 value=252, unit="mA", entity_id=RESIDUAL, source="hazard_analysis",
                 detail="剩余电流日峰值持续上升")
    await _raise(hub, recorder, "arcm-3", "over_voltage", at("2026-04-01T00:10:00"))  # April
    # acknowledged after 60 s, 300 s and 1200 s
    for record, delay in ((first, 60), (second, 300), (fault, 1200)):
        hub.alarms.clock = lambda t=record["started_at"], d=delay: (
            datetime.fromisoformat(t).timestamp() + d)
        await hub.alarms.async_acknowledge([record["id"]])

    clock = FakeClock(at("2026-03-10T10:00:00"))
    install_clock(hub, clock)
    fixed, _ = await hub.workorders.async_create(alarm_id=first["id"], assignee="李")
    await hub.workorders.async_update(fixed["id"], status="accepted")
    clock.advance(7200)
    await hub.workorders.async_update(fixed["id"], status="repaired")
    clock.advance(3600)  # closed 3 h after it was opened
    await hub.workorders.async_update(fixed["id"], status="closed")
    clock.now = at("2026-03-20T09:00:00")  # due in 1 h, never repaired: overdue
    await hub.workorders.async_create(device_id="arcm-2", title="通讯", assignee="王",
                                      due_in=3600)
    cancelled, _ = await hub.workorders.async_create(device_id="arcm-1", title="误报")
    await hub.workorders.async_update(cancelled["id"], status="closed", note="误报")
    clock.now = at("2026-04-05T09:00:00")

    # arcm-1's residual current: 10 days whose peaks rise 5 mA a day (100 .. 145 mA)
    await hub.entities.async_register(RESIDUAL, "meter", device_id="arcm-1", unit="mA")
    for day in range(10):
        start = at(f"2026-03-{day + 10:02d}T08:00:00")
        for hour, value in ((0, 50.0), (4, 100.0 + 5 * day), (8, 60.0)):
            hub.states.async_set(RESIDUAL, value, {"unit_of_measurement": "mA"},
                                 timestamp=start + hour * 3600)
    await hub.recorder.async_flush()


async def test_monthly_report_html_and_pdf(tmp_path: Path, db_url: str) -> None:
    hub = await start_hub(tmp_path, hazard_config(db_url))
    try:
        await _seed(hub)
        token = await tokens.create_token(hub.storage, "月报")
        auth = {"Authorization": f"Bearer {token}"}
        base = "/api/reports/monthly?month=2026-03&project=school-1"
        async with ClientSession(base_url=hub.http.url) as client:
            async with client.get(base, headers=auth) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.content_type == "text/html"
                html = await resp.text()
            async with client.get(base + "&lang=en", headers=auth) as resp:
                english = await resp.text()
            async with client.get(base + "&format=pdf", headers=auth) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.content_type == "application/pdf"
                assert "school-1-2026-03.pdf" in resp.headers["Content-Disposition"]
                pdf = await resp.read()
            async with client.get("/api/reports/monthly?month=2026-03&project=hospital-1",
                                  headers=auth) as resp:
                hospital = await resp.text()
            async with client.get(base + "&format=docx", headers=auth) as resp:
                assert resp.status == 400
                assert "format" in (await resp.json())["error"]
            async with client.get("/api/reports/monthly?month=2026-03") as resp:
                assert resp.status == 401
    finally:
        await hub.async_stop()

    found = figures(html)
    f = found.figures
    assert "第一中学 · 月度报告 2026-03" in "".join(found.text)
    # school-1 with school-1-a: arcm-1 and arcm-2; April and hospital-1 are left out
    assert (f[("", "total_alarm")], f[("", "total_fault")], f[("", "total_event")]) == (
        "2", "1", "1")
    assert f[("", "hazard_warnings")] == "1" and f[("", "hazard_warning_count")] == "1"
    assert f[("residual_current_high", "type_count")] == "1"
    assert f[("communication_lost", "type_count")] == "1"
    # riskiest: arcm-1 (2 alarms, 1 hazard warning, peaks rising 5 mA/day to 145 mA)
    assert f[("arcm-1", "alarm")] == "2" and f[("arcm-1", "hazard_warning")] == "1"
    assert f[("arcm-1", "residual_peak")] == "145.0"
    assert f[("arcm-1", "residual_slope")] == "+5.00"
    assert f[("arcm-2", "fault")] == "1" and f[("arcm-2", "residual_slope")] == "—"
    # raised -> acknowledged: alarms 60 s and 300 s, the fault 1200 s
    assert f[("response_alarm", "count")] == "2" and f[("response_alarm", "mean")] == "3分"
    assert f[("response_alarm", "max")] == "5分"
    assert f[("response_fault", "mean")] == "20分"
    assert f[("", "response_mean")] == "8分40秒"  # (60 + 300 + 1200) / 3
    # opened -> closed as repaired: 3 h; the cancelled order is not a repair
    assert f[("repair", "count")] == "1" and f[("repair", "mean")] == "3小时"
    assert (f[("", "wo_opened")], f[("", "wo_closed")], f[("", "wo_repaired")],
            f[("", "wo_cancelled")], f[("", "wo_overdue")]) == ("3", "2", "1", "1", "1")
    # daily rollups: peaks 100 .. 145 mA; mean of every reading (30 of them)
    assert f[("", "residual_current_max")] == "145.0"
    assert f[("", "residual_current_mean")] == f"{(50 * 10 + 60 * 10 + sum(100 + 5 * d for d in range(10))) / 30:.1f}"
    assert html.count("<svg") >= 2 and "<script" not in html

    eng = figures(english)
    assert "第一中学 · Monthly report 2026-03" in "".join(eng.text)
    assert eng.figures[("response_alarm", "mean")] == "3 min"
    assert eng.figures[("repair", "mean")] == "3 h"

    hosp = figures(hospital).figures
    assert hosp[("", "total_alarm")] == "0" and hosp[("", "wo_opened")] == "0"
    assert "arcm-1" not in hospital

    assert pdf.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = "".join(page.extract_text() for page in reader.pages)
    assert "第一中学" in text and "月度报告" in text and "2026-03" in text
    assert "隐患预警" in text and "配电箱1" in text
    assert "145.0" in text and "+5.00" in text and "8分40秒" in text  # figures, as in the HTML


async def cli(argv: list[str]) -> int:
    """The command as a user runs it (its own event loop, so in a thread here)."""
    return await asyncio.to_thread(cli_main, argv)


async def test_monthly_report_cli(tmp_path: Path, db_url: str) -> None:
    config = hazard_config(db_url)
    hub = await start_hub(tmp_path, config)
    try:
        await _seed(hub)
    finally:
        await hub.async_stop()
    (tmp_path / "configuration.yaml").write_text(yaml.safe_dump(
        {"hub": config["hub"], "database": config["database"], "projects": PROJECTS},
        allow_unicode=True), encoding="utf-8")
    out = tmp_path / "march.pdf"
    assert await cli(["report", "monthly", "--config", str(tmp_path), "--project", "school-1",
                     "--month", "2026-03", "-o", str(out)]) == 0
    text = "".join(p.extract_text() for p in pypdf.PdfReader(out).pages)
    assert "第一中学" in text and "月度报告" in text
    page = tmp_path / "march.html"
    assert await cli(["report", "monthly", "--config", str(tmp_path), "--project", "school-1",
                     "--month", "2026-03", "-o", str(page), "--lang", "en"]) == 0
    f = figures(page.read_text(encoding="utf-8")).figures
    assert (f[("", "total_alarm")], f[("", "total_fault")]) == ("2", "1")
    assert f[("repair", "mean")] == "3 h"
    assert await cli(["report", "monthly", "--config", str(tmp_path), "--project", "nowhere",
                     "--month", "2026-03", "-o", str(page)]) == 2
    assert await cli(["report", "monthly", "--config", str(tmp_path), "--month", "2026-13",
                     "-o", str(page)]) == 2
