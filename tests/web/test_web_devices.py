"""Devices in 系统设置 (issue 10) in a real browser: an admin adds a detector and watches it in
live monitoring, edits and removes it, adopts a pending DTU; a user sees no edit controls and
the API refuses it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import voltwatch_gsm

from .conftest import Site, login, make_site

IMEI = "861234567890123"


async def test_admin_adds_a_device_and_sees_it_live(site: Site, page: Any) -> None:
    port = site.hub.config["devices"][0]["link"]["port"]
    await login(page, site, "project_admin", "/settings")
    await page.click("#tab-devices")
    # Devices of configuration.yaml are read-only here: the file owns them.
    await page.locator('tr[data-device="arcm-1"]', has_text="configuration.yaml").wait_for()
    form = page.locator("#device-form")
    await form.locator("[name=id]").fill("arcm-7")
    await form.locator("[name=name]").fill("新配电箱")
    await form.locator("[name=project]").select_option("school-1-a")
    await form.locator("[name=location]").fill("二层配电间")
    await form.locator("[name=poll_interval]").fill("200ms")
    await form.locator("[name=transport]").select_option("modbus_tcp")
    await form.locator("[name=host]").fill("127.0.0.1")
    await form.locator("[name=port]").fill(str(port))
    await form.locator("[name=unit]").fill("2")
    await form.locator("button[type=submit]").click()
    await page.locator('tr[data-device="arcm-7"]', has_text="新配电箱").wait_for()

    await page.goto(f"{site.url}/monitor")
    row = page.locator('tr[data-device="arcm-7"]')
    await row.wait_for()
    assert "新配电箱" in await row.inner_text()
    await row.locator('[data-entity="sensor.arcm_7_residual_current"] b', has_text="mA").wait_for()

    # A bad edit names the field; a good one shows; removing asks first.
    await page.goto(f"{site.url}/settings#devices")
    await page.click('button[data-edit="arcm-7"]')
    await form.locator("[name=transport]").select_option("modbus_tcp")
    await form.locator("[name=host]").fill("127.0.0.1")
    await form.locator("[name=port]").fill("70000")
    await form.locator("button[type=submit]").click()
    await page.locator("#device-status.error", has_text="link.port").wait_for()
    await form.locator("[name=transport]").select_option("")
    await form.locator("[name=name]").fill("配电箱七")
    await form.locator("button[type=submit]").click()
    await page.locator('tr[data-device="arcm-7"]', has_text="配电箱七").wait_for()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click('button[data-remove="arcm-7"]')
    await page.locator('tr[data-device="arcm-7"]').wait_for(state="detached")
    assert site.hub.devices.get("arcm-7") is None


async def test_a_user_sees_no_device_controls_and_the_api_refuses(site: Site, page: Any) -> None:
    await login(page, site, "user", "/settings")
    await page.click("#tab-devices")
    await page.locator('tr[data-device="arcm-1"]').wait_for()
    assert await page.locator("#device-form").count() == 0
    assert await page.locator("#device-rows button").count() == 0
    status = await page.evaluate("""() => VW.api("POST", "/api/devices",
        {id: "x-1", platform: "arcm", project: "school-1-a"}).then(() => 200, (e) => e.status)""")
    assert status == 403
    status = await page.evaluate(
        """() => VW.api("DELETE", "/api/devices/arcm-1").then(() => 200, (e) => e.status)""")
    assert status == 403
    assert site.hub.devices.get("arcm-1") is not None


async def test_admin_adopts_a_pending_dtu(tmp_path: Path, page: Any) -> None:
    async with make_site(tmp_path, {"gsm": voltwatch_gsm}, {"gsm": {"port": 0}}) as site:
        server = voltwatch_gsm.get_server(site.hub)
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(IMEI.encode())
            await writer.drain()
            await server.wait_until(lambda: IMEI in server.dtus and server.dtus[IMEI].connected)
            await login(page, site, "super_admin", "/settings")
            await page.click("#tab-devices")
            await page.click(f'button[data-adopt="{IMEI}"]')
            form = page.locator("#device-form")
            assert await form.locator("[name=imei]").input_value() == IMEI
            await form.locator("[name=name]").fill("市场配电箱（4G）")
            await form.locator("[name=project]").select_option("hospital-1")
            await form.locator("button[type=submit]").click()
            await page.locator('tr[data-device="dtu-890123-1"]').wait_for()
            # Adopted: no longer pending; the plugin made the DTU's own device too.
            await page.locator(f'tr[data-dtu="{IMEI}"]').wait_for(state="detached")
            assert server.dtus[IMEI].known
            assert site.hub.devices.get(voltwatch_gsm.dtu_device_id(IMEI)) is not None
        finally:
            writer.close()


async def test_device_page_names_the_worker_a_dtu_device_is_connected_to(site: Site,
                                                                        page: Any) -> None:
    """Several workers (docs/operations.md, "DTU ownership"): a device another worker polls
    carries `worker` on its online entity; its page says so, and drops it when that goes."""
    import voltwatch_arcm

    runtime = voltwatch_arcm.runtime_for(site.hub)
    assert runtime is not None
    await runtime.devices["arcm-1"].stop()  # its own polls would rewrite the entity
    await login(page, site, "project_admin", "/monitor/arcm-1")
    entity = "binary_sensor.arcm_1_online"
    await page.locator("#device-online").wait_for()
    state = site.hub.states.get(entity)
    attributes = dict(state.attributes) if state is not None else {}
    site.hub.states.async_set(entity, "on", {**attributes, "worker": "worker-b"})
    await page.locator("#device-worker", has_text="连接在工作节点 worker-b").wait_for()
    site.hub.states.async_set(entity, "on", {k: v for k, v in attributes.items()
                                             if k != "worker"})
    await page.locator("#device-worker").wait_for(state="detached")
