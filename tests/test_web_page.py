"""The live page in a real headless Chromium: sign in with a token, watch a value change."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.http.tokens import create_token
from hub.hub import Hub

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def hub(tmp_path: Path):
    hub = Hub(
        tmp_path,
        config={
            "hub": {"name": "测试站", "language": "zh-CN"},
            "http": {"port": 0},
            "database": {"url": "sqlite+aiosqlite:///test.db"},
        },
    )
    await hub.async_start()
    yield hub
    await hub.async_stop()


@pytest.fixture
async def page():
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = await browser.new_page()
        yield page
        await browser.close()


async def test_live_value_changes_without_reload(hub: Hub, page) -> None:
    hub.states.async_set(
        "sensor.arcm_1_residual_current", 12,
        {"unit_of_measurement": "mA", "friendly_name": "配电箱1 剩余电流", "device_id": "arcm-1"},
    )
    token = await create_token(hub.storage, "browser-test", None)
    await page.goto(f"{hub.http.url}/?token={token}")
    row = page.locator('tr[data-entity="sensor.arcm_1_residual_current"]')
    await row.locator("td", has_text="12 mA").wait_for(timeout=15_000)
    assert await page.locator("#conn").inner_text() == "已连接"
    assert "token=" not in page.url  # the token is not left in the address bar

    hub.states.async_set(
        "sensor.arcm_1_residual_current", 550,
        {"unit_of_measurement": "mA", "friendly_name": "配电箱1 剩余电流", "device_id": "arcm-1"},
    )
    await row.locator("td", has_text="550 mA").wait_for(timeout=15_000)

    # The plugin panel is an htmx fragment fetched with the same token.
    await page.locator("#plugins table").wait_for(timeout=15_000)


async def test_english_and_bad_token(hub: Hub, page) -> None:
    await page.goto(f"{hub.http.url}/?lang=en&token=vw_not_a_token")
    await page.locator("#login").wait_for(state="visible", timeout=15_000)
    assert await page.locator("#login h2").inner_text() == "Sign in"
    # The language choice is remembered.
    await page.goto(f"{hub.http.url}/")
    assert await page.locator("html").get_attribute("lang") == "en"
