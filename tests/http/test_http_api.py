"""The REST API against a running hub: auth, states, services, errors, plugins, metrics."""

from __future__ import annotations

import io
import logging
import re
import time
from typing import Any

import pytest
from aiohttp import ClientSession

from hub.core.events import EVENT_CALL_SERVICE, Event, callback
from hub.http import tokens


async def test_health_needs_no_token(client: ClientSession) -> None:
    async with client.get("/api/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    async with client.head("/api/health") as resp:  # probes that use HEAD
        assert resp.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer vw_not-a-real-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "nonsense"},
    ],
    ids=["missing", "wrong", "empty", "basic", "garbage"],
)
async def test_api_needs_a_valid_token(client: ClientSession, headers: dict[str, str]) -> None:
    async with client.get("/api/states", headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        body = await resp.json()
        assert body["status"] == 401 and body["error"]


async def test_unknown_api_path_needs_a_token_before_it_is_a_404(
    client: ClientSession, auth: dict[str, str]
) -> None:
    async with client.get("/api/nothing/here") as resp:
        assert resp.status == 401
    async with client.get("/api/nothing/here", headers=auth) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "Not found: /api/nothing/here"


async def test_expired_token_is_refused(hub: Any, client: ClientSession) -> None:
    expired = await tokens.create_token(
        hub.storage, "expired", expires_in=60, now=time.time() - 3600
    )
    async with client.get("/api/states", headers={"Authorization": f"Bearer {expired}"}) as resp:
        assert resp.status == 401
    # ...while one that expires later works.
    valid = await tokens.create_token(hub.storage, "valid", expires_in=3600)
    async with client.get("/api/states", headers={"Authorization": f"Bearer {valid}"}) as resp:
        assert resp.status == 200


async def test_revoked_token_is_refused_at_once(hub: Any, client: ClientSession) -> None:
    token = await tokens.create_token(hub.storage, "to-revoke")
    headers = {"Authorization": f"Bearer {token}"}
    async with client.get("/api/states", headers=headers) as resp:
        assert resp.status == 200  # now verified and cached
    info = await tokens.verify_token(hub.storage, token)
    assert info is not None
    assert await tokens.revoke_token(hub.storage, info.id)
    async with client.get("/api/states", headers=headers) as resp:
        assert resp.status == 401
    assert not await tokens.revoke_token(hub.storage, info.id)  # already revoked


async def test_only_the_hash_is_stored(hub: Any, token: str) -> None:
    rows = await tokens.list_tokens(hub.storage)
    assert [row["name"] for row in rows] == ["test-client"]
    import sqlalchemy as sa

    from hub.storage.schema import tokens as table

    async with hub.storage.engine.connect() as conn:
        stored = (await conn.execute(sa.select(table.c.token_hash))).scalars().all()
    assert stored == [tokens.hash_token(token)]
    assert token not in stored


async def test_states_list_and_single(
    hub: Any, client: ClientSession, auth: dict[str, str]
) -> None:
    hub.states.async_set("sensor.arcm_1_residual_current", 12, {"unit_of_measurement": "mA"})
    hub.states.async_set("binary_sensor.smoke_1_smoke", False)

    async with client.get("/api/states", headers=auth) as resp:
        assert resp.status == 200
        states = {item["entity_id"]: item for item in await resp.json()}
    assert states["sensor.arcm_1_residual_current"]["state"] == "12"
    assert states["binary_sensor.smoke_1_smoke"]["state"] == "off"
    for item in states.values():
        assert {"entity_id", "state", "attributes", "last_changed", "last_updated"} <= set(item)

    async with client.get("/api/states", params={"domain": "sensor"}, headers=auth) as resp:
        assert [s["entity_id"] for s in await resp.json()] == ["sensor.arcm_1_residual_current"]

    async with client.get("/api/states/sensor.arcm_1_residual_current", headers=auth) as resp:
        assert resp.status == 200
        one = await resp.json()
    assert one["attributes"] == {"unit_of_measurement": "mA"}


async def test_unknown_entity_is_a_json_404(client: ClientSession, auth: dict[str, str]) -> None:
    async with client.get("/api/states/sensor.nope", headers=auth) as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert await resp.json() == {"error": "Entity sensor.nope not found", "status": 404}


async def test_unknown_query_parameter_is_a_400(
    client: ClientSession, auth: dict[str, str]
) -> None:
    async with client.get("/api/states", params={"colour": "red"}, headers=auth) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert "colour" in body["error"]
    assert body["details"][0]["path"] == ["colour"]


async def test_service_call_runs_with_the_token_as_user(
    hub: Any, client: ClientSession, auth: dict[str, str]
) -> None:
    seen: list[Event] = []

    @callback
    def record(event: Event) -> None:
        seen.append(event)

    hub.bus.listen(EVENT_CALL_SERVICE, record)
    async with client.post("/api/services/test/echo", json={"value": 7}, headers=auth) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["response"] == {"value": 7, "user": "test-client"}
    assert body["context"]["user_id"] == "test-client"
    assert [e.context.user_id for e in seen] == ["test-client"]
    assert seen[0].context.id == body["context"]["id"]


async def test_unknown_service_is_a_404(client: ClientSession, auth: dict[str, str]) -> None:
    async with client.post("/api/services/test/nope", json={}, headers=auth) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "Service test.nope not found"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"value": 11}, "value must be at most 10"),
        ({"value": "x"}, "expected int"),
        ({}, "required key not provided @ data['value']"),
        ({"value": 1, "extra": 2}, "extra keys not allowed @ data['extra']"),
    ],
)
async def test_invalid_service_data_is_a_400_with_the_reason(
    client: ClientSession, auth: dict[str, str], payload: dict[str, Any], reason: str
) -> None:
    async with client.post("/api/services/test/echo", json=payload, headers=auth) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert reason in body["error"], body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"value": 1', "Malformed JSON"),
        (b"[1, 2]", "expected dict"),
        (b"\xff\xfe", "not UTF-8"),
    ],
    ids=["truncated", "array", "binary"],
)
async def test_malformed_body_is_a_400_with_the_reason(
    client: ClientSession, auth: dict[str, str], data: bytes, reason: str
) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    async with client.post("/api/services/test/echo", data=data, headers=headers) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert reason in body["error"], body


async def test_empty_body_is_empty_service_data(
    client: ClientSession, auth: dict[str, str]
) -> None:
    async with client.post("/api/services/test/echo", headers=auth) as resp:
        assert resp.status == 400  # the service needs `value`: the service's reason, not ours
        assert "value" in (await resp.json())["error"]


async def test_unauthorized_service_call_is_a_403(
    client: ClientSession, auth: dict[str, str]
) -> None:
    async with client.post("/api/services/test/forbidden", headers=auth) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "Tokens of this kind may not trip breakers"


async def test_a_crash_is_a_logged_500_without_details(
    client: ClientSession, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="hub.http.server"):
        async with client.post("/api/services/test/crash", headers=auth) as resp:
            assert resp.status == 500
            body = await resp.json()
    assert "secret" not in body["error"] and "Traceback" not in body["error"]
    error_id = re.search(r"logged as (\w+)", body["error"]).group(1)  # type: ignore[union-attr]
    record = next(r for r in caplog.records if error_id in r.getMessage())
    assert "POST /api/services/test/crash" in record.getMessage()
    assert "test-client" in record.getMessage()
    assert record.exc_info is not None and "secret internal detail" in str(record.exc_info[1])


async def test_too_large_body_is_a_json_413(
    hub: Any, client: ClientSession, auth: dict[str, str]
) -> None:
    size = hub.http.max_request_size + 1
    body = io.BytesIO(b"1" * size)
    async with client.post("/api/services/test/echo", data=body, headers=auth) as resp:
        assert resp.status == 413
        assert "exceeded" in (await resp.json())["error"]


async def test_wrong_method_is_a_json_405(client: ClientSession, auth: dict[str, str]) -> None:
    async with client.delete("/api/states", headers=auth) as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert (await resp.json())["error"] == "Method DELETE not allowed on /api/states"


async def test_services_listing_has_field_schemas(
    client: ClientSession, auth: dict[str, str]
) -> None:
    async with client.get("/api/services", headers=auth) as resp:
        assert resp.status == 200
        domains = {item["domain"]: item["services"] for item in await resp.json()}
    echo = domains["test"]["echo"]
    assert echo["supports_response"] is True
    assert echo["fields"]["properties"]["value"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert echo["fields"]["required"] == ["value"]


async def test_plugins_endpoint(client: ClientSession, auth: dict[str, str]) -> None:
    async with client.get("/api/plugins", headers=auth) as resp:
        assert resp.status == 200
        body = await resp.json()
    (example,) = [p for p in body["plugins"] if p["name"] == "example"]
    assert example["version"] == "1.2.3"
    assert example["hooks"] == ["voltwatch_http_routes", "voltwatch_setup"]
    assert body["failures"] == []


async def test_plugin_route_is_served_behind_auth(
    client: ClientSession, auth: dict[str, str]
) -> None:
    async with client.get("/api/example/hello") as resp:
        assert resp.status == 401
    async with client.get("/api/example/hello", headers=auth) as resp:
        assert resp.status == 200
        assert await resp.json() == {"hello": "plugin"}


_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|[+-]Inf)$"
)


async def test_metrics_are_prometheus_text(
    hub: Any, client: ClientSession, auth: dict[str, str]
) -> None:
    hub.states.async_set("sensor.a", 1)
    hub.states.async_set("sensor.b", "unavailable")
    async with client.get("/metrics") as resp:
        assert resp.status == 401  # hub-wide numbers: super_admin and system tokens only
    async with client.get("/metrics", headers=auth) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples: dict[str, str] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge")
            typed.add(name)
        elif line.startswith("# HELP "):
            continue
        else:
            assert _SAMPLE.match(line), f"not a Prometheus sample: {line!r}"
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels] = value
            assert name_labels.split("{")[0] in typed
    assert samples["voltwatch_entities"] == "2"
    assert samples["voltwatch_entities_unavailable"] == "1"
    assert samples['voltwatch_entities_by_domain{domain="sensor"}'] == "2"
    assert samples["voltwatch_bus_listener_errors_total"] == "0"
    assert samples["voltwatch_plugin_failures"] == "0"
    assert 'voltwatch_info{version="0.1.0",name="Test hub"}' in samples
    assert "voltwatch_recorder_rows_written_total" in samples  # the real recorder's stats()
    assert samples["voltwatch_recorder_overflowing"] == "0"
    assert samples["voltwatch_alarms_provisional_total"] == "0"  # a stall's counters
    assert samples["voltwatch_notify_deferred_writes_total"] == "0"


async def test_bad_plugin_routes_are_reported_and_left_out(
    tmp_path: Any, make_plugins: Any, hub_config: Any
) -> None:
    from aiohttp import web

    from hub.core.hookspecs import hookimpl
    from hub.hub import Hub

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    class BadRoutes:
        @hookimpl
        def voltwatch_http_routes(self, hub: Any) -> list[Any]:
            return [
                web.get("/api/states", handler),  # taken by the core
                "not a route",
                web.get("/api/bad/{unclosed", handler),  # aiohttp refuses the path
                web.post("/api/bad/ok", handler),
            ]

    plugins = make_plugins()
    plugins.register(BadRoutes(), "bad")
    hub = Hub(config_dir=tmp_path, config=hub_config(), plugin_manager=plugins)
    await hub.async_start()
    try:
        reasons = [f.reason for f in plugins.failures if f.name == "bad"]
        assert len(reasons) == 3, reasons
        assert any("GET /api/states is taken" in r for r in reasons)
        assert any("not a route" in r for r in reasons)
        assert any("/api/bad/{unclosed" in r for r in reasons)
        paths = hub.http.openapi()["paths"]
        assert "/api/bad/ok" in paths and "/api/bad/{unclosed" not in paths
        assert paths["/api/states"]["get"]["operationId"] == "get_states"
    finally:
        await hub.async_stop()
