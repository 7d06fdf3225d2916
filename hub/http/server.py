"""The hub's HTTP server: REST API, websocket, OpenAPI document and metrics on one aiohttp app.

What every request goes through, outermost first:

1. the error middleware: under `/api` every failure is JSON `{"error": reason, "status": code}`
   (400 malformed JSON or invalid data, 401, 403 `Unauthorized`, 404, 405, 413 too large,
   a `ServiceError` with its own status); an unexpected exception is logged with the request
   and an error id, and the client gets a 500 with that id, never a traceback;
2. the auth middleware: a principal is required under `/api/` except on routes declared
   `auth=False` (health, the OpenAPI document, login, the websocket, which authenticates
   in-band): a bearer token (`Authorization: Bearer`) or the session cookie. A request
   authenticated by the cookie that changes something must carry the session's CSRF token in
   `X-CSRF-Token`. A route with a `rate_limit` is checked per client address first (429
   with Retry-After; hub/http/security.py). Then the route's access decision (`Route.scope`: public, authenticated,
   scoped or a lowest role) is enforced; a route without one is for super_admin only. An
   unknown `/api/` path also needs a principal, so a 404 does not reveal what exists;
3. the route's own wrapper: query string and JSON body validated by the route's schemas.

Routes come from one table (`routes.Route`), the core's plus the ones plugins return from the
`voltwatch_http_routes` hook; the same table feeds the OpenAPI document.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import voluptuous as vol
from aiohttp import WSCloseCode, web

from hub import __version__
from hub.auth.permissions import RANK, SUPER_ADMIN
from hub.auth.principal import Principal, system_principal
from hub.auth.scope import ProjectTree, Scope
from hub.auth.sessions import COOKIE_NAME, CSRF_HEADER
from hub.core.context import ulid_now
from hub.core.services import ServiceError

from . import (
    alarms_api,
    api,
    auth_api,
    automations_api,
    devices_api,
    history_api,
    metrics,
    notify_api,
    patrols_api,
    reports_api,
    statistics_api,
    tokens,
    websocket,
    workorders_api,
)
from .openapi import build_openapi
from .pages import add_pages
from .routes import (
    AUTHENTICATED,
    BODY,
    HUB,
    PRINCIPAL,
    PUBLIC,
    QUERY,
    ROUTE_ATTR,
    SCOPED,
    SERVER,
    TOKEN,
    ApiError,
    Handler,
    Route,
    RouteTable,
    error_response,
    invalid_details,
    read_json,
    route_from_routedef,
    validate,
)
from .security import RateLimits, security_headers

if TYPE_CHECKING:
    from .tokens import TokenInfo
    from .websocket import WebSocketConnection

_LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8123
DEFAULT_MAX_REQUEST_SIZE = 1 << 20
SHUTDOWN_TIMEOUT = 5.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def core_routes() -> RouteTable:
    """Every endpoint the core serves, in one table."""
    table = RouteTable()
    table.extend(api.routes)
    table.extend(devices_api.routes)
    table.extend(alarms_api.routes)
    table.extend(history_api.routes)
    table.extend(automations_api.routes)
    table.extend(notify_api.routes)
    table.extend(workorders_api.routes)
    table.extend(patrols_api.routes)
    table.extend(statistics_api.routes)
    table.extend(reports_api.routes)
    table.extend(auth_api.routes)
    table.extend(websocket.routes)
    table.extend(metrics.routes)
    return table


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


class HttpServer:
    """Serves the API for one hub; `port: 0` picks a free port (see `self.port`, `self.url`)."""

    def __init__(self, hub: Any, http_conf: dict[str, Any] | None = None) -> None:
        conf = http_conf or {}
        self.hub = hub
        self.host: str = conf.get("host", DEFAULT_HOST)
        self.requested_port: int = int(conf.get("port", DEFAULT_PORT))
        self.max_request_size: int = int(conf.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))
        #: Messages a websocket client may fall behind before it is disconnected.
        self.ws_max_pending: int = int(
            conf.get("websocket_max_pending", websocket.DEFAULT_MAX_PENDING)
        )
        #: Secure flag of the session cookie: True, False or "auto" (when the request is https).
        self.secure_cookies: bool | str = conf.get("secure_cookies", "auto")
        #: Per-client request-rate limits of the routes that declare one (login, tokens).
        self.rate_limits = RateLimits(conf.get("rate_limits"))
        self.map_tiles: str = conf.get("map_tiles", "")
        self.port: int | None = None
        self.url: str | None = None
        self.started_at: float | None = None
        self.routes = RouteTable()
        self.websockets: set[WebSocketConnection] = set()
        self.response_counts: Counter[int] = Counter()
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._openapi: dict[str, Any] | None = None

    # -- building the app -------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.max_request_size,
            middlewares=[self._error_middleware, self._auth_middleware],
        )
        app[HUB] = self.hub
        app[SERVER] = self
        app.on_response_prepare.append(security_headers(self.map_tiles))
        self.routes = core_routes()
        for route in self.routes:
            self._add_route(app, route)
        for route in self._plugin_routes(app):
            try:
                self._add_route(app, route)
            except Exception as err:  # noqa: BLE001 - e.g. a malformed path: that plugin's fault
                self.hub.plugins.fail(
                    route.owner,
                    "voltwatch_http_routes",
                    f"{route.path}: {type(err).__name__}: {err}",
                )
                continue
            self.routes.add(route)  # documented only once it is actually served
        add_pages(app)
        self._openapi = None
        return app

    def _add_route(self, app: web.Application, route: Route) -> None:
        if route.method == "GET" and not route.websocket:
            # HEAD too, so probes that use it get the route's answer rather than a 405.
            app.router.add_get(route.path, self._wrap(route), allow_head=True)
        else:
            app.router.add_route(route.method, route.path, self._wrap(route))

    def _plugin_routes(self, app: web.Application) -> list[Route]:
        """Routes from `voltwatch_http_routes`; a plugin's bad route is reported, not fatal."""
        plugins = getattr(self.hub, "plugins", None)
        if plugins is None:
            return []
        taken = {(route.method, route.path) for route in core_routes()}
        collected: list[Route] = []
        for name, result in plugins.call_each("voltwatch_http_routes", hub=self.hub):
            for definition in result:
                try:
                    route = self._plugin_route(name, definition, app)
                except Exception as err:  # noqa: BLE001 - one plugin's mistake is its own
                    plugins.fail(name, "voltwatch_http_routes", f"{type(err).__name__}: {err}")
                    continue
                if route is None:
                    continue
                key = (route.method, route.path)
                if key in taken:
                    plugins.fail(
                        name, "voltwatch_http_routes", f"{route.method} {route.path} is taken"
                    )
                    continue
                taken.add(key)
                collected.append(route)
        return collected

    @staticmethod
    def _plugin_route(name: str, definition: Any, app: web.Application) -> Route | None:
        if isinstance(definition, Route):
            route = definition
            if route.owner == "core":
                route = dataclasses.replace(route, owner=name, tags=route.tags or (name,))
        elif isinstance(definition, web.RouteDef):
            route = route_from_routedef(definition, name)
        elif isinstance(definition, web.AbstractRouteDef):
            # Static files and the like: served, not documented; under /api/ still need a token.
            definition.register(app.router)
            return None
        else:
            raise TypeError(f"not a route: {definition!r}")
        if _is_api(route.path) and not route.auth:
            route = dataclasses.replace(route, auth=True)  # plugins cannot open the API
        if route.scope == PUBLIC and route.auth:
            route = dataclasses.replace(route, scope=None)  # nor declare themselves public
        return route

    @staticmethod
    def _wrap(route: Route) -> Handler:
        """The route's handler behind its query and body validation."""
        target = route.handler

        async def handler(request: web.Request) -> web.StreamResponse:
            if route.query_schema is not None:
                request[QUERY] = validate(route.query_schema, dict(request.query), "query")
            else:
                request[QUERY] = {}
            if route.body_schema is not None:
                body = await read_json(request, route.body_optional)
                request[BODY] = validate(route.body_schema, body, "body")
            return await target(request)

        handler.__name__ = getattr(target, "__name__", "handler")
        handler.__doc__ = target.__doc__
        setattr(handler, ROUTE_ATTR, route)
        return handler

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of what this server serves (built once, on first request)."""
        if self._openapi is None:
            name = getattr(self.hub, "config", {}).get("hub", {}).get("name")
            hub_name = f" {name}" if name else ""
            self._openapi = build_openapi(
                self.routes,
                title="Voltwatch API",
                version=__version__,
                description=(
                    f"HTTP API of the Voltwatch hub{hub_name}. Authenticate with "
                    "`Authorization: Bearer <token>` (`voltwatch token create NAME`). Errors "
                    'are JSON: `{"error": "<reason>", "status": <code>}`.'
                ),
            )
        return self._openapi

    # -- middlewares ------------------------------------------------------------------------
    @web.middleware
    async def _error_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.response_counts[exc.status] += 1
            if exc.status < 400 or not _is_api(request.path):
                raise
            return self._http_exception_response(request, exc)
        except ApiError as err:
            self.response_counts[err.status] += 1
            return error_response(err.status, err.message, err.details, err.headers)
        except ServiceError as err:
            self.response_counts[err.status] += 1
            return error_response(err.status, str(err))
        except vol.Invalid as err:
            self.response_counts[400] += 1
            return error_response(400, f"Invalid data: {err}", invalid_details(err))
        except Exception:  # the client gets an id, the log gets the details
            self.response_counts[500] += 1
            error_id = ulid_now()
            token = request.get(PRINCIPAL)
            _LOGGER.exception(
                "Error %s handling %s %s from %s (token %s)",
                error_id,
                request.method,
                request.path_qs,
                request.remote,
                token.name if token is not None else "-",
            )
            if _is_api(request.path):
                return error_response(500, f"Internal server error (logged as {error_id})")
            return web.Response(
                status=500, text=f"500 Internal server error (logged as {error_id})\n"
            )
        self.response_counts[response.status] += 1
        return response

    @staticmethod
    def _http_exception_response(request: web.Request, exc: web.HTTPException) -> web.Response:
        headers = {}
        if exc.status == 405 and "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
        if exc.status == 404:
            message = f"Not found: {request.path}"
        elif exc.status == 405:
            message = f"Method {request.method} not allowed on {request.path}"
        else:
            text = exc.text or ""
            message = exc.reason if not text or text.startswith(f"{exc.status}:") else text
        return error_response(exc.status, message, headers=headers)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route: Route | None = getattr(request.match_info.handler, ROUTE_ATTR, None)
        needs_auth = route.auth if route is not None else _is_api(request.path)
        request[TOKEN] = None
        request[PRINCIPAL] = None
        if route is not None and route.rate_limit is not None:
            # Before authentication: a flood must not cost a password hash or a database read.
            wait = self.rate_limits.check(route.rate_limit, request)
            if wait:
                raise ApiError(429, f"Too many requests from {request.remote} to {request.path}: "
                                    f"try again in {max(1, round(wait))}s",
                               headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        if needs_auth:
            principal = await self._authenticate(request)
            request[PRINCIPAL] = principal
            request[TOKEN] = self._token_view(principal)
            await self._check_csrf(request, principal)
            await self._check_access(request, route, principal)
        return await handler(request)

    @staticmethod
    def _token_view(principal: Principal) -> TokenInfo:
        """What `request[TOKEN]` held before users existed, named after the principal."""
        return tokens.TokenInfo(
            id=principal.token_id or principal.session_id or "", name=principal.name,
            user_id=None, created_at=0.0, expires_at=None,
        )

    async def _authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="voltwatch"'}
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(
                    401, "Authorization header must be 'Bearer <token>'", headers=challenge
                )
            principal = await self.principal_from_token(token.strip(), request.remote)
            if principal is None:
                await self._audit_rejected(request, "invalid, expired or revoked token")
                raise ApiError(401, "Invalid, expired or revoked token", headers=challenge)
            return principal
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie:
            principal = await self.principal_from_session(cookie, request.remote)
            if principal is None:
                raise ApiError(401, "Session expired or signed out: sign in again",
                               headers=challenge)
            return principal
        raise ApiError(
            401, "Sign in, or send a bearer token (Authorization: Bearer <token>)",
            headers=challenge,
        )

    async def _audit_rejected(self, request: web.Request, reason: str) -> None:
        auth = getattr(self.hub, "auth", None)
        if auth is not None:
            await auth.audit.record("auth.token", "failed", ip=request.remote,
                                    detail={"reason": reason, "path": request.path})

    async def _check_csrf(self, request: web.Request, principal: Principal) -> None:
        """Cookie-authenticated changes must repeat the session's CSRF token (OWASP)."""
        if principal.session_id is None or request.method in SAFE_METHODS:
            return
        given = request.headers.get(CSRF_HEADER)
        expected = principal.csrf_token or ""
        if given and secrets.compare_digest(given, expected):
            return
        auth = getattr(self.hub, "auth", None)
        if auth is not None:
            await auth.audit.record(
                "auth.csrf", "denied", actor=principal.name, actor_role=principal.role,
                ip=request.remote, target=request.path,
                detail={"method": request.method, "reason": "missing" if not given else "wrong"},
            )
        raise ApiError(403, f"Missing or wrong {CSRF_HEADER} header (CSRF protection)")

    async def _check_access(self, request: web.Request, route: Route | None,
                            principal: Principal) -> None:
        decision = route.scope if route is not None else AUTHENTICATED
        if decision in (PUBLIC, AUTHENTICATED, SCOPED):
            return
        if decision in RANK:
            if principal.at_least(decision):
                return
            message = f"Needs role {decision} or above (you are {principal.role})"
        elif principal.role == SUPER_ADMIN and principal.unrestricted:
            return
        else:
            message = "This endpoint is for super_admin only (it makes no scope decision)"
        from .auth import deny

        raise await deny(request, message, target=request.path)

    async def principal_from_token(self, token: str, ip: str | None = None) -> Principal | None:
        """A bearer token's principal, or None; without storage there are no valid tokens."""
        auth = getattr(self.hub, "auth", None)
        if auth is not None:
            return await auth.from_token(token, ip)
        info = await self.verify_token(token)
        if info is None:
            return None
        # A hub without the auth layer (a stand-in in a test): tokens are system tokens.
        return system_principal(Scope(ProjectTree(), None), info.name, info.id, ip)

    async def principal_from_session(self, cookie: str, ip: str | None = None) -> Principal | None:
        auth = getattr(self.hub, "auth", None)
        return None if auth is None else await auth.from_session(cookie, ip)

    async def verify_token(self, token: str) -> TokenInfo | None:
        """A token's owner, or None; without storage there are no valid tokens."""
        storage = getattr(self.hub, "storage", None)
        if storage is None:
            return None
        return await tokens.verify_token(storage, token)

    def cookie_secure(self, request: web.Request) -> bool:
        if self.secure_cookies == "auto":
            return request.secure
        return bool(self.secure_cookies)

    # -- lifecycle --------------------------------------------------------------------------
    async def async_start(self) -> None:
        self.app = self.build_app()
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(
                err.errno,
                f"HTTP server cannot listen on {self.host}:{self.requested_port}: "
                f"{err.strerror or err}",
            ) from err
        self.port = int(self._runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self.started_at = time.time()
        _LOGGER.info("HTTP API listening on %s", self.url)

    async def async_stop(self) -> None:
        for connection in list(self.websockets):
            await connection.close(WSCloseCode.GOING_AWAY, "hub stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        _LOGGER.info("HTTP API stopped")
