"""The pages a browser gets: server-rendered jinja2 shells, a little JS, live data over the websocket.

The templates, static files and translations live in `web/` at the top of the repository
(`VOLTWATCH_WEB_ROOT` points elsewhere, e.g. for a packaged install). Front-end packages
(htmx, ECharts, Leaflet, js-yaml, jsdiff) come from npm into `web/node_modules` at `make install`;
they are served from there and never committed or fetched at run time.

Pages are not part of the JSON API: they are not in the OpenAPI document. A page holds no
project data itself: it is a shell (navigation, labels, the signed-in user) whose scripts
fetch everything through the JSON API and the websocket, which cut it to the caller's scope.
So a page's access decision is only "who may open this screen at all" (`Page.scope`, plus
`Page.allowed` for the remote-control screen, which follows the service policy); each page is
declared once in `PAGES` and probed per role in tests/auth/test_auth_scope.py.

Who is asking: the session cookie (from `/login`), else an API token given as `?token=` (the
page's script keeps it in localStorage and in the `voltwatch_token` cookie so the next page
knows it too). Nobody signed in: a redirect to `/login?next=…`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from .. import __version__
from ..auth.permissions import CONTROL_SERVICES, PROJECT_ADMIN, ROLE_WORDS
from ..auth.principal import Principal
from ..auth.sessions import COOKIE_NAME as SESSION_COOKIE
from ..core.conditions import CONDITION_TYPES
from ..core.workorders import STATUS_WORDS, TRANSITIONS
from .routes import AUTHENTICATED, HUB, SERVER

_LOGGER = logging.getLogger(__name__)

LANGUAGES = ("zh-CN", "en")
LANG_COOKIE = "voltwatch-lang"
#: Where a page's script keeps an API token for the next page (SameSite=Strict, no secret
#: beyond what localStorage already holds; only pages read it, never the API).
TOKEN_COOKIE = "voltwatch_token"
# URL under /static/vendor/ -> file inside web/node_modules (installed from npm).
VENDOR_FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "echarts.min.js": "echarts/dist/echarts.min.js",
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "js-yaml.min.js": "js-yaml/dist/js-yaml.min.js",
    "diff.min.js": "diff/dist/diff.min.js",
}


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


#: Public names for other renderers of web/ templates (the monthly report, hub/reports/).
translations = _translations
template_environment = _environment


def pick_language(request: web.Request, default: str, who: Principal | None = None) -> str:
    """?lang= wins (and is remembered in a cookie), then the signed-in user's own language
    (kept on the user record, so it follows them to another browser), then the cookie, then
    the hub's language."""
    mine = who.language if who is not None else None
    for candidate in (request.query.get("lang"), mine, request.cookies.get(LANG_COOKIE),
                      default):
        if candidate in LANGUAGES:
            return candidate
    return "zh-CN"


# -- access ----------------------------------------------------------------------------------
def may_control(hub: Any, who: Principal) -> bool:
    """True when the service policy lets this role call at least one control service."""
    policy = getattr(getattr(hub, "auth", None), "policy", None)
    if policy is None:
        return who.at_least(PROJECT_ADMIN)
    return any(policy.allows(who.role, "*", service) for service in CONTROL_SERVICES)


def allowed_controls(hub: Any, who: Principal) -> list[str]:
    policy = getattr(getattr(hub, "auth", None), "policy", None)
    if policy is None:
        return sorted(CONTROL_SERVICES) if who.at_least(PROJECT_ADMIN) else []
    return sorted(s for s in CONTROL_SERVICES if policy.allows(who.role, "*", s))


@dataclass(frozen=True, slots=True)
class Page:
    """One screen: its URL, template, navigation key and access decision."""

    path: str
    template: str
    #: Translation key of its navigation label; None keeps it out of the navigation.
    nav: str | None
    #: AUTHENTICATED or the lowest role (hub.auth.permissions.ROLES) that may open it.
    scope: str
    #: A further check (e.g. the service policy for remote control).
    allowed: Callable[[Any, Principal], bool] | None = None

    def permits(self, hub: Any, who: Principal) -> bool:
        if self.scope != AUTHENTICATED and not who.at_least(self.scope):
            return False
        return self.allowed is None or self.allowed(hub, who)


PAGES: tuple[Page, ...] = (
    Page("/", "home.html", "nav_home", AUTHENTICATED),
    Page("/monitor", "monitor.html", "nav_monitor", AUTHENTICATED),
    Page("/monitor/{device_id}", "device.html", None, AUTHENTICATED),
    Page("/hazards", "hazards.html", "nav_hazards", AUTHENTICATED),
    Page("/control", "control.html", "nav_control", AUTHENTICATED, may_control),
    Page("/settings", "settings.html", "nav_settings", AUTHENTICATED),
    Page("/automations", "automations.html", "nav_automations", PROJECT_ADMIN),
)


async def page_principal(request: web.Request) -> Principal | None:
    """The session cookie's principal, else that of an API token (query, then cookie)."""
    server = request.app[SERVER]
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie:
        found = await server.principal_from_session(cookie, request.remote)
        if found is not None:
            return found
    header = request.headers.get("Authorization", "")
    for token in (header[7:].strip() if header.lower().startswith("bearer ") else "",
                  request.query.get("token", ""), request.cookies.get(TOKEN_COOKIE, "")):
        if token:
            found = await server.principal_from_token(token, request.remote)
            if found is not None:
                return found
    return None


# -- rendering -------------------------------------------------------------------------------
def _boot(hub: Any, lang: str, words: dict[str, str], who: Principal | None,
          extra: dict[str, Any]) -> str:
    """What every page's script starts from, as JSON inside the page (no extra round trip)."""
    http = hub.config.get("http", {}) if isinstance(getattr(hub, "config", None), dict) else {}
    zh = lang == "zh-CN"
    data = {
        "lang": lang,
        "tz": getattr(hub, "time_zone", "Asia/Shanghai"),
        "words": words,
        "types": {k: (v.zh if zh else v.en) for k, v in CONDITION_TYPES.items()},
        # Work orders: the statuses' words and where each may go (hub/core/workorders.py).
        "workorder": {"words": {k: v[0 if zh else 1] for k, v in STATUS_WORDS.items()},
                      "next": {k: list(v) for k, v in TRANSITIONS.items()}},
        "map": {"tiles": http.get("map_tiles", ""),
                "attribution": http.get("map_attribution", "")},
        **extra,
    }
    if who is not None:
        data["me"] = {
            "name": who.name, "role": who.role, "via": who.via,
            "role_word": ROLE_WORDS.get(who.role, (who.role, who.role))[0 if zh else 1],
            "csrf": who.csrf_token, "controls": allowed_controls(hub, who),
            "user": who.user_id is not None,
            "at_least": {role: who.at_least(role) for role in ROLE_WORDS},
        }
    # `</` cannot end the script element early.
    return json.dumps(data, ensure_ascii=False).replace("</", "<\\/")


def _other_language_url(request: web.Request, lang: str) -> str:
    """This page in the other language, keeping its query (e.g. the chosen device)."""
    query = {k: v for k, v in request.query.items() if k not in ("lang", "token")}
    query["lang"] = "en" if lang == "zh-CN" else "zh-CN"
    return str(request.rel_url.with_query(query))


def render(request: web.Request, template: str, who: Principal | None = None,
           status: int = 200, **context: Any) -> web.Response:
    hub = request.app[HUB]
    root = web_root()
    lang = pick_language(request, getattr(hub, "language", "zh-CN"), who)
    words = _translations(root)[lang]
    nav = [page for page in PAGES if page.nav and who is not None and page.permits(hub, who)]
    html = _environment(root).get_template(template).render(
        lang=lang,
        t=lambda key: words.get(key, key),
        version=__version__,
        hub_name=hub.config.get("hub", {}).get("name", "Voltwatch"),
        me=who,
        nav=nav,
        path=request.path,
        other_lang_url=_other_language_url(request, lang),
        boot=_boot(hub, lang, words, who, context.pop("boot", {})),
        **context,
    )
    response = web.Response(text=html, status=status, content_type="text/html",
                            charset="utf-8")
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax")
    return response


def _page_handler(page: Page) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        who = await page_principal(request)
        if who is None:
            target = request.path_qs if "token=" not in request.query_string else request.path
            raise web.HTTPFound("/login?next=" + quote(target, safe=""))
        hub = request.app[HUB]
        if not page.permits(hub, who):
            return render(request, "forbidden.html", who, status=403)
        return render(request, page.template, who, boot=dict(request.match_info))

    handler.__name__ = f"page_{page.template.removesuffix('.html')}"
    return handler


async def login_page(request: web.Request) -> web.Response:
    """The sign-in form (登录); it posts JSON to /api/auth/login and goes to the home page."""
    return render(request, "login.html")


async def plugins_fragment(request: web.Request) -> web.Response:
    """The plugin table for the settings page (an htmx fragment; session cookie or token)."""
    who = await page_principal(request)
    if who is None:
        raise web.HTTPUnauthorized(text="sign in first")
    hub = request.app[HUB]
    return render(
        request,
        "plugins.html",
        who,
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
    for page in PAGES:
        app.router.add_get(page.path, _page_handler(page))
    app.router.add_get("/login", login_page)
    app.router.add_get("/ui/plugins", plugins_fragment)
    app.router.add_get("/static/vendor/{name}", vendor_file)
    app.router.add_static("/static/", root / "static", append_version=False)
