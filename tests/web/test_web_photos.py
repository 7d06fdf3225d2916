"""Work-order photos on the hazards page (issue 10): upload from the page (the phone's camera
input), see the thumbnail, open it full size."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from .conftest import Site, login


def png(width: int = 40, height: int = 30) -> bytes:
    """A real PNG (red), so the browser must decode it to show a thumbnail."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


async def test_attach_a_photo_and_see_the_thumbnail(site: Site, page: Any) -> None:
    await login(page, site, "project_admin", "/hazards")
    order = await page.evaluate("""() => VW.api("POST", "/api/workorders",
        {device_id: "arcm-1", title: "配电箱1 接线端子发热"})""")
    await page.click("#tab-workorders")
    await page.click(f'button[data-photos="{order["id"]}"]')
    upload = page.locator(f'tr[data-photos-of="{order["id"]}"] input[type=file]')
    assert await upload.get_attribute("accept") == "image/*"
    assert await upload.get_attribute("capture") == "environment"
    await page.locator(f'tr[data-photos-of="{order["id"]}"]', has_text="暂无照片").wait_for()

    # Not an image: refused with the reason, nothing shown.
    await upload.set_input_files({"name": "photo.jpg", "mimeType": "image/jpeg",
                                  "buffer": b"<script>alert(1)</script>"})
    await page.locator(f'tr[data-photos-of="{order["id"]}"] .notice.error',
                       has_text="JPEG, PNG or WebP").wait_for()

    await upload.set_input_files({"name": "端子.png", "mimeType": "image/png", "buffer": png()})
    thumb = page.locator(f'tr[data-photos-of="{order["id"]}"] a[data-photo] img')
    await thumb.wait_for()
    await page.wait_for_function(
        """(sel) => { const img = document.querySelector(sel);
                      return img && img.complete && img.naturalWidth === 40; }""",
        arg=f'tr[data-photos-of="{order["id"]}"] a[data-photo] img')
    assert await thumb.get_attribute("alt") == "端子.png"
    await thumb.click()
    await page.locator("#photo-viewer[open]").wait_for()
    assert await page.evaluate("() => document.getElementById('photo-full').naturalHeight") == 30
    stored = await site.hub.workorders.store.photos(order["id"])
    assert [p["original_name"] for p in stored] == ["端子.png"]
