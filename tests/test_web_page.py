"""The live page in a real headless Chromium: sign in through the form (or with a token), watch
values change, see only what the user's projects hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.auth.audit import AuditQuery
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
            "projects": [{"id": "school-1", "name": "第一中学",
                          "children": [{"id": "school-1-a", "name": "教学楼A"}]},
                         {"id": "hospital-1", "name": "医院"}],
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
    await page.wait_for_url("**/login**", timeout=15_000)
    await page.locator("#login-box").wait_for(state="visible", timeout=15_000)
    assert await page.locator("#login-box h2").inner_text() == "Sign in"
    # The language choice is remembered.
    await page.goto(f"{hub.http.url}/")
    await page.wait_for_url("**/login**", timeout=15_000)
    assert await page.locator("html").get_attribute("lang") == "en"


def _reading(hub: Hub, device: str, value: float) -> None:
    obj = device.replace("-", "_")
    hub.states.async_set(
        f"sensor.{obj}_residual_current", value,
        {"unit_of_measurement": "mA", "friendly_name": f"{device} 剩余电流", "device_id": device},
    )


async def test_login_form_then_only_my_projects_live(hub: Hub, page) -> None:
    from hub.auth.users import hash_password

    await hub.devices.async_upsert(id="arcm-1", platform="meter", project="school-1-a")
    await hub.devices.async_upsert(id="arcm-9", platform="meter", project="hospital-1")
    await hub.auth.users.create("张老师", "user", await hash_password("correct horse"),
                                projects=["school-1"])
    _reading(hub, "arcm-1", 12)
    _reading(hub, "arcm-9", 99)

    await page.goto(f"{hub.http.url}/")
    await page.wait_for_url("**/login**", timeout=15_000)  # no session yet: the form
    await page.fill("#login-name", "张老师")
    await page.fill("#login-password", "wrong password")
    await page.click("#login-form button")
    await page.locator("#login-error").wait_for(state="visible", timeout=15_000)
    assert await page.locator("#login-error").inner_text() == "用户名或密码错误（或账号已停用）"

    await page.fill("#login-password", "correct horse")
    await page.click("#login-form button")
    await page.wait_for_url(f"{hub.http.url}/", timeout=15_000)
    mine = page.locator('tr[data-entity="sensor.arcm_1_residual_current"]')
    await mine.locator("td", has_text="12 mA").wait_for(timeout=15_000)
    await page.locator("#whoami", has_text="张老师").wait_for(timeout=15_000)
    assert await page.locator("#conn").inner_text() == "已连接"

    # A change outside the scope first, then one inside: the stream is ordered, so once the
    # second is on the page the first would have been too, had it been sent.
    _reading(hub, "arcm-9", 100)
    _reading(hub, "arcm-1", 13)
    await mine.locator("td", has_text="13 mA").wait_for(timeout=15_000)
    entities = await page.locator("tbody#states tr").evaluate_all(
        "rows => rows.map(r => r.dataset.entity)")
    assert entities == ["sensor.arcm_1_residual_current"]
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["voltwatch_session"]["httpOnly"] is True
    assert cookies["voltwatch_session"]["sameSite"] == "Strict"

    # The plugin panel (htmx) is fetched with the session too; signing out ends it.
    await page.locator("#plugins table").wait_for(timeout=15_000)
    await page.click("#logout")
    await page.wait_for_url("**/login**", timeout=15_000)
    rows = await hub.auth.audit.query(AuditQuery(action_prefixes=["auth"]))
    assert [(r["action"], r["result"]) for r in rows][:3] == [
        ("auth.logout", "ok"), ("auth.login", "ok"), ("auth.login", "failed")]
