"""The route table: one declaration per endpoint, read by the server *and* by the OpenAPI builder.

An endpoint is declared once, with what a reader of the API needs to know (summary, request
schema, response description), so the documentation cannot drift from what is served: the
server registers exactly the routes of the table and `openapi.py` describes exactly those.

Request bodies and query strings are validated against the route's voluptuous schemas before
the handler runs, so a handler only ever sees validated data (`request[BODY]`,
`request[QUERY]`) and every malformed request gets the same kind of 400 with the reason.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import voluptuous as vol
from aiohttp import web
from voluptuous.humanize import humanize_error

if TYPE_CHECKING:
    from hub.auth.principal import Principal

    from .tokens import TokenInfo

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request-scoped values set by the server before a handler runs.
BODY: web.RequestKey[Any] = web.RequestKey("voltwatch_body", object)
QUERY: web.RequestKey[dict[str, Any]] = web.RequestKey("voltwatch_query", dict)
# Kept for handlers written before users existed: its `name`/`audit_user` is the principal's
# name. New code reads PRINCIPAL (or the helpers in hub.http.auth).
TOKEN: web.RequestKey[TokenInfo | None] = web.RequestKey("voltwatch_token", object)
#: Who is asking (hub.auth.Principal); None on routes that need no authentication.
PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("voltwatch_principal", object)
# The hub, for handlers (typed loosely: a test may run the server on a stand-in).
HUB: web.AppKey[Any] = web.AppKey("voltwatch_hub", object)
SERVER: web.AppKey[Any] = web.AppKey("voltwatch_http_server", object)

ROUTE_ATTR = "__voltwatch_route__"

# Access decisions (`Route.scope`): every route declares one; the auth middleware enforces it.
#: No authentication (health, the API document, login).
PUBLIC = "public"
#: Any signed-in principal; the answer holds nothing tied to a project.
AUTHENTICATED = "authenticated"
#: Any signed-in principal; the handler filters or checks every project-bound item itself.
SCOPED = "scoped"
# ... or a role name (hub.auth.permissions.ROLES): that role and above (the handler still
# filters by scope). A route without a decision (e.g. a plugin's plain web.get) is served
# to super_admin and system tokens only: an undecided endpoint must not leak across projects.
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")


class ApiError(Exception):
    """A failure the client must see with its reason; the error middleware renders it as JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint and everything the API documentation says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    description: str = ""
    #: False only for endpoints that must work before a client has a token (health, docs).
    auth: bool = True
    #: The access decision: PUBLIC, AUTHENTICATED, SCOPED or the lowest role (see above).
    scope: str | None = None
    #: Validates the JSON body; None means the endpoint takes no body.
    body_schema: vol.Schema | None = None
    #: An empty body is read as `{}` (e.g. a service call without data).
    body_optional: bool = False
    #: Validates the query string (a dict of str); None means no query parameters.
    query_schema: vol.Schema | None = None
    #: Status -> description of the successful responses (errors are documented by the builder).
    responses: Mapping[int, str] = field(default_factory=lambda: {200: "OK"})
    #: JSON schema of the 200 response body, when it is worth spelling out.
    response_schema: Mapping[str, Any] | None = None
    response_content_type: str = "application/json"
    tags: tuple[str, ...] = ()
    #: Who declared it: "core" or a plugin's name (shown in the OpenAPI document).
    owner: str = "core"
    websocket: bool = False
    #: A request-rate bucket per client address (`http.rate_limits`, hub/http/security.py).
    rate_limit: str | None = None

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def operation_id(self) -> str:
        name = getattr(self.handler, "__name__", "handler").lstrip("_")
        return name if self.owner == "core" else f"{self.owner}_{name}"


class RouteTable:
    """An ordered list of Routes with decorators to declare them next to their handler."""

    def __init__(self, routes: list[Route] | None = None) -> None:
        self._routes: list[Route] = list(routes or [])

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, route: Route) -> Route:
        for existing in self._routes:
            if existing.method == route.method and existing.path == route.path:
                raise ValueError(f"Route {route.method} {route.path} is declared twice")
        self._routes.append(route)
        return route

    def extend(self, routes: RouteTable | list[Route]) -> None:
        for route in routes:
            self.add(route)

    def route(
        self, method: str, path: str, summary: str, **meta: Any
    ) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            self.add(Route(method.upper(), path, handler, summary, **meta))
            return handler

        return decorate

    def get(self, path: str, summary: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, summary, **meta)

    def post(self, path: str, summary: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, summary, **meta)

    def put(self, path: str, summary: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, summary, **meta)

    def patch(self, path: str, summary: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, summary, **meta)

    def delete(self, path: str, summary: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, summary, **meta)


def route_from_routedef(definition: web.RouteDef, owner: str) -> Route:
    """A plugin's plain `web.get(...)` as a Route: documented by its handler's docstring."""
    handler = definition.handler
    doc = (getattr(handler, "__doc__", None) or "").strip()
    summary, _, description = doc.partition("\n")
    return Route(
        method=definition.method.upper(),
        path=definition.path,
        handler=handler,  # type: ignore[arg-type]
        summary=summary.strip() or f"Undocumented route of plugin {owner}",
        description=description.strip(),
        auth=definition.path.startswith("/api/"),
        tags=(owner,),
        owner=owner,
    )


# -- JSON ------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    """Make the hub's own objects JSON-able (State, Event, Context and dataclasses)."""
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, MappingProxyType):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(data: Any) -> str:
    """JSON text; UTF-8 kept as is because most users read Chinese names."""
    return json.dumps(data, ensure_ascii=False, default=_json_default, allow_nan=False)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The one error shape of the API: `{"error": reason, "status": code[, "details": …]}`."""
    body: dict[str, Any] = {"error": message, "status": status}
    if details:
        body["details"] = details
    return json_response(body, status=status, headers=headers)


# -- validation ------------------------------------------------------------------------------
def invalid_details(err: vol.Invalid) -> list[dict[str, Any]]:
    errors = err.errors if isinstance(err, vol.MultipleInvalid) else [err]
    return [{"path": [str(part) for part in item.path], "message": item.msg} for item in errors]


def validate(schema: vol.Schema, data: Any, what: str) -> Any:
    """Run a schema; a failure becomes a 400 that says which key and why."""
    try:
        return schema(data)
    except vol.Invalid as err:
        raise ApiError(
            400, f"Invalid {what}: {humanize_error(data, err)}", invalid_details(err)
        ) from err


async def read_json(request: web.Request, optional: bool = False) -> Any:
    """The request body as JSON; 400 with the parser's reason when it is not."""
    raw = await request.read()  # enforces client_max_size (413)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "A JSON request body is required")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"Request body is not UTF-8: {err.reason} at byte {err.start}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiError(
            400, f"Malformed JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from err
