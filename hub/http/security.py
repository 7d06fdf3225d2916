"""Browser-facing hardening: security headers on every response, request-rate limits per client.

Headers (OWASP Secure Headers): the pages load only the hub's own scripts (from /static and the
npm-installed vendor files), so the Content-Security-Policy allows scripts from 'self' only and
no framing; images may also come from the map tile server `http.map_tiles` names, if any;
`nosniff` keeps a browser from running an uploaded photo as script; `no-referrer` keeps tokens
in `/?token=` URLs out of other sites' logs; HSTS only when the request came over https (it
would pin plain-http sites otherwise). A handler that sets one of these itself keeps its own.

Rate limits: a route declares `Route.rate_limit = "login"` (or another bucket name); each client
address gets a token bucket per name (`http.rate_limits`, default login 10/min, tokens
20/min). Sign-in costs an argon2 hash, so unthrottled logins are a CPU denial of service even
though failed ones already lock the account (docs/security.md, "Lockout"); the limit answers
429 with `Retry-After` before any of that work, and is counted in /metrics
(`voltwatch_http_rate_limited_total{bucket}`) and logged (throttled) with the address and route.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import voluptuous as vol
from aiohttp import web

from hub.core.ratelimit import KeyedLimiter, LogThrottle, Rate, rate

_LOGGER = logging.getLogger(__name__)

CSP_TEMPLATE = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:{tiles}; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
CSP = CSP_TEMPLATE.format(tiles="")


def tile_source(map_tiles: str) -> str:
    """The CSP source of a Leaflet tile URL template: its origin, `{s}.` subdomains as `*.`."""
    parsed = urlsplit(map_tiles.replace("{s}.", "x-subdomain."))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return ""
    host = parsed.netloc.replace("x-subdomain.", "*.")
    return f"{parsed.scheme}://{host}"


def content_security_policy(map_tiles: str = "") -> str:
    """CSP with the tile server's origin among the image sources when a map is configured."""
    source = tile_source(map_tiles) if map_tiles else ""
    return CSP_TEMPLATE.format(tiles=f" {source}" if source else "")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000"

DEFAULT_RATE_LIMITS = {"login": "10/min", "tokens": "20/min"}
RATE_LIMITS_SCHEMA = vol.Schema({str: rate})


def security_headers(map_tiles: str = "") -> Callable[[web.Request, web.StreamResponse],
                                                      Awaitable[None]]:
    """An `on_response_prepare` hook for every answer (API, pages, static, errors, websocket)."""
    fixed = {**SECURITY_HEADERS, "Content-Security-Policy": content_security_policy(map_tiles)}

    async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        for name, value in fixed.items():
            headers.setdefault(name, value)
        if request.secure:
            headers.setdefault("Strict-Transport-Security", HSTS)

    return add_security_headers


class RateLimits:
    """A `KeyedLimiter` per bucket name, keyed by client address."""

    def __init__(self, configured: dict[str, Any] | None = None) -> None:
        limits: dict[str, Rate] = {name: rate(value) for name, value in DEFAULT_RATE_LIMITS.items()}
        limits.update(RATE_LIMITS_SCHEMA(dict(configured or {})))
        self.limiters = {name: KeyedLimiter(limit) for name, limit in limits.items()}
        self.refused = 0
        self._log = LogThrottle(_LOGGER)

    def check(self, bucket: str, request: web.Request) -> float:
        """0.0 when the request may go on, else the seconds to wait (counted and logged)."""
        limiter = self.limiters.get(bucket)
        if limiter is None:
            return 0.0
        client = request.remote or "?"
        wait = limiter.take(client)
        if wait:
            self.refused += 1
            if self._log.allow(f"rate limit {bucket}"):
                _LOGGER.warning("HTTP: %s %s from %s refused: over the %s rate limit (%s)",
                                request.method, request.path, client, bucket, limiter.limit)
        return wait
