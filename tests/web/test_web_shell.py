"""The shell in a real browser: sign in, navigation by role, language switch, token sign-in."""

from __future__ import annotations

from typing import Any

from hub.http.tokens import create_token

from .conftest import Site, login

ALL_NAV = ["首页", "实时监控", "隐患管理", "远程控制", "系统设置", "自动化"]


async def nav(page: Any) -> list[str]:
    return [text.strip() for text in await page.locator("#nav a").all_inner_texts()]


async def test_login_then_navigation_follows_the_role(site: Site, page: Any) -> None:
    await page.goto(f"{site.url}/monitor")
    await page.wait_for_url("**/login?next=/monitor")  # no session yet: the form
    await page.fill("#login-name", "张老师")
    await page.fill("#login-password", "wrong password")
    await page.click("#login-form button")
    await page.locator("#login-error").wait_for(state="visible")
    assert await page.locator("#login-error").inner_text() == "用户名或密码错误（或账号已停用）"

    await login(page, site, "user", "/monitor")
    assert await nav(page) == ["首页", "实时监控", "隐患管理", "系统设置"]  # no remote control
    assert await page.locator("#nav a[aria-current=page]").inner_text() == "实时监控"
    response = await page.goto(f"{site.url}/control")
    assert response.status == 403
    assert "无权访问" in await page.locator("main h1").inner_text()
    response = await page.goto(f"{site.url}/automations")
    assert response.status == 403

    # English, remembered across pages.
    await page.goto(f"{site.url}/?lang=en")
    assert await nav(page) == ["Home", "Live monitoring", "Hazards", "Settings"]
    await page.goto(f"{site.url}/hazards")
    assert await page.locator("html").get_attribute("lang") == "en"
    await page.click("#lang-switch")
    await page.wait_for_url(f"{site.url}/hazards?lang=zh-CN*")
    assert await page.locator("#nav a[aria-current=page]").inner_text() == "隐患管理"

    await page.click("#logout")
    await page.wait_for_url("**/login")


async def test_admin_sees_every_screen(site: Site, page: Any) -> None:
    await login(page, site, "project_admin")
    assert await nav(page) == ALL_NAV
    for path, marker in [("/monitor", "#devices"), ("/hazards", "#event-rows"),
                         ("/control", "#control-device"), ("/settings", "#settings-tabs"),
                         ("/automations", "#auto-rows")]:
        response = await page.goto(site.url + path)
        assert response.status == 200, path
        await page.locator(marker).wait_for(state="attached")
        await page.locator("#conn.ok").wait_for()


async def test_token_in_the_address_bar_signs_pages_in(site: Site, page: Any) -> None:
    token = await create_token(site.hub.storage, "browser-test", None)  # a system token
    await page.goto(f"{site.url}/monitor?token={token}")
    await page.locator("#conn.ok").wait_for()
    assert "token=" not in page.url  # not left in the address bar
    await page.goto(f"{site.url}/settings")  # the next page knows it too
    await page.locator("#conn.ok").wait_for()
    assert await nav(page) == ALL_NAV

    await page.goto(f"{site.url}/?lang=en&token=vw_not_a_token")
    await page.wait_for_url("**/login**")
    assert await page.locator("#login-box h2").inner_text() == "Sign in"


async def test_phone_layout_has_a_menu_button(site: Site, page: Any) -> None:
    await page.set_viewport_size({"width": 390, "height": 800})
    await login(page, site, "user")
    links = page.locator("#nav")
    assert not await links.is_visible()
    await page.click("#nav-toggle")
    assert await links.is_visible()
    assert await page.locator("#nav-toggle").get_attribute("aria-expanded") == "true"
    # Keyboard: the skip link is the first stop on a fresh page, then the menu button.
    await page.goto(f"{site.url}/monitor")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "nav-toggle"
    await page.keyboard.press("Enter")
    assert await links.is_visible()
