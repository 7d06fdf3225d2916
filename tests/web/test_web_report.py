"""The monthly report from the home page, in a real browser with a signed-in user (the
session cookie is what authorises the report's API URL)."""

from __future__ import annotations

from typing import Any

from .conftest import Site, login


async def test_home_page_opens_this_months_report(site: Site, page: Any) -> None:
    await login(page, site, "user")
    link = page.locator("#report-html")
    assert await link.inner_text() == "月度报告"
    href = await link.get_attribute("href")
    pdf_href = await page.locator("#report-pdf").get_attribute("href")
    response = await page.goto(site.url + href)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "月度报告" in await page.locator("h1").inner_text()
    assert await page.locator("#summary [data-figure=total_alarm]").inner_text() != ""
    assert await page.locator("svg").count() >= 1  # the daily chart, drawn without script

    pdf = await page.request.get(site.url + pdf_href)  # the browser's cookies
    assert pdf.status == 200
    assert (await pdf.body()).startswith(b"%PDF-")
