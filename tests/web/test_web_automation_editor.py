"""Issue #10, items 6 and 7, in a real browser: the automation form beside the YAML editor (one
document, switching converts), the hub's validation errors next to the form field, versions with
a rollback behind a confirmation, and the language kept on the user record."""

from __future__ import annotations

from typing import Any

import aiohttp

from hub.http.tokens import create_token

from .conftest import WAIT, Site, at, login

LEAK = {
    "id": "leak_sms", "alias": "漏电短信", "project": "school-1",
    "triggers": [{"trigger": "numeric_state",
                  "entity_id": "sensor.arcm_1_residual_current", "above": 500}],
    "actions": [{"action": "arcm.mute", "data": {"device_id": "arcm-1"}}],
}


async def api(site: Site, method: str, path: str, body: Any = None) -> Any:
    token = await create_token(site.hub.storage, f"setup-{method}-{path}", None)
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{site.url}{path}", json=body,
            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def open_editor(page: Any, automation_id: str) -> None:
    row = page.locator(f'#auto-rows tr[data-automation="{automation_id}"]')
    await row.wait_for()
    await row.locator("button").click()
    await page.wait_for_function(
        "id => document.querySelector('#auto-form .field[data-key=\"id\"] input')?.value === id",
        arg=automation_id)


def field(page: Any, path: str) -> Any:
    return page.locator(f'#auto-form .field[data-path="{path}"]')


async def test_create_an_automation_with_the_form_and_see_it_in_yaml(site: Site, page: Any) -> None:
    await login(page, site, "project_admin", "/automations")
    await page.click("#auto-new")
    # The form is the first view; a new automation starts from a small example.
    await page.locator("#pane-form").wait_for()
    await page.get_by_label("ID", exact=True).fill("form_leak")
    await page.get_by_label("名称", exact=True).fill("表单漏电")
    await field(page, "project").locator("input").fill("school-1")
    await field(page, "triggers[0].above").locator("input").fill("300")
    await field(page, "triggers[0].for").locator("input").fill("30s")

    # A condition: only on Monday mornings.
    await page.click('button.af-add[data-section="conditions"]')
    condition = page.locator('.af-row[data-path="conditions[0]"]')
    await condition.locator("select.af-kind").select_option("time")
    await condition.get_by_label("晚于（HH:MM）").fill("08:00")
    await condition.get_by_label("周一").check()

    # The example's notification, then a work order added as a second action.
    await field(page, "actions[0].data.message").locator("textarea").fill("漏电 {{ trigger.to_state.state }} mA")
    await page.click('button.af-add[data-section="actions"]')
    second = page.locator('.af-row[data-path="actions[1]"]')
    await second.locator("select.af-kind").select_option("workorder")
    await second.get_by_label("标题").fill("检查漏电")
    await second.get_by_label("优先级").select_option("high")

    # The YAML view shows the same document.
    await page.click("#tab-yaml")
    text = await page.locator("#editor-text").input_value()
    for piece in ("id: form_leak", "above: 300", "for: 30s", "condition: time", "- mon",
                  "action: workorder.create", "title: 检查漏电", "priority: high"):
        assert piece in text, (piece, text)

    await page.click("#editor-save")
    await page.locator("#editor-status", has_text="已保存").wait_for()
    conf = site.hub.automations.automations["form_leak"].conf
    assert conf["project"] == "school-1"
    assert conf["triggers"][0]["above"] == 300 and conf["triggers"][0]["for"] == 30
    assert conf["conditions"][0]["weekday"] == ["mon"]
    assert conf["actions"][0]["data"]["message"] == "漏电 {{ trigger.to_state.state }} mA"
    assert conf["actions"][1] == {**conf["actions"][1], "action": "workorder.create",
                                  "data": {"title": "检查漏电", "priority": "high"}}
    await page.locator('#auto-rows tr[data-automation="form_leak"]').wait_for()

    # Back in the form, the saved automation's id is fixed.
    await page.click("#tab-form")
    assert await page.get_by_label("ID", exact=True).get_attribute("readonly") is not None


async def test_unknown_kinds_stay_and_a_validation_error_sits_next_to_its_field(
        site: Site, page: Any) -> None:
    await api(site, "POST", "/api/automations", {
        **LEAK, "actions": [*LEAK["actions"], {"repeat": {"count": 2, "sequence": [
            {"action": "arcm.mute", "data": {"device_id": "arcm-1"}}]}}]})
    await login(page, site, "project_admin", "/automations")
    await open_editor(page, "leak_sms")
    # The form does not edit `repeat`: it shows it read-only and keeps it.
    await page.locator('.af-row[data-path="actions[1]"] pre.af-readonly', has_text="repeat").wait_for()

    above = field(page, "triggers[0].above")
    await above.locator("input").fill("lots")
    await page.click("#editor-save")
    error = above.locator(".field-error")
    await error.wait_for()
    assert "number" in await error.inner_text()
    assert await above.locator("input").get_attribute("aria-invalid") == "true"
    assert site.hub.automations.automations["leak_sms"].conf["triggers"][0]["above"] == 500

    # YAML the form cannot read keeps the YAML view, with the line.
    await above.locator("input").fill("650")
    await page.click("#tab-yaml")
    editor = page.locator("#editor-text")
    assert "above: 650" in await editor.input_value()
    await editor.fill((await editor.input_value()) + "\n  bad: [unclosed\n")
    await page.click("#tab-form")
    await page.locator("#editor-errors li", has_text="第").wait_for()
    assert await page.locator("#pane-yaml").is_visible()

    fixed = (await editor.input_value()).replace("\n  bad: [unclosed\n", "\n").replace(
        "above: 650", "above: 650  # 漏电阈值")
    await editor.fill(fixed)
    await page.click("#tab-form")
    await page.locator("#pane-form").wait_for()
    # Untouched in the form, the text comes back as written, comment and all.
    await page.click("#tab-yaml")
    assert await editor.input_value() == fixed
    await page.click("#tab-form")
    await page.locator("#pane-form").wait_for()
    await page.keyboard.press("Control+s")
    await page.locator("#editor-status", has_text="已保存").wait_for()
    conf = site.hub.automations.automations["leak_sms"].conf
    assert conf["triggers"][0]["above"] == 650
    assert conf["actions"][1]["repeat"]["count"] == 2

    # Saved from the YAML view, a comment typed in the browser lands in automations.yaml.
    await page.click("#tab-yaml")
    typed = (await editor.input_value()).replace("above: 650", "above: 700  # 夜间提高阈值")
    await editor.fill(typed)
    # "已保存" still shows from the save above: wait for this save's answer, not for the text.
    async with page.expect_response(lambda r: r.request.method == "PUT"
                                    and "/api/automations/leak_sms" in r.url) as answer:
        await page.click("#editor-save")
    assert (await answer.value).ok
    await page.locator("#editor-status", has_text="已保存").wait_for()
    assert site.hub.automations.automations["leak_sms"].conf["triggers"][0]["above"] == 700
    written = (site.hub.config_dir / "automations.yaml").read_text(encoding="utf-8")
    assert "above: 700  # 夜间提高阈值" in written
    assert "# 夜间提高阈值" in await editor.input_value()  # reloaded from the file


async def test_roll_back_to_a_previous_version(site: Site, page: Any) -> None:
    await api(site, "POST", "/api/automations", LEAK)
    await api(site, "PUT", "/api/automations/leak_sms", {
        **LEAK, "triggers": [{**LEAK["triggers"][0], "above": 600}]})
    await login(page, site, "project_admin", "/automations")
    await open_editor(page, "leak_sms")
    await page.click("#tab-versions")
    versions = page.locator("#version-list li")
    await versions.nth(1).wait_for()
    newest = versions.first
    assert "版本 2" in await newest.inner_text()
    await newest.locator("summary").click()
    await newest.locator("del", has_text="above: 500").wait_for()
    await newest.locator("ins", has_text="above: 600").wait_for()

    rollback = page.locator('#version-list li[data-version="1"] button')
    await rollback.click()
    await page.locator("#confirm-dialog").wait_for()
    await page.click("#confirm-cancel")  # nothing happens without the confirmation
    assert site.hub.automations.automations["leak_sms"].conf["triggers"][0]["above"] == 600

    await rollback.click()
    await page.click("#confirm-ok")
    await page.locator("#editor-status", has_text="已回滚到版本 1（新版本 3）").wait_for()
    assert site.hub.automations.automations["leak_sms"].conf["triggers"][0]["above"] == 500
    third = page.locator('#version-list li[data-version="3"]')
    await third.wait_for()
    assert "王工" in await third.inner_text() and "回滚" in await third.inner_text()
    # Both editor views show the rolled-back automation.
    await page.click("#tab-yaml")
    assert "above: 500" in await page.locator("#editor-text").input_value()


async def test_language_follows_the_user_to_a_fresh_browser(site: Site, browser: Any) -> None:
    first = await browser.new_context()
    page = await first.new_page()
    page.set_default_timeout(WAIT)
    await login(page, site, "user", "/")
    await page.click("#lang-switch")
    await page.wait_for_url(f"{site.url}/?lang=en")
    await page.locator('#nav a[data-nav="nav_home"]', has_text="Home").wait_for()
    await first.close()
    user = await site.hub.auth.users.get_by_name("张老师")
    assert user is not None and user.language == "en"

    # Another browser (no cookie, no storage): signed in again, the pages are in English.
    second = await browser.new_context()
    page = await second.new_page()
    page.set_default_timeout(WAIT)
    await login(page, site, "user", "/hazards")
    assert await page.locator("html").get_attribute("lang") == "en"
    assert await page.locator("#nav a[aria-current=page]").inner_text() == "Hazards"
    # And back to Chinese, kept the same way.
    await page.click("#lang-switch")
    await page.wait_for_url(at(f"{site.url}/hazards?lang=zh-CN"))  # then #events is added
    await page.goto(f"{site.url}/monitor")
    assert await page.locator("html").get_attribute("lang") == "zh-CN"
    await second.close()
    user = await site.hub.auth.users.get_by_name("张老师")
    assert user is not None and user.language == "zh-CN"


async def test_the_form_on_a_phone_by_keyboard(site: Site, page: Any) -> None:
    await api(site, "POST", "/api/automations", LEAK)
    await page.set_viewport_size({"width": 390, "height": 800})
    await login(page, site, "project_admin", "/automations")
    await open_editor(page, "leak_sms")
    # Nothing wider than the phone, and every field says what it is.
    assert await page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    unlabelled = await page.evaluate("""() => [...document.querySelectorAll(
        '#auto-form input, #auto-form select, #auto-form textarea')]
        .filter((f) => !f.labels.length && !f.getAttribute('aria-label')).map((f) => f.outerHTML)""")
    assert unlabelled == []

    # The focus lands in the form; arrow keys move between the views; the kind of a row is a
    # select that the keyboard changes, and the new kind's fields come with it.
    assert await page.evaluate("document.activeElement.closest('#auto-form') !== null")
    await page.focus("#tab-form")
    await page.keyboard.press("ArrowRight")
    assert await page.evaluate("document.activeElement.id") == "tab-yaml"
    assert await page.locator("#editor-text").is_visible()
    await page.keyboard.press("ArrowLeft")
    kind = page.locator('.af-row[data-path="triggers[0]"] select.af-kind')
    await kind.focus()
    await page.keyboard.press("ArrowDown")  # numeric_state -> alarm
    await field(page, "triggers[0].on").wait_for()
    assert await page.evaluate("document.activeElement.classList.contains('af-kind')")
