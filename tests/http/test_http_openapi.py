"""The OpenAPI document: complete with respect to what the server serves, and well-formed."""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol
from aiohttp import ClientSession

from hub.http.openapi import voluptuous_to_json_schema


def _served_api_routes(hub: Any) -> set[tuple[str, str]]:
    """(method, path) of every /api route aiohttp's router actually dispatches."""
    served = set()
    for route in hub.http.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api") and route.method != "HEAD":
            served.add((route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)))
    return served


async def test_openapi_documents_every_served_api_route(hub: Any, client: ClientSession) -> None:
    async with client.get("/api/openapi.json") as resp:  # no token needed
        assert resp.status == 200
        doc = await resp.json()
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    served = _served_api_routes(hub)
    assert served, "the router has no /api routes?"
    assert served - documented == set(), "served but not documented"
    assert {r for r in documented if r[1].startswith("/api")} - served == set(), (
        "documented but not served"
    )
    # The contract's core endpoints are there.
    for expected in [
        ("get", "/api/health"),
        ("get", "/api/states"),
        ("get", "/api/states/{entity_id}"),
        ("post", "/api/services/{domain}/{service}"),
        ("get", "/api/openapi.json"),
        ("get", "/api/websocket"),
        ("get", "/api/example/hello"),
        ("get", "/metrics"),
    ]:
        assert expected in documented


async def test_openapi_shape(client: ClientSession) -> None:
    async with client.get("/api/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Voltwatch API"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `voltwatch token create NAME`",
    }
    assert doc["security"] == [{"bearerAuth": []}]
    paths = doc["paths"]
    assert paths["/api/health"]["get"]["security"] == []
    assert "401" not in paths["/api/health"]["get"]["responses"]
    states = paths["/api/states"]["get"]
    assert "security" not in states  # the global bearer requirement applies
    assert "401" in states["responses"]
    single = paths["/api/states/{entity_id}"]["get"]
    assert single["parameters"] == [
        {"name": "entity_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    call = paths["/api/services/{domain}/{service}"]["post"]
    assert call["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert "400" in call["responses"]
    query = {p["name"]: p for p in states["parameters"]}
    assert query["domain"]["in"] == "query" and query["domain"]["required"] is False
    plugin = paths["/api/example/hello"]["get"]
    assert plugin["summary"] == "Say hello from a plugin."
    assert plugin["x-voltwatch-plugin"] == "example"
    assert "401" in plugin["responses"]
    operation_ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_converter_objects_and_markers() -> None:
    schema = vol.Schema(
        {
            vol.Required("device_id", description="which detector"): str,
            vol.Optional("value", default=300): vol.All(int, vol.Range(min=20, max=1000)),
            vol.Optional("mode"): vol.In(["alarm", "trip"]),
            vol.Optional("ratio"): vol.All(
                vol.Coerce(float), vol.Range(min=0, max=1, min_included=False)
            ),
            vol.Optional("tags"): [str],
            vol.Optional("flag"): vol.Boolean(),
            vol.Optional("either"): vol.Any(int, None),
            vol.Optional("name"): vol.All(str, vol.Length(min=1, max=8)),
            vol.Optional("code"): vol.Match(r"^\d+$"),
        }
    )
    assert voluptuous_to_json_schema(schema) == {
        "type": "object",
        "properties": {
            "device_id": {"type": "string", "description": "which detector"},
            "value": {"type": "integer", "minimum": 20, "maximum": 1000, "default": 300},
            "mode": {"enum": ["alarm", "trip"]},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "flag": {"type": "boolean"},
            "either": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 8,
                "minItems": 1,
                "maxItems": 8,
            },
            "code": {"type": "string", "pattern": r"^\d+$"},
        },
        "required": ["device_id"],
        "additionalProperties": False,
    }


def test_converter_extra_required_and_unknown_validators() -> None:
    def slug(value: Any) -> str:
        return str(value)

    assert voluptuous_to_json_schema(
        vol.Schema({"a": int, vol.Optional("b"): slug}, required=True, extra=vol.ALLOW_EXTRA)
    ) == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"title": "slug"}},
        "required": ["a"],
        "additionalProperties": True,
    }
    assert voluptuous_to_json_schema(vol.Schema({str: int})) == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    assert voluptuous_to_json_schema(vol.Schema(dict)) == {"type": "object"}
    assert voluptuous_to_json_schema([int, str]) == {
        "type": "array",
        "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    }
    # Conflicting keywords in All() fall back to allOf instead of lying.
    assert voluptuous_to_json_schema(vol.All(str, vol.Coerce(int))) == {
        "allOf": [{"type": "string"}, {"type": "integer"}]
    }
