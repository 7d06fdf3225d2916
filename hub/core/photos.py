"""Work-order photos on disk: size-limited, and typed by their bytes, never by their name.

A maintainer's phone uploads a picture of the repaired distribution box; the hub keeps it
under `<config_dir>/uploads/workorders/<id>/` and serves it back to the web UI. Two rules
keep that directory from becoming a hazard of its own:

* the type comes from the file's magic bytes (JPEG, PNG, WebP only): a script renamed
  `photo.jpg` is refused, and what is served back carries the content type of what was
  actually stored, so a browser never sniffs an upload into HTML;
* the size limit is enforced while the upload streams in, so an oversized body is cut off
  after `max_size` bytes instead of being read whole first.

Stored names are random (`<32 hex>.<ext>`): the client's file name is kept as metadata only
and never touches the file system.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .services import ServiceError

#: content type -> file extension of the types accepted.
ACCEPTED: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
SNIFF_BYTES = 12


def sniff(head: bytes) -> str | None:
    """The image type the first bytes announce, or None when it is none we accept."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


class PhotoRejected(ServiceError):
    """An upload that is refused, with the reason a user can act on (415 type, 413 size)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class SavedPhoto:
    file_name: str
    content_type: str
    size: int
    sha256: str


class PhotoStore:
    """Photo files of work orders, one directory per work order."""

    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size

    def directory(self, workorder_id: int) -> Path:
        return self.root / str(int(workorder_id))

    def path(self, workorder_id: int, file_name: str) -> Path:
        """The stored file; `file_name` comes from the database, but is checked anyway."""
        if not file_name or "/" in file_name or "\\" in file_name or file_name.startswith("."):
            raise ValueError(f"invalid stored photo name {file_name!r}")
        return self.directory(workorder_id) / file_name

    async def save(self, workorder_id: int, chunks: AsyncIterator[bytes]) -> SavedPhoto:
        """Read an upload, check type and size, and store it; PhotoRejected says why not.

        The body is held in memory (at most `max_size`, a few MB) and written by a worker
        thread, so the event loop never waits on the disk.
        """
        data = bytearray()
        async for chunk in chunks:
            data += chunk
            if len(data) > self.max_size:
                raise PhotoRejected(
                    413,
                    f"photo too large: more than {_human(self.max_size)} "
                    f"(workorders.max_photo_size)",
                )
        if not data:
            raise PhotoRejected(400, "the photo is empty")
        content_type = sniff(bytes(data[:SNIFF_BYTES]))
        if content_type is None:
            raise PhotoRejected(
                415,
                "not a JPEG, PNG or WebP image (the type is read from the file's content, "
                "not its name)",
            )
        file_name = f"{secrets.token_hex(16)}.{ACCEPTED[content_type]}"
        target = self.path(workorder_id, file_name)
        payload = bytes(data)
        await asyncio.to_thread(_write_atomically, target, payload)
        return SavedPhoto(file_name, content_type, len(payload),
                          hashlib.sha256(payload).hexdigest())

    async def remove(self, workorder_id: int, file_name: str) -> None:
        """Delete a stored file (used when its database row could not be written)."""
        await asyncio.to_thread(self.path(workorder_id, file_name).unlink, missing_ok=True)


def _write_atomically(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(target.suffix + ".part")
    with open(temporary, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def _human(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KB"
    return f"{size} bytes"
