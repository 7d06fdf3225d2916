"""`make screenshots`: each main page of the web UI, as the demo shows it, saved to docs/screenshots/.

Starts `voltwatch demo` on a free port with a throw-away data directory, signs in through the
form with the login the demo prints, and waits on each page for its data (a locator, never a
fixed delay) before it takes the picture. Chinese needs a CJK font (fonts-noto-cjk, installed by
scripts/system-deps.sh).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
BOUND = 60_000  # ms a page may take before we give up on it (a bound, not a delay)
LOGIN = re.compile(r"\(demo login\): user (\S+) password (\S+)")

#: file name, path, what to wait for before the picture
PAGES: list[tuple[str, str, str]] = [
    ("home", "/", "#chart-daily canvas"),
    ("monitor", "/monitor", "#devices .val"),
    ("device", "/monitor/{device}", "#values dd"),
    ("hazards", "/hazards", "#event-rows tr, #events-status:not([hidden])"),
    ("control", "/control?device={device}", "#setpoints tr"),
    ("automations", "/automations", "#auto-rows tr, #auto-status:not([hidden])"),
    ("settings", "/settings#users", "#user-rows tr"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def read_login(stream: asyncio.StreamReader) -> tuple[str, str]:
    seen: list[str] = []
    while True:
        line = (await stream.readline()).decode("utf-8", "replace")
        if not line:
            raise SystemExit("the demo exited before printing its login:\n" + "".join(seen))
        seen.append(line)
        match = LOGIN.search(line)
        if match:
            return match.group(1), match.group(2)


async def shoot(url: str, user: str, password: str) -> None:
    from playwright.async_api import async_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page: Any = await browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(BOUND)
        await page.goto(f"{url}/login")
        await page.fill("#login-name", user)
        await page.fill("#login-password", password)
        await page.click("#login-form button")
        await page.wait_for_url(f"{url}/")
        await page.locator("#conn.ok").wait_for()
        await page.goto(f"{url}/monitor")
        # A residual-current detector: it has every chart and every control.
        first = page.locator('#devices tr[data-device^="arcm"]').first
        await first.wait_for()
        device = await first.get_attribute("data-device")
        for name, path, ready in PAGES:
            await page.goto(url + path.format(device=device))
            await page.locator("#conn.ok").wait_for()
            await page.locator(ready).first.wait_for()
            if name == "automations":  # with the editor open on the first one
                await page.locator("#auto-rows button").first.click()
                await page.wait_for_function("document.getElementById('editor-text').value")
            await page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
            print(f"docs/screenshots/{name}.png")
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(url + "/")
        await page.locator("#chart-daily canvas").first.wait_for()
        await page.screenshot(path=str(OUT / "home-phone.png"))
        print("docs/screenshots/home-phone.png")
        await browser.close()


async def main() -> int:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "demo", "--port", str(port), "--data-dir", data_dir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT,
        )
        assert proc.stdout is not None
        try:
            user, password = await asyncio.wait_for(read_login(proc.stdout), 120)
            drain = asyncio.create_task(proc.stdout.read())  # never block on a full pipe
            await shoot(f"http://127.0.0.1:{port}", user, password)
        finally:
            proc.terminate()
            await proc.wait()
        drain.cancel()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
