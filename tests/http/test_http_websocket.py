"""The websocket API against a running hub: auth, subscriptions, commands, slow clients.

Waiting is always on a message with `TIMEOUT` as a failure bound; ordering is checked with a
ping: the server answers in queue order, so a pong that arrives first proves nothing else was
queued before it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientSession, ClientWebSocketResponse, WSCloseCode, WSMsgType

from hub.http import tokens

#: Upper bound for waiting on a message; only ever reached when a test fails.
TIMEOUT = 10.0


async def receive_json(ws: ClientWebSocketResponse) -> dict[str, Any]:
    """The next message as JSON; fails (not hangs) when nothing comes."""
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type is WSMsgType.TEXT, f"expected a text message, got {msg.type!r} {msg.data!r}"
    return json.loads(msg.data)


async def connect(client: ClientSession, token: str) -> ClientWebSocketResponse:
    """An authenticated websocket, through the in-band auth message."""
    ws = await client.ws_connect("/api/websocket")
    first = await receive_json(ws)
    assert first["type"] == "auth_required"
    await ws.send_json({"type": "auth", "access_token": token})
    assert (await receive_json(ws))["type"] == "auth_ok"
    return ws


async def assert_nothing_queued(ws: ClientWebSocketResponse, ping_id: int) -> None:
    await ws.send_json({"id": ping_id, "type": "ping"})
    assert await receive_json(ws) == {"id": ping_id, "type": "pong"}


async def test_auth_by_message(client: ClientSession, token: str) -> None:
    ws = await connect(client, token)
    await assert_nothing_queued(ws, 1)
    await ws.close()


async def test_auth_by_header_skips_the_exchange(
    client: ClientSession, auth: dict[str, str]
) -> None:
    async with client.ws_connect("/api/websocket", headers=auth) as ws:
        assert (await receive_json(ws))["type"] == "auth_ok"
        await assert_nothing_queued(ws, 1)


async def test_bad_token_is_refused_and_closed(client: ClientSession) -> None:
    async with client.ws_connect("/api/websocket") as ws:
        assert (await receive_json(ws))["type"] == "auth_required"
        await ws.send_json({"type": "auth", "access_token": "vw_wrong"})
        reply = await receive_json(ws)
        assert reply["type"] == "auth_invalid"
        assert reply["message"] == "Invalid, expired or revoked token"
        closing = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert closing.type is WSMsgType.CLOSE
        assert closing.data == WSCloseCode.POLICY_VIOLATION


async def test_bad_header_token_is_refused(client: ClientSession) -> None:
    headers = {"Authorization": "Bearer vw_wrong"}
    async with client.ws_connect("/api/websocket", headers=headers) as ws:
        assert (await receive_json(ws))["type"] == "auth_invalid"


async def test_commands_before_auth_are_refused(client: ClientSession) -> None:
    async with client.ws_connect("/api/websocket") as ws:
        assert (await receive_json(ws))["type"] == "auth_required"
        await ws.send_json({"id": 1, "type": "get_states"})
        assert (await receive_json(ws))["type"] == "auth_invalid"


async def test_subscribe_states_with_entity_filter(
    hub: Any, client: ClientSession, token: str
) -> None:
    ws = await connect(client, token)
    await ws.send_json({"id": 1, "type": "subscribe_states", "entity_ids": ["sensor.wanted"]})
    assert await receive_json(ws) == {"id": 1, "type": "result", "success": True, "result": None}

    hub.states.async_set("sensor.other", 1)
    hub.states.async_set("sensor.wanted", 550, {"unit_of_measurement": "mA"})
    hub.states.async_set("sensor.other", 2)

    message = await receive_json(ws)
    assert message["id"] == 1 and message["type"] == "event"
    event = message["event"]
    assert event["entity_id"] == "sensor.wanted"
    assert event["old_state"] is None
    assert event["new_state"]["state"] == "550"
    assert event["new_state"]["attributes"] == {"unit_of_measurement": "mA"}
    await assert_nothing_queued(ws, 2)  # neither sensor.other change was sent

    hub.states.async_set("sensor.wanted", 600)
    message = await receive_json(ws)
    assert message["event"]["old_state"]["state"] == "550"
    assert message["event"]["new_state"]["state"] == "600"
    await ws.close()


async def test_subscribe_all_states_and_unsubscribe(
    hub: Any, client: ClientSession, token: str
) -> None:
    ws = await connect(client, token)
    await ws.send_json({"id": 1, "type": "subscribe_states"})
    assert (await receive_json(ws))["success"] is True
    hub.states.async_set("sensor.a", 1)
    hub.states.async_set("switch.b", "on")
    assert [(await receive_json(ws))["event"]["entity_id"] for _ in range(2)] == [
        "sensor.a",
        "switch.b",
    ]
    await ws.send_json({"id": 2, "type": "unsubscribe", "subscription": 1})
    assert (await receive_json(ws))["success"] is True
    hub.states.async_set("sensor.a", 2)
    await assert_nothing_queued(ws, 3)

    await ws.send_json({"id": 4, "type": "unsubscribe", "subscription": 1})
    reply = await receive_json(ws)
    assert reply["success"] is False and reply["error"]["code"] == "not_found"
    await ws.close()


async def test_subscribe_events(hub: Any, client: ClientSession, token: str) -> None:
    ws = await connect(client, token)
    await ws.send_json({"id": 5, "type": "subscribe_events", "event_type": "alarm_raised"})
    assert (await receive_json(ws))["success"] is True
    hub.bus.async_fire("something_else", {"x": 1})
    hub.bus.async_fire("alarm_raised", {"device_id": "arcm-1", "type": "residual_current_high"})
    message = await receive_json(ws)
    assert message["id"] == 5
    assert message["event"]["event_type"] == "alarm_raised"
    assert message["event"]["data"] == {"device_id": "arcm-1", "type": "residual_current_high"}
    await ws.send_json({"id": 5, "type": "subscribe_events"})
    assert (await receive_json(ws))["error"]["code"] == "id_reuse"
    await ws.close()


async def test_get_states(hub: Any, client: ClientSession, token: str) -> None:
    hub.states.async_set("sensor.x", 3.5)
    hub.states.async_set("sensor.y", "on")
    ws = await connect(client, token)
    await ws.send_json({"id": 1, "type": "get_states"})
    reply = await receive_json(ws)
    assert reply["success"] is True
    assert {s["entity_id"]: s["state"] for s in reply["result"]} == {
        "sensor.x": "3.5",
        "sensor.y": "on",
    }
    await ws.send_json({"id": 2, "type": "get_states", "entity_ids": ["sensor.y", "sensor.nope"]})
    assert [s["entity_id"] for s in (await receive_json(ws))["result"]] == ["sensor.y"]
    await ws.close()


async def test_call_service(client: ClientSession, token: str) -> None:
    ws = await connect(client, token)
    await ws.send_json(
        {
            "id": 1,
            "type": "call_service",
            "domain": "test",
            "service": "echo",
            "service_data": {"value": 3},
        }
    )
    reply = await receive_json(ws)
    assert reply["success"] is True
    assert reply["result"]["response"] == {"value": 3, "user": "test-client"}
    await ws.send_json(
        {
            "id": 2,
            "type": "call_service",
            "domain": "test",
            "service": "echo",
            "service_data": {"value": 99},
        }
    )
    reply = await receive_json(ws)
    assert reply["error"]["code"] == "invalid_format"
    assert "value must be at most 10" in reply["error"]["message"]
    await ws.close()


async def test_bad_messages_get_errors_and_the_connection_stays(
    client: ClientSession, token: str
) -> None:
    ws = await connect(client, token)
    cases: list[tuple[str, Any, str]] = [
        ("{not json", None, "invalid_json"),
        ("[1, 2]", None, "invalid_format"),
        ('{"type": "get_states"}', None, "invalid_format"),
        ('{"id": "one", "type": "get_states"}', "one", "invalid_format"),
        ('{"id": 7, "type": "launch_rockets"}', 7, "unknown_command"),
        ('{"id": 8, "type": "subscribe_states", "entity_ids": "sensor.a"}', 8, "invalid_format"),
        ('{"id": 9, "type": "unsubscribe"}', 9, "invalid_format"),
    ]
    for text, msg_id, code in cases:
        await ws.send_str(text)
        reply = await receive_json(ws)
        assert reply["type"] == "result" and reply["success"] is False, text
        assert reply["id"] == msg_id, text
        assert reply["error"]["code"] == code, text
        assert reply["error"]["message"], text
    await ws.send_bytes(b"\x00")
    assert (await receive_json(ws))["error"]["code"] == "invalid_format"
    await ws.send_json({"id": 10, "type": "get_states"})
    assert (await receive_json(ws))["success"] is True
    await ws.close()


async def test_slow_client_is_dropped_without_stalling_others(
    hub: Any, client: ClientSession, token: str
) -> None:
    fast = await connect(client, token)
    await fast.send_json({"id": 1, "type": "subscribe_states"})
    assert (await receive_json(fast))["success"] is True

    hub.http.ws_max_pending = 5  # applies to connections opened from now on
    slow = await connect(client, token)
    await slow.send_json({"id": 1, "type": "subscribe_states"})
    assert (await receive_json(slow))["success"] is True

    # 50 changes in one go: the slow connection's writer gets no chance to run in between,
    # so its queue overflows deterministically.
    for value in range(50):
        hub.states.async_set("sensor.flood", value)

    msg = await asyncio.wait_for(slow.receive(), TIMEOUT)
    while msg.type is WSMsgType.TEXT:  # at most what fitted in the queue
        msg = await asyncio.wait_for(slow.receive(), TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == WSCloseCode.TRY_AGAIN_LATER  # the code the server sent
    assert "too slow" in msg.extra

    values = [int((await receive_json(fast))["event"]["new_state"]["state"]) for _ in range(50)]
    assert values == list(range(50))
    assert hub.bus.listener_errors == 0
    await fast.close()


async def test_hub_stop_closes_websockets(hub: Any, client: ClientSession, token: str) -> None:
    ws = await connect(client, token)
    await hub.http.async_stop()
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == WSCloseCode.GOING_AWAY
    assert not hub.http.websockets


async def test_websocket_token_revocation_blocks_new_connections(
    hub: Any, client: ClientSession
) -> None:
    token = await tokens.create_token(hub.storage, "soon-revoked")
    info = await tokens.verify_token(hub.storage, token)
    assert info is not None
    await tokens.revoke_token(hub.storage, info.id)
    async with client.ws_connect("/api/websocket") as ws:
        assert (await receive_json(ws))["type"] == "auth_required"
        await ws.send_json({"type": "auth", "access_token": token})
        assert (await receive_json(ws))["type"] == "auth_invalid"


async def test_silent_client_is_refused_after_the_auth_timeout(
    client: ClientSession, monkeypatch: Any
) -> None:
    from hub.http import websocket

    monkeypatch.setattr(websocket, "AUTH_TIMEOUT", 0.05)  # the client below never sends
    async with client.ws_connect("/api/websocket") as ws:
        assert (await receive_json(ws))["type"] == "auth_required"
        reply = await receive_json(ws)
        assert reply["type"] == "auth_invalid"
        assert "No auth message" in reply["message"]
