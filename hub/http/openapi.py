"""The OpenAPI 3.1 document (`GET /api/openapi.json`), built from the server's route table.

Nothing here lists endpoints: the document is derived from the same `Route` objects the server
registers (core routes and the ones plugins contribute), so an endpoint cannot be served without
being documented, and the test suite checks that against aiohttp's router.

Voluptuous to JSON Schema
-------------------------
There is no maintained library for this, and voluptuous validators are arbitrary callables, so
`voluptuous_to_json_schema` converts the common, declarative part and leaves the rest open:

* `Schema`, dict schemas: `object` with `properties`; `Required` keys (and plain keys of a
  `Schema(required=True)`) go to `required`; `Optional(default=...)` gives `default`; a marker's
  `description=` is kept; `extra=ALLOW_EXTRA` gives `additionalProperties: true`, otherwise
  `false`. A non-literal key (`{str: int}`) becomes `additionalProperties` of that value.
* types `str int float bool list dict None` -> `string integer number boolean array object null`;
  `Coerce(T)` is documented as T; `Boolean()` as boolean; `Datetime()`, `Url()`, `Email()` as
  strings with a `format`.
* `[a]` -> array of a, `[a, b]` -> array of anyOf; `Any(a, b)` -> `anyOf`; `All(a, b)` -> the
  merged keywords when they do not clash, else `allOf`.
* `In(...)` -> `enum`; `Range`/`Clamp` -> `minimum`/`maximum` (exclusive when the bound is
  excluded); `Length` -> `minLength`/`maxLength` and `minItems`/`maxItems` (JSON Schema ignores
  the ones that do not fit the type); `Match` -> `pattern`; a literal value -> `const`
  (`None` -> `null`).
* anything else (a custom function) -> `{}` (any value) with the function's name as a `title`,
  which is honest: the server validates it, the document cannot say how.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import voluptuous as vol

from .routes import Route

JSON = dict[str, Any]
OPENAPI_VERSION = "3.1.0"

_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def voluptuous_to_json_schema(schema: Any, required_default: bool = False) -> JSON:
    """Convert a voluptuous schema (or a plain validator) to a JSON Schema fragment."""
    if isinstance(schema, vol.Schema):
        return (
            _convert_object(schema.schema, schema.required, schema.extra)
            if isinstance(schema.schema, dict)
            else voluptuous_to_json_schema(schema.schema, schema.required)
        )
    if isinstance(schema, dict):
        return _convert_object(schema, required_default, vol.PREVENT_EXTRA)
    if isinstance(schema, list):
        if not schema:
            return {"type": "array"}
        items = [voluptuous_to_json_schema(item, required_default) for item in schema]
        return {"type": "array", "items": items[0] if len(items) == 1 else {"anyOf": items}}
    if schema in _TYPES:
        return {"type": _TYPES[schema]}
    if isinstance(schema, vol.Any):
        return {
            "anyOf": [voluptuous_to_json_schema(v, required_default) for v in schema.validators]
        }
    if isinstance(schema, vol.All):
        return _merge_all(
            [voluptuous_to_json_schema(v, required_default) for v in schema.validators]
        )
    if isinstance(schema, vol.In):
        container = schema.container
        values = list(container.keys() if isinstance(container, dict) else container)
        return {"enum": values}
    if isinstance(schema, vol.Range | vol.Clamp):
        return _range(schema)
    if isinstance(schema, vol.Length):
        out: JSON = {}
        if schema.min is not None:
            out["minLength"] = out["minItems"] = schema.min
        if schema.max is not None:
            out["maxLength"] = out["maxItems"] = schema.max
        return out
    if isinstance(schema, vol.Coerce):
        return {"type": _TYPES[schema.type]} if schema.type in _TYPES else {}
    if isinstance(schema, vol.Match):
        return {"type": "string", "pattern": schema.pattern.pattern}
    if isinstance(schema, vol.Datetime):
        return {"type": "string", "format": "date-time"}
    if schema is None:  # voluptuous treats a literal None as "must be None"
        return {"type": "null"}
    if isinstance(schema, str | int | float | bool):
        return {"const": schema}
    name = getattr(schema, "__name__", None)
    if name == "Boolean":
        return {"type": "boolean"}
    if name in ("Url", "FqdnUrl"):
        return {"type": "string", "format": "uri"}
    if name == "Email":
        return {"type": "string", "format": "email"}
    if callable(schema) and name:
        return {"title": name}
    return {}


def _range(schema: vol.Range | vol.Clamp) -> JSON:
    out: JSON = {}
    min_included = getattr(schema, "min_included", True)
    max_included = getattr(schema, "max_included", True)
    if schema.min is not None:
        out["minimum" if min_included else "exclusiveMinimum"] = schema.min
    if schema.max is not None:
        out["maximum" if max_included else "exclusiveMaximum"] = schema.max
    return out


def _merge_all(parts: list[JSON]) -> JSON:
    merged: JSON = {}
    for part in parts:
        for key, value in part.items():
            if key in merged and merged[key] != value:
                # A later `type` from a coercion chain (str -> int) is what the value ends as,
                # but a reader sends the first; keep the first and document the rest as allOf.
                return {"allOf": [p for p in parts if p]}
            merged[key] = value
    return merged


def _convert_object(mapping: dict[Any, Any], required_default: bool, extra: int) -> JSON:
    properties: JSON = {}
    required: list[str] = []
    out: JSON = {"type": "object"}
    for key, value in mapping.items():
        sub = voluptuous_to_json_schema(value, required_default)
        if isinstance(key, vol.Marker):
            name = key.schema
            if getattr(key, "description", None):
                sub = {**sub, "description": key.description}
            if isinstance(key, vol.Optional) and key.default is not vol.UNDEFINED:
                default = key.default() if callable(key.default) else key.default
                if isinstance(default, str | int | float | bool | list | dict) or default is None:
                    sub = {**sub, "default": default}
            is_required = isinstance(key, vol.Required) or (
                required_default and not isinstance(key, vol.Optional)
            )
        else:
            name = key
            is_required = required_default
        if isinstance(name, str):
            properties[name] = sub
            if is_required:
                required.append(name)
        else:
            out["additionalProperties"] = sub  # e.g. {str: int}
    if properties:
        out["properties"] = properties
    if required:
        out["required"] = required
    if "additionalProperties" not in out:
        out["additionalProperties"] = extra == vol.ALLOW_EXTRA
    return out


# -- the document ----------------------------------------------------------------------------
_ERROR_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "Why the request failed"},
        "status": {"type": "integer"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "array", "items": {"type": "string"}},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "required": ["error", "status"],
}

_STATE_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "entity_id": {"type": "string", "examples": ["sensor.arcm_1_residual_current"]},
        "state": {"type": "string"},
        "attributes": {"type": "object"},
        "last_changed": {"type": "string", "format": "date-time"},
        "last_updated": {"type": "string", "format": "date-time"},
        "last_reported": {"type": "string", "format": "date-time"},
        "context": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "user_id": {"type": ["string", "null"]},
                "parent_id": {"type": ["string", "null"]},
            },
        },
    },
    "required": ["entity_id", "state", "attributes", "last_changed", "last_updated"],
}

COMPONENT_SCHEMAS: JSON = {"Error": _ERROR_SCHEMA, "State": _STATE_SCHEMA}


def _error(description: str) -> JSON:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(route: Route) -> JSON:
    op: JSON = {"summary": route.summary, "operationId": route.operation_id}
    if route.description:
        op["description"] = route.description
    if route.tags:
        op["tags"] = list(route.tags)
    parameters: list[JSON] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path_params
    ]
    if route.query_schema is not None:
        query = voluptuous_to_json_schema(route.query_schema)
        needed = set(query.get("required", []))
        for name, sub in query.get("properties", {}).items():
            param: JSON = {"name": name, "in": "query", "required": name in needed, "schema": sub}
            if "description" in sub:
                param["description"] = sub["description"]
            parameters.append(param)
    if parameters:
        op["parameters"] = parameters
    if route.body_schema is not None:
        op["requestBody"] = {
            "required": not route.body_optional,
            "content": {
                "application/json": {"schema": voluptuous_to_json_schema(route.body_schema)}
            },
        }
    responses: JSON = {}
    for status, description in route.responses.items():
        response: JSON = {"description": description}
        if status < 300 and status != 204 and not route.websocket:
            content: JSON = {}
            if route.response_schema is not None:
                content["schema"] = dict(route.response_schema)
            response["content"] = {route.response_content_type: content}
        responses[str(status)] = response
    if route.body_schema is not None or route.query_schema is not None:
        responses["400"] = _error("Malformed JSON or invalid data; the reason is in `error`")
    if route.auth:
        responses["401"] = _error("Missing, invalid, expired or revoked bearer token")
    if route.path_params:
        responses.setdefault("404", _error("No such item"))
    responses["500"] = _error("Internal error (logged on the hub with the request)")
    op["responses"] = responses
    if not route.auth:
        op["security"] = []
    if route.owner != "core":
        op["x-voltwatch-plugin"] = route.owner
    return op


def build_openapi(
    routes: Iterable[Route],
    *,
    title: str = "Voltwatch API",
    version: str = "0.0.0",
    description: str = "",
    extra_components: JSON | None = None,
    route_filter: Callable[[Route], bool] | None = None,
) -> JSON:
    """The OpenAPI document of the given routes (all of them unless `route_filter` says no)."""
    paths: JSON = {}
    for route in routes:
        if route_filter is not None and not route_filter(route):
            continue
        path = re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*):[^}]*\}", r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `voltwatch token create NAME`",
                }
            },
            "schemas": {**COMPONENT_SCHEMAS, **(extra_components or {})},
        },
        "security": [{"bearerAuth": []}],
    }
