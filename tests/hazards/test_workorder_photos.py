"""Photo uploads over real HTTP: a real PNG is stored on disk and served back with its type;
a file whose name and declared type lie about its bytes is refused, as is one over the limit,
each with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import ClientSession, FormData

from .conftest import tiny_png


async def _order(client: ClientSession, auth: dict[str, str]) -> int:
    async with client.post("/api/workorders", json={"title": "拍照留证"}, headers=auth) as resp:
        assert resp.status == 201
        return int((await resp.json())["id"])


def _form(payload: bytes, filename: str = "photo.png",
          content_type: str = "image/png") -> FormData:
    form = FormData()
    form.add_field("note", "维修后")  # a plain field beside the file is ignored
    form.add_field("photo", payload, filename=filename, content_type=content_type)
    return form


async def test_png_is_stored_and_served_back(hub: Any, client: ClientSession,
                                             auth: dict[str, str]) -> None:
    order_id = await _order(client, auth)
    png = tiny_png()
    async with client.post(f"/api/workorders/{order_id}/photos", data=_form(png, "现场.png"),
                           headers=auth) as resp:
        photo = await resp.json()
        assert resp.status == 201, photo
    assert photo["content_type"] == "image/png" and photo["size"] == len(png)
    assert photo["original_name"] == "现场.png" and photo["uploaded_by"] == "值班员"
    stored = list((Path(hub.config_dir) / "uploads" / "workorders" / str(order_id)).iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".png"
    assert stored[0].read_bytes() == png

    async with client.get(photo["url"], headers=auth) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.read() == png
    async with client.get(f"/api/workorders/{order_id}/photos", headers=auth) as resp:
        assert [p["id"] for p in await resp.json()] == [photo["id"]]
    async with client.get(f"/api/workorders/{order_id}", headers=auth) as resp:
        detail = await resp.json()
    assert [p["id"] for p in detail["photos"]] == [photo["id"]]
    assert detail["history"][-1]["action"] == "photo"
    async with client.get(f"/api/workorders/{order_id}/photos/999", headers=auth) as resp:
        assert resp.status == 404


async def test_disguised_file_is_refused_by_its_bytes(hub: Any, client: ClientSession,
                                                     auth: dict[str, str]) -> None:
    order_id = await _order(client, auth)
    script = b"<?php system($_GET['c']); ?>" + b"\x00" * 64
    for payload in (script, b"GIF89a" + b"\x00" * 64):
        async with client.post(f"/api/workorders/{order_id}/photos",
                               data=_form(payload, "photo.jpg", "image/jpeg"),
                               headers=auth) as resp:
            error = await resp.json()
            assert resp.status == 415, error
        assert "not a JPEG, PNG or WebP image" in error["error"]
        assert "content" in error["error"]
    folder = Path(hub.config_dir) / "uploads" / "workorders" / str(order_id)
    assert not folder.exists() or not any(folder.iterdir())


async def test_too_large_is_refused_with_the_limit(hub: Any, client: ClientSession,
                                                   auth: dict[str, str]) -> None:
    order_id = await _order(client, auth)
    limit = hub.workorders.photos.max_size
    assert limit == 5 * 1024 * 1024  # the default
    just_over = tiny_png() + b"\x00" * (limit + 1 - len(tiny_png()))
    async with client.post(f"/api/workorders/{order_id}/photos", data=_form(just_over),
                           headers=auth) as resp:
        error = await resp.json()
        assert resp.status == 413, error
    assert "photo too large" in error["error"] and "5 MB" in error["error"]
    # far over: refused from the Content-Length before the body is read
    far_over = tiny_png() + b"\x00" * (limit * 2)
    async with client.post(f"/api/workorders/{order_id}/photos", data=_form(far_over),
                           headers=auth) as resp:
        error = await resp.json()
        assert resp.status == 413, error
    assert "max_photo_size" in error["error"]
    async with client.get(f"/api/workorders/{order_id}/photos", headers=auth) as resp:
        assert await resp.json() == []


async def test_upload_errors(hub: Any, client: ClientSession, auth: dict[str, str]) -> None:
    order_id = await _order(client, auth)
    async with client.post("/api/workorders/424242/photos", data=_form(tiny_png()),
                           headers=auth) as resp:
        assert resp.status == 404
    form = FormData()
    form.add_field("note", "没有照片")
    form.add_field("x", "y")
    async with client.post(f"/api/workorders/{order_id}/photos", data=form,
                           headers=auth) as resp:
        assert resp.status == 400
        assert "photo" in (await resp.json())["error"]  # url-encoded: no file at all
    async with client.post(f"/api/workorders/{order_id}/photos", json={"a": 1},
                           headers=auth) as resp:
        assert resp.status == 400
    await hub.workorders.async_update(order_id, status="closed", note="不需要")
    async with client.post(f"/api/workorders/{order_id}/photos", data=_form(tiny_png()),
                           headers=auth) as resp:
        assert resp.status == 409
        assert "closed" in (await resp.json())["error"]
