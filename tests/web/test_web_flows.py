"""The five flows of issue #10 in a real browser against a real hub and a Modbus simulator:
watch a live value change, receive a new alarm and acknowledge it, trip a breaker through the
confirmation, edit an automation and see a validation error; plus the device page, the event
log (batch acknowledge, CSV) and settings."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.http.tokens import create_token

from .conftest import Site, login


async def raise_leak(site: Site, unit: int = 1, value: int = 550) -> None:
    """Residual current above the detector's 300 mA setpoint, with no delay: an alarm."""
    site.sim.units[unit].regs[49] = 0
    site.sim.units[unit].set_override("residual_current", value)


async def test_live_value_changes_without_reload(site: Site, page: Any) -> None:
    await login(page, site, "user", "/monitor")
    chip = page.locator('[data-entity="sensor.arcm_1_residual_current"]')
    await chip.locator("b", has_text="30 mA").wait_for()
    # Only the user's project: arcm-2 (hospital) is not on the page.
    assert await page.locator('tr[data-device="arcm-2"]').count() == 0
    assert await page.locator('tr[data-device="arcm-1"] .online').inner_text() == "在线"

    site.sim.units[1].set_override("residual_current", 123)
    await chip.locator("b", has_text="123 mA").wait_for()
    # The tree: choosing a project keeps only its devices.
    await page.locator('#tree a[data-project="school-1-a"]').click()
    assert "project=school-1-a" in page.url
    await page.locator('tr[data-device="arcm-1"]').wait_for()


async def test_new_alarm_banner_sound_and_acknowledge(site: Site, page: Any) -> None:
    await login(page, site, "user", "/")
    await page.locator("#count-unacked", has_text="0").wait_for()
    await raise_leak(site)

    banner = page.locator("#alarm-banner")
    await banner.locator("#banner-text", has_text="剩余电流过大 550mA").wait_for()
    assert "配电箱1" in await banner.inner_text()
    assert await page.locator("body").get_attribute("data-sound") == "alarm"
    await page.click("#banner-mute")
    assert await page.locator("body").get_attribute("data-sound") == ""

    row = page.locator("#unacked tr", has_text="剩余电流过大 550mA")
    await row.wait_for()
    await page.locator("#count-unacked", has_text="1").wait_for()
    await page.locator("#live-alarms li", has_text="剩余电流过大").first.wait_for()
    await row.locator("button").click()
    await row.wait_for(state="detached")
    await page.locator("#count-unacked", has_text="0").wait_for()

    rows = [r for r in await _alarms(site) if r["type"] == "residual_current_high"]
    assert rows and rows[0]["acked_by"] == "张老师", rows


async def test_reminders_of_my_projects_reach_the_home_page(site: Site, page: Any) -> None:
    await login(page, site, "user", "/")
    # One outside the user's projects first, then one inside: the stream is ordered, so once
    # the second is on the page the first would be too, had it been sent.
    for project, count in (("hospital-1", 7), ("school-1-a", 3)):
        site.hub.bus.async_fire("reminder", {
            "reason": "alarm_unacknowledged", "project": project, "ids": list(range(count)),
            "count": count, "repeat": False, "items": [],
            "message": f"{count} 条报警超过 10 分钟未确认",
            "message_en": f"{count} alarms unacknowledged for 10 minutes"})
    await page.locator("#live-alarms li.reminder", has_text="3 条报警超过 10 分钟未确认").wait_for()
    assert await page.locator("#live-alarms li.reminder").count() == 1


async def test_an_alarm_the_database_has_not_stored_yet_is_shown_then_acknowledged(
        site: Site, page: Any) -> None:
    """A stalled database (docs/alarms.md): the alarm is on the page at once, without an id;
    its acknowledge button works once `alarm_updated` brings the id."""
    import asyncio

    engine = site.hub.alarms
    real_insert = engine.store.insert
    gate = asyncio.Event()

    async def stalled_insert(row: dict[str, Any]) -> int:
        await gate.wait()
        return await real_insert(row)

    engine.store.insert = stalled_insert
    engine.store_timeout = 0.2
    try:
        await login(page, site, "user", "/")
        await page.locator("#count-unacked", has_text="0").wait_for()
        await raise_leak(site)
        await page.locator("#banner-text", has_text="剩余电流过大 550mA").wait_for()
        row = page.locator("#unacked tr", has_text="剩余电流过大 550mA")
        await row.wait_for()
        assert await row.locator("button").is_disabled()  # no id to acknowledge yet
        assert engine.provisional_total == 1
        gate.set()
        await row.locator("button:enabled").wait_for()
        assert await row.count() == 1  # the provisional row was replaced, not doubled
        await row.locator("button").click()
        await row.wait_for(state="detached")
        rows = [r for r in await _alarms(site) if r["type"] == "residual_current_high"]
        assert len(rows) == 1 and rows[0]["acked_by"] == "张老师", rows
    finally:
        gate.set()
        del engine.store.insert


async def _alarms(site: Site) -> list[dict[str, Any]]:
    import aiohttp

    token = await create_token(site.hub.storage, "checker", None)
    async with aiohttp.ClientSession() as session, session.get(
            f"{site.url}/api/alarms?device=arcm-1",
            headers={"Authorization": f"Bearer {token}"}) as resp:
        return list(await resp.json())


async def test_trip_a_breaker_through_the_confirmation(site: Site, page: Any) -> None:
    await login(page, site, "project_admin", "/control?device=arcm-1")
    await page.locator("#control-breaker", has_text="合闸").wait_for()
    trip = page.locator('#control-actions button[data-service="trip"]')

    await trip.click()
    dialog = page.locator("#confirm-dialog")
    await dialog.wait_for(state="visible")
    text = await page.locator("#confirm-text").inner_text()
    assert "配电箱1" in text and "配电室" in text and "分闸" in text, text
    await page.click("#confirm-cancel")
    await dialog.wait_for(state="hidden")
    assert site.sim.units[1].regs[34] & 1 == 0, "cancelled: nothing was sent"

    await trip.click()
    await page.click("#confirm-ok")
    result = page.locator("#control-result")
    await result.locator("text=设备已确认，断路器分闸").wait_for()
    assert "配电箱1" in await result.inner_text()
    assert site.sim.units[1].regs[34] & 1 == 1, "the simulator's breaker is open"
    await page.locator("#control-breaker", has_text="分闸").wait_for()  # live read-back

    # A setpoint out of range: the device's reason is shown, nothing changes.
    row = page.locator('#setpoints tr[data-param="residual_current_alarm"]')
    await row.locator("input").fill("5000")
    await row.locator("button").click()
    await page.click("#confirm-ok")
    await result.locator("text=20–1000").wait_for()
    assert "失败" in await result.inner_text()
    assert site.sim.units[1].regs[48] == 300

    # The language switch keeps the chosen device.
    await page.click("#lang-switch")
    await page.wait_for_url(f"{site.url}/control?device=arcm-1&lang=en")
    await page.locator('#control-actions button[data-service="trip"]', has_text="Trip").wait_for()


async def test_device_page_shows_values_and_open_alarms(site: Site, page: Any) -> None:
    await login(page, site, "user", "/monitor/arcm-1")
    await page.locator('#values dd[data-entity="sensor.arcm_1_voltage_a"]', has_text="220").wait_for()
    await raise_leak(site)
    await page.locator("#device-alarms tr", has_text="剩余电流过大 550mA").wait_for()
    # The charts are tests/web/test_web_history.py's subject (recorded readings vs none).
    assert await page.locator("#device-control").count() == 0  # a user may not control


async def test_event_log_filters_batch_acknowledge_and_csv(site: Site, page: Any) -> None:
    await raise_leak(site)
    await login(page, site, "project_admin", "/hazards")
    row = page.locator("#event-rows tr", has_text="剩余电流过大 550mA")
    await row.wait_for()
    await page.select_option('select[name="kind"]', "fault")
    await page.click('#event-filters button[type="submit"]')
    await row.wait_for(state="detached")
    await page.select_option('select[name="kind"]', "alarm")
    await page.click('#event-filters button[type="submit"]')
    await row.wait_for()

    # Dates are days in the hub's time zone (Asia/Shanghai), whatever the browser's.
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    await page.fill('input[name="since"]', today.isoformat())
    await page.click('#event-filters button[type="submit"]')
    await row.wait_for()
    await page.fill('input[name="since"]', "")
    await page.fill('input[name="until"]', (today - timedelta(days=1)).isoformat())
    await page.click('#event-filters button[type="submit"]')
    await row.wait_for(state="detached")
    await page.fill('input[name="until"]', "")
    await page.click('#event-filters button[type="submit"]')
    await row.wait_for()

    await page.check("#select-all")
    await page.fill("#batch-note", "现场已处理")
    await page.click("#batch-ack")
    await page.locator("#events-status", has_text="已确认 1 条").wait_for()
    await row.locator("td.acked", has_text="王工").wait_for()

    async with page.expect_download() as info:
        await page.click("#export-csv")
    download = await info.value
    text = (await download.path()).read_text(encoding="utf-8-sig")
    assert "剩余电流过大" in text and "arcm-1" in text

    # A work order from the alarm, then dispatched to someone from the work-order tab.
    await page.click("#batch-workorder")
    await page.locator("#events-status", has_text="已生成工单 #").wait_for()
    await page.click("#tab-workorders")
    await page.locator("#workorders").wait_for(state="visible")
    assert page.url.endswith("#workorders")
    order = page.locator("#wo-rows tr", has_text="待派单")
    await order.wait_for()
    await order.locator("td.step select").select_option("dispatched")
    await order.locator('td.step input[aria-label="负责人"]').fill("李师傅")
    await order.locator("td.step button").click()
    done = page.locator("#wo-rows tr", has_text="已派单")
    await done.locator("td", has_text="李师傅").wait_for()


async def test_edit_an_automation_and_see_the_validation_error(site: Site, page: Any) -> None:
    import aiohttp

    token = await create_token(site.hub.storage, "setup", None)
    automation = {
        "id": "leak_sms", "alias": "漏电短信", "project": "school-1",
        "triggers": [{"trigger": "numeric_state",
                      "entity_id": "sensor.arcm_1_residual_current", "above": 500}],
        "actions": [{"action": "arcm.mute", "data": {"device_id": "arcm-1"}}],
    }
    async with aiohttp.ClientSession() as session, session.post(
            f"{site.url}/api/automations", json=automation,
            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 201, await resp.text()

    await login(page, site, "project_admin", "/automations")
    row = page.locator('#auto-rows tr[data-automation="leak_sms"]')
    await row.wait_for()
    await row.locator("button").click()
    editor = page.locator("#editor-text")
    await page.wait_for_function(
        "document.getElementById('editor-text').value.includes('above: 500')")
    await page.click("#tab-yaml")  # the form is the first view (tests/web/test_web_automation_editor.py)
    text = await editor.input_value()
    await editor.fill(text.replace("above: 500", "above: lots"))
    await page.click("#editor-save")
    error = page.locator("#editor-errors li").first
    await error.wait_for()
    assert "above" in await error.inner_text()
    assert await editor.get_attribute("aria-invalid") == "true"
    assert site.hub.automations.automations["leak_sms"].conf["triggers"][0]["above"] == 500

    # A YAML syntax error names its line before anything is sent.
    await editor.fill(text + "\n  bad: [unclosed\n")
    await page.click("#editor-save")
    await page.locator("#editor-errors li", has_text="第").wait_for()

    await editor.fill(text.replace("above: 500", "above: 600"))
    await page.click("#editor-save")
    await page.locator("#editor-status", has_text="已保存").wait_for()
    assert site.hub.automations.automations["leak_sms"].conf["triggers"][0]["above"] == 600

    # Disable from the list, then a dry run over the last 24 h.
    await row.locator('input[type="checkbox"]').uncheck()
    await page.locator("#auto-status", has_text="已停用 leak_sms").wait_for()
    assert site.hub.automations.automations["leak_sms"].conf["enabled"] is False
    await page.click("#editor-dryrun")
    await page.locator(".dry-run-summary").wait_for()


async def test_the_editor_keeps_a_secret_a_reference(site: Site, page: Any) -> None:
    """The editor shows `!secret boss_phone` (never the number), parses it and saves it back:
    the file keeps the tag, the engine runs with the value."""
    import aiohttp

    phone = "13800000000"
    (site.hub.config_dir / "secrets.yaml").write_text(f"boss_phone: '{phone}'\n",
                                                      encoding="utf-8")
    token = await create_token(site.hub.storage, "setup", None)
    automation = {
        "id": "call_boss", "project": "school-1",
        "triggers": [{"trigger": "event", "event_type": "go"}],
        "actions": [{"action": "notify.sms", "if_missing": "skip",
                     "data": {"target": "!secret boss_phone", "message": "hi"}}],
    }
    async with aiohttp.ClientSession() as session, session.post(
            f"{site.url}/api/automations", json=automation,
            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 201, await resp.text()
    path = site.hub.config_dir / "automations.yaml"
    assert phone not in path.read_text(encoding="utf-8")

    await login(page, site, "project_admin", "/automations")
    row = page.locator('#auto-rows tr[data-automation="call_boss"]')
    await row.wait_for()
    await row.locator("button").click()
    await page.click("#tab-yaml")  # the form is the first view
    editor = page.locator("#editor-text")
    await page.wait_for_function(
        "document.getElementById('editor-text').value.includes('message: hi')")
    text = await editor.input_value()
    assert "!secret boss_phone" in text and phone not in text
    await editor.fill(text.replace("message: hi", "message: hello"))
    await page.click("#editor-save")
    await page.locator("#editor-status", has_text="已保存").wait_for()
    written = path.read_text(encoding="utf-8")
    assert "message: hello" in written and "!secret boss_phone" in written
    assert phone not in written
    data = site.hub.automations.automations["call_boss"].conf["actions"][0]["data"]
    assert data == {"target": phone, "message": "hello"}


async def test_settings_tabs_follow_the_role(site: Site, page: Any) -> None:
    await login(page, site, "user", "/settings")
    tabs = [t.strip() for t in await page.locator("#settings-tabs [role=tab]").all_inner_texts()]
    assert tabs == ["项目", "设备", "通知订阅", "插件"]
    await page.click("#tab-plugins")
    await page.locator("#plugin-table table", has_text="arcm").wait_for()

    await page.goto(f"{site.url}/settings#users")
    await page.click("#logout")
    # The logout script navigates to /login itself; a goto before it lands would be aborted.
    await page.wait_for_url("**/login")
    await login(page, site, "super_admin", "/settings")
    await page.locator("#user-rows tr[data-user='张老师']").wait_for()
    await page.click("#tab-audit")
    await page.locator("#audit-rows tr", has_text="auth.login").first.wait_for()
