"""The pages a browser gets: server-rendered jinja2, a little JS, live data over the websocket.

The templates, static files and translations live in `web/` at the top of the repository
(`VOLTWATCH_WEB_ROOT` points elsewhere, e.g. for a packaged install). Front-end packages
(htmx, later charts and maps) come from npm into `web/node_modules` at `make install`; they
are served from there and never committed or fetched at run time.

Pages are not part of the JSON API: they are not in the OpenAPI document, and the data they
show arrives through the authenticated websocket or `/ui/` fragments that check the same
session cookie or bearer token as the API. `/login` signs in with name and password (a
session cookie, docs/security.md); the live page then authenticates its websocket with that
cookie. `/?token=…` still works for API tokens (kept in the browser's localStorage).
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from .. import __version__
from ..auth.sessions import COOKIE_NAME as SESSION_COOKIE
from .routes import HUB, SERVER

_LOGGER = logging.getLogger(__name__)

LANGUAGES = ("zh-CN", "en")
LANG_COOKIE = "voltwatch-lang"
# URL under /static/vendor/ -> file inside web/node_modules (installed from npm).
VENDOR_FILES = {"htmx.min.js": "htmx.org/dist/htmx.min.js"}


def web_root() -> Path:
    configured = os.environ.get("VOLTWATCH_WEB_ROOT")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "web"


@cache
def _translations(root: Path) -> dict[str, dict[str, str]]:
    return {
        lang: json.loads((root / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
        for lang in LANGUAGES
    }


@cache
def _environment(root: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        enable_async=False,
    )


def pick_language(request: web.Request, default: str) -> str:
    """?lang= wins (and is remembered in a cookie), then the cookie, then the hub's language."""
    for candidate in (request.query.get("lang"), request.cookies.get(LANG_COOKIE), default):
        if candidate in LANGUAGES:
            return candidate
    return "zh-CN"


def render(request: web.Request, template: str, **context: Any) -> web.Response:
    hub = request.app[HUB]
    root = web_root()
    lang = pick_language(request, getattr(hub, "language", "zh-CN"))
    words = _translations(root)[lang]
    html = _environment(root).get_template(template).render(
        lang=lang,
        t=lambda key: words.get(key, key),
        version=__version__,
        hub_name=hub.config.get("hub", {}).get("name", "Voltwatch"),
        **context,
    )
    response = web.Response(text=html, content_type="text/html", charset="utf-8")
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax")
    return response


async def index(request: web.Request) -> web.Response:
    return render(request, "index.html")


async def login_page(request: web.Request) -> web.Response:
    """The sign-in form (登录); it posts JSON to /api/auth/login and goes to the live page."""
    return render(request, "login.html")


async def plugins_fragment(request: web.Request) -> web.Response:
    """The plugin table for the home page (an htmx fragment; session cookie or bearer token)."""
    server = request.app[SERVER]
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if token:
        principal = await server.principal_from_token(token, request.remote)
    elif cookie:
        principal = await server.principal_from_session(cookie, request.remote)
    else:
        principal = None
    if principal is None:
        raise web.HTTPUnauthorized(text="sign in first")
    hub = request.app[HUB]
    return render(
        request,
        "plugins.html",
        plugins=hub.plugins.list_plugins(),
        failures=hub.plugins.failures,
    )


async def vendor_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    relative = VENDOR_FILES.get(name)
    path = web_root() / "node_modules" / relative if relative else None
    if path is None or not path.is_file():
        if relative:
            _LOGGER.warning("Front-end asset %s is missing: run `make install`", relative)
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


def add_pages(app: web.Application) -> None:
    """Register the browser-facing routes on the app."""
    root = web_root()
    if not (root / "templates").is_dir():
        _LOGGER.warning("No web UI: %s has no templates", root)
        return
    app.router.add_get("/", index)
    app.router.add_get("/login", login_page)
    app.router.add_get("/ui/plugins", plugins_fragment)
    app.router.add_get("/static/vendor/{name}", vendor_file)
    app.router.add_static("/static/", root / "static", append_version=False)
