"""A real hub for the browser tests: the arcm plugin polling its own Modbus TCP simulator, a
project tree with map positions, users of each role, and headless Chromium (Playwright).

Everything waited on is a condition (a locator, a state, an event), never a delay; the
timeouts below only bound how long a failing test hangs.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from voltwatch_arcm.simulator import ArcmSimulator, SimOptions

from hub.auth.users import hash_password
from hub.core.plugins import PluginManager
from hub.hub import Hub

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
WAIT = 20_000  # ms: how long a failing wait may hang, never a synchronisation delay
PASSWORD = "correct horse battery"
#: role -> (user name, projects)
USERS = {
    "super_admin": ("root", []),
    "project_admin": ("王工", ["school-1"]),
    "user": ("张老师", ["school-1-a"]),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_config(port: int, tmp_path: Path) -> dict[str, Any]:
    link = {"transport": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.5}
    return {
        "hub": {"name": "测试站", "language": "zh-CN", "time_zone": "Asia/Shanghai"},
        "http": {"port": 0},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        "projects": [
            {"id": "school-1", "name": "第一中学", "lat": 40.77, "lon": 114.88,
             "children": [{"id": "school-1-a", "name": "教学楼A"}]},
            {"id": "hospital-1", "name": "人民医院", "lat": 40.81, "lon": 114.89},
        ],
        "devices": [
            {"id": "arcm-1", "name": "配电箱1", "platform": "arcm", "profile": "arcm-ref",
             "project": "school-1-a", "area": "一层", "location": "配电室",
             "poll_interval": "200ms", "link": {**link, "unit": 1}},
            {"id": "arcm-2", "name": "配电箱2", "platform": "arcm", "project": "hospital-1",
             "location": "地下室", "poll_interval": "200ms", "link": {**link, "unit": 2}},
        ],
    }


@dataclass
class Site:
    hub: Hub
    sim: ArcmSimulator

    @property
    def url(self) -> str:
        return str(self.hub.http.url)


@asynccontextmanager
async def make_site(tmp_path: Path, extra: dict[str, Any] | None = None,
                    sections: dict[str, Any] | None = None) -> AsyncIterator[Site]:
    """The site, with `extra` plugins (name -> object) registered beside modbus and arcm and
    their configuration `sections` (e.g. `{"gsm": {"port": 0}}`)."""
    port = free_port()
    sim = ArcmSimulator([1, 2], SimOptions(wander=False, leak_every=None))
    server = await sim.start_tcp("127.0.0.1", port)
    manager = PluginManager()
    manager.load_entrypoints(only=["modbus", "arcm"])
    for name, plugin in (extra or {}).items():
        manager.register(plugin, name, version="0")
    hub = Hub(tmp_path, config={**site_config(port, tmp_path), **(sections or {})},
              plugin_manager=manager)
    await hub.async_start()
    try:
        hashed = await hash_password(PASSWORD)
        for role, (name, projects) in USERS.items():
            await hub.auth.users.create(name, role, hashed, projects=projects)
        yield Site(hub, sim)
    finally:
        await hub.async_stop()
        await server.shutdown()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with make_site(tmp_path) as made:
        yield made


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(WAIT)
    yield page
    await context.close()


def at(url: str) -> Callable[[str], bool]:
    """A `wait_for_url` condition: the page is `url`, whatever fragment its own script added.

    Tabbed pages (hazards, automations, settings) write the selected tab into the address
    (`#events`) at DOMContentLoaded, so the exact URL lives only until then. A test process
    that gets the CPU back after that (it runs the hub too) checked an address that no longer
    matched and waited 20 s for a navigation that had already happened.
    """
    return lambda current: current.split("#", 1)[0] == url


async def login(page: Any, site: Site, role: str, path: str = "/") -> None:
    """Sign in through the form as the user of `role`, landing on `path`."""
    from urllib.parse import quote

    await page.goto(f"{site.url}/login?next={quote(path)}")
    await page.fill("#login-name", USERS[role][0])
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-form button")
    await page.wait_for_url(at(f"{site.url}{path}"))
    await page.locator("#conn.ok").wait_for()
