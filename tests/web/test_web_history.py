"""The device page's 24 h charts against the history API's shape (issue #11 builds the real
endpoint): a stand-in plugin route answers `GET /api/history/{entity_id}` with points for the
residual current and 404 for everything else, as the real one does for an entity without
history. The chart draws the points it got and says 暂无历史数据 where there are none."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.core.hookspecs import hookimpl
from hub.http.routes import SCOPED, Route, json_response

from .conftest import login, make_site


class HistoryStandIn:
    """Twelve 5-minute buckets of the residual current; 404 for every other entity."""

    def __init__(self) -> None:
        self.asked: list[dict[str, str]] = []

    @hookimpl
    def voltwatch_http_routes(self, hub: Any) -> list[Any]:
        async def history(request: web.Request) -> web.StreamResponse:
            entity_id = request.match_info["entity_id"]
            self.asked.append({"entity_id": entity_id, **request.query})
            if entity_id != "sensor.arcm_1_residual_current":
                return json_response({"error": f"No history for {entity_id}", "status": 404},
                                     status=404)
            now = time.time()
            points = [{"t": datetime.fromtimestamp(now - (12 - i) * 300, UTC).isoformat(),
                       "mean": 20.0 + i, "min": 19.0 + i, "max": 21.0 + i, "last": 20.0 + i,
                       "count": 300} for i in range(12)]
            return json_response({"entity_id": entity_id, "resolution": "5m",
                                  "start": request.query["start"], "end": request.query["end"],
                                  "points": points})

        return [Route("GET", "/api/history/{entity_id}", history, "History (test stand-in)",
                      scope=SCOPED)]


async def test_device_charts_draw_history_and_say_when_there_is_none(tmp_path: Path,
                                                                     page: Any) -> None:
    stand_in = HistoryStandIn()
    async with make_site(tmp_path, {"history_stand_in": stand_in}) as site:
        await login(page, site, "user", "/monitor/arcm-1")
        residual = page.locator('#charts figure[data-group="chart_residual"]')
        await residual.locator("canvas").wait_for()
        assert await residual.get_attribute("data-empty") is None
        voltage = page.locator('#charts figure[data-group="chart_voltage"]')
        await voltage.locator(".no-history", has_text="暂无历史数据").wait_for()

        asked = next(a for a in stand_in.asked
                     if a["entity_id"] == "sensor.arcm_1_residual_current")
        start = datetime.fromisoformat(asked["start"])
        end = datetime.fromisoformat(asked["end"])
        assert abs((end - start).total_seconds() - 24 * 3600) < 1
        assert asked["resolution"] == "5m"
        # The series holds the twelve points (read back from the chart itself).
        count = await page.evaluate(
            "echarts.getInstanceByDom(document.querySelector("
            "'#charts figure[data-group=chart_residual] .chart')).getOption().series[0].data.length")
        assert count >= 12
