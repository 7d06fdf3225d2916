"""The device page's 24 h charts drawn from the real history API (`GET /api/history/{entity_id}`,
rollups written by the recorder): a series with readings in the last 24 h is drawn with the
points the API returns; a group whose only reading is older than 24 h says 暂无历史数据."""

from __future__ import annotations

import time
from typing import Any

from .conftest import Site, login

CHART = "#charts figure[data-group={group}]"


async def test_device_charts_draw_recorded_history_and_say_when_there_is_none(
        site: Site, page: Any) -> None:
    hub = site.hub
    await hub.devices.async_upsert(id="arcm-3", name="配电箱3", platform="meter",
                                   project="school-1-a", location="二层")
    for entity_id, unit in [("sensor.arcm_3_residual_current", "mA"),
                            ("sensor.arcm_3_voltage_a", "V")]:
        await hub.entities.async_register(entity_id, "meter", device_id="arcm-3", unit=unit)
    now = time.time()
    attrs = {"device_id": "arcm-3", "unit_of_measurement": "mA"}
    for minutes_ago, value in [(90, 31.0), (60, 33.0), (30, 35.0)]:
        hub.states.async_set("sensor.arcm_3_residual_current", value, attrs,
                             timestamp=now - minutes_ago * 60)
    # The only voltage reading is 26 h old: known entity, nothing inside the 24 h window.
    hub.states.async_set("sensor.arcm_3_voltage_a", 230.0,
                         {"device_id": "arcm-3", "unit_of_measurement": "V"},
                         timestamp=now - 26 * 3600)
    await hub.recorder.async_flush()

    await login(page, site, "user", "/monitor/arcm-3")
    residual = page.locator(CHART.format(group="chart_residual"))
    await residual.locator("canvas").wait_for()
    assert await residual.get_attribute("data-empty") is None
    voltage = page.locator(CHART.format(group="chart_voltage"))
    await voltage.locator(".no-history", has_text="暂无历史数据").wait_for()

    # The chart holds what the API answers for the same window: three 5-minute buckets.
    series = await page.evaluate(
        "echarts.getInstanceByDom(document.querySelector("
        "'#charts figure[data-group=chart_residual] .chart')).getOption().series[0].data")
    assert [point[1] for point in series] == [31.0, 33.0, 35.0]
