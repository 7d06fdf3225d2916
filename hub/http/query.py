"""Validators for query-string parameters shared by the API modules.

A query string carries only text, so lists arrive comma-separated, booleans as words and times
as ISO 8601 or unix seconds; each API module validating its own way would answer the same
mistake with different reasons.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import voluptuous as vol
from aiohttp import web

from hub.core.config import MAX_ROW_ID, row_id

from .routes import ApiError

__all__ = ["MAX_ROW_ID", "path_id", "query_bool", "query_list", "query_offset", "query_time",
           "row_id"]

#: `offset` of a paged list: beyond a 64-bit integer the database driver would overflow.
query_offset = vol.All(vol.Coerce(int), vol.Range(min=0, max=MAX_ROW_ID))


def path_id(request: web.Request, name: str) -> int:
    """An integer id from the URL: 400 when it is not one, 404 when no row can have it."""
    text = request.match_info[name]
    if not text.isdigit():
        raise ApiError(400, f"Invalid {name} {text!r}: expected a positive integer")
    number = int(text)
    if not 1 <= number <= MAX_ROW_ID:
        raise ApiError(404, f"No such {name.removesuffix('_id')}: {text}")
    return number

_SPLIT = re.compile(r"\s*,\s*")
_LOST_PLUS = re.compile(r" (\d\d:?\d\d)$")


def query_time(value: Any) -> float:
    """`since`/`until`: ISO 8601 (a naive time is UTC) or unix seconds."""
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    # An unencoded `+08:00` arrives as ` 08:00` (a `+` in a query string is a space).
    text = _LOST_PLUS.sub(r"+\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise vol.Invalid(
            f"expected an ISO 8601 time (2025-01-31T08:00:00+08:00) or unix seconds, got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def query_list(allowed: tuple[str, ...] | None = None) -> Any:
    def check(value: Any) -> list[str]:
        items = [item for item in _SPLIT.split(str(value).strip()) if item]
        if not items:
            raise vol.Invalid("expected one value or a comma-separated list")
        if allowed is not None:
            bad = [item for item in items if item not in allowed]
            if bad:
                raise vol.Invalid(f"unknown value {bad[0]!r} (one of: {', '.join(allowed)})")
        return items

    check.__name__ = "comma_separated_list"
    return check


def query_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise vol.Invalid(f"expected true or false, got {value!r}")
