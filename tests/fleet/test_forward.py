"""Control calls forwarded to the DTU's owning worker (issue 12): two real hubs on one
PostgreSQL and one real Mosquitto, one simulated DTU on real TCP connected to worker a. A duty
officer's trip sent to worker b's REST API (the load balancer's pick) runs on worker a, reaches
the detector behind the DTU, and b answers exactly what a answers for a local call, errors
included; the audit shows the call once, with its user and the worker that ran it. An owner
that does not answer gives a 504 naming it, and does not run the call when it comes back late.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import voltwatch_gsm
import voltwatch_mqtt
from aiohttp import ClientSession
from voltwatch_gsm.simulator import SimOptions, SimStats, SimulatedDtu
from voltwatch_mqtt.testing import MosquittoBroker

from hub.auth.audit import AuditQuery
from hub.http import tokens
from hub.hub import Hub
from hub.storage.alarm_store import AlarmQuery

from .fleetkit import WAIT, hang_up, start_hub, wait_until
from .test_dtu_owner import DEVICES, IMEI, UNITS, worker_config

pytestmark = pytest.mark.timeout(120)

RELAY = 34  # arcm-ref relay bits; b0 breaker tripped
OFFICER = "duty-officer"


class Fleet:
    def __init__(self) -> None:
        self.hubs: dict[str, Hub] = {}
        self.dtu: SimulatedDtu | None = None
        self.headers: dict[str, dict[str, str]] = {}


async def start_worker(tmp_path: Path, pg_url: str, broker: MosquittoBroker, name: str,
                       forward_timeout: float) -> Hub:
    config = worker_config(tmp_path, pg_url, name)
    config["hub"]["forward_timeout"] = forward_timeout
    config["http"] = {"port": 0}
    config["mqtt"] = {"host": broker.host, "port": broker.port, "reconnect_min": "50ms",
                      "client_id": f"worker-{name}"}
    hub = await start_hub(tmp_path / name, config, "gsm", "arcm", "mqtt")
    await voltwatch_mqtt.get_connection(hub).wait_ready()
    return hub


@pytest.fixture
def forward_timeout() -> float:
    return 10.0  # a failure bound for the owner's answer (a trip here takes ~0.1 s)


@pytest.fixture
async def fleet(tmp_path: Path, pg_url: str, broker: MosquittoBroker,
                forward_timeout: float) -> AsyncIterator[Fleet]:
    """Worker a owns the DTU; worker b joined later; a project_admin with a token on each."""
    found = Fleet()
    task: asyncio.Task[Any] | None = None
    try:
        found.hubs["a"] = await start_worker(tmp_path, pg_url, broker, "a", forward_timeout)
        server_a = voltwatch_gsm.get_server(found.hubs["a"])
        found.dtu = SimulatedDtu(IMEI, list(UNITS), SimOptions(
            host="127.0.0.1", port=server_a.port, heartbeat_interval=0.5,
            reconnect_delay=0.05), SimStats())
        task = asyncio.get_running_loop().create_task(found.dtu.run())
        await server_a.wait_until(lambda: IMEI in server_a.ownership.held, timeout=20)
        found.hubs["b"] = await start_worker(tmp_path, pg_url, broker, "b", forward_timeout)
        server_b = voltwatch_gsm.get_server(found.hubs["b"])
        await server_b.wait_until(
            lambda: server_b.ownership.owner_elsewhere(IMEI) == "worker-a", timeout=20)
        user = await found.hubs["a"].auth.users.create(OFFICER, "project_admin", None,
                                                       projects=["fleet"])
        for name, hub in found.hubs.items():  # one database: the user is every worker's
            token = await tokens.create_token(hub.storage, f"{OFFICER}-{name}", user_id=user.id)
            found.headers[name] = {"Authorization": f"Bearer {token}"}
        yield found
    finally:
        await hang_up(found.dtu, task)
        for hub in found.hubs.values():
            await hub.async_stop()


async def post(fleet: Fleet, worker: str, service: str, data: dict[str, Any]) -> tuple[
        int, dict[str, Any]]:
    hub = fleet.hubs[worker]
    async with ClientSession(base_url=hub.http.url, headers=fleet.headers[worker]) as http, \
            http.post(f"/api/services/arcm/{service}", json=data) as response:
        return response.status, await response.json()


def relay(fleet: Fleet, unit: int) -> int:
    assert fleet.dtu is not None
    return fleet.dtu.units[unit].regs[RELAY]


async def trip_audit(hub: Hub) -> list[dict[str, Any]]:
    return await hub.auth.audit.query(AuditQuery(action_prefixes=["service.arcm.trip"]))


async def test_a_trip_sent_to_the_other_worker_runs_on_the_owner(fleet: Fleet) -> None:
    hub_a, hub_b = fleet.hubs["a"], fleet.hubs["b"]
    assert relay(fleet, 1) & 1 == 0

    status, body = await post(fleet, "b", "trip", {"device_id": DEVICES[0]})

    assert status == 200, body
    assert relay(fleet, 1) & 1 == 1  # the detector behind worker a's DTU tripped
    response = body["response"]
    assert (response["device_id"], response["confirmed"], response["breaker"]) == (
        DEVICES[0], True, "tripped")
    assert body["context"]["user_id"] == OFFICER
    peers_a, peers_b = hub_a.peers.stats(), hub_b.peers.stats()
    assert peers_b["peers_forwarded_total"] == 1 and peers_a["peers_served_total"] == 1
    assert peers_a["peers_forwarded_total"] == 0  # a ran it; nothing went back and forth

    # The same call made on the owner itself answers the same JSON (the relay is tripped
    # already, so the device's state is the same both times).
    status_a, body_a = await post(fleet, "a", "trip", {"device_id": DEVICES[0]})
    assert status_a == 200
    assert body_a["response"] == response

    # Audited once per call, by the worker that took it, naming the user and the worker
    # that ran it; the `tripped` event on the owner chains to the forwarded call's context.
    rows = await trip_audit(hub_b)
    by_context = {row["context_id"]: row for row in rows}
    assert len(rows) == 2 and set(by_context) == {body["context"]["id"],
                                                  body_a["context"]["id"]}
    forwarded = by_context[body["context"]["id"]]
    assert (forwarded["actor"], forwarded["result"], forwarded["target"]) == (
        OFFICER, "ok", DEVICES[0])
    assert forwarded["detail"]["worker"] == "worker-a"
    assert by_context[body_a["context"]["id"]]["detail"]["worker"] == "worker-a"
    await hub_a.alarms.async_flush()
    events = await hub_a.alarms.store.query(AlarmQuery(devices=[DEVICES[0]]))
    tripped = [row for row in events if row["type"] == "tripped"]
    assert body["context"]["id"] in {row["context_id"] for row in tripped}


async def ws_call(fleet: Fleet, worker: str, service: str,
                  data: dict[str, Any]) -> dict[str, Any]:
    """One `call_service` on the worker's websocket (bearer header on the upgrade)."""
    hub = fleet.hubs[worker]
    async with ClientSession(base_url=hub.http.url, headers=fleet.headers[worker]) as http, \
            http.ws_connect("/api/websocket") as ws:
        assert (await ws.receive_json(timeout=WAIT))["type"] == "auth_ok"
        await ws.send_json({"id": 1, "type": "call_service", "domain": "arcm",
                            "service": service, "service_data": data})
        answer: dict[str, Any] = await ws.receive_json(timeout=WAIT)
        return answer


async def test_a_mute_sent_on_the_other_worker_s_websocket_runs_on_the_owner(
        fleet: Fleet) -> None:
    assert relay(fleet, 1) & 0b100 == 0

    answer_b = await ws_call(fleet, "b", "mute", {"device_id": DEVICES[0]})

    assert answer_b["success"] is True, answer_b
    assert relay(fleet, 1) & 0b100 == 0b100  # muted, on the detector behind worker a's DTU
    assert fleet.hubs["b"].peers.forwarded == 1
    answer_a = await ws_call(fleet, "a", "mute", {"device_id": DEVICES[0]})
    assert answer_a["success"] is True
    assert answer_b["result"]["response"] == answer_a["result"]["response"]


async def test_the_owner_s_error_comes_back_as_a_local_call_s(fleet: Fleet) -> None:
    """Unit 2 falls silent on the RS485 bus: the trip fails on the owner with 504 (no answer
    from the device), and worker b answers exactly that, not a 409 or its own 504."""
    assert fleet.dtu is not None
    silent = fleet.dtu.units.pop(2)
    try:
        status_b, body_b = await post(fleet, "b", "trip", {"device_id": DEVICES[1]})
        status_a, body_a = await post(fleet, "a", "trip", {"device_id": DEVICES[1]})
    finally:
        fleet.dtu.units[2] = silent
    assert status_a == 504 and "dtu-arcm-2: no answer to trip" in str(body_a), body_a
    assert (status_b, body_b) == (status_a, body_a)
    assert silent.regs[RELAY] & 1 == 0
    rows = await trip_audit(fleet.hubs["b"])
    assert sorted((row["result"], row["detail"]["worker"]) for row in rows) == [
        ("failed", "worker-a"), ("failed", "worker-a")]


@pytest.mark.parametrize("forward_timeout", [1.0])
async def test_an_owner_that_does_not_answer_gives_a_504_naming_it(fleet: Fleet) -> None:
    """Worker a still holds the DTU (its lease) but has lost the broker: b's forwarded trip
    gets no answer within `hub.forward_timeout`; the caller gets a 504 naming worker a. When a
    is back, the broker hands it the queued request (QoS 1, persistent session): a does not
    run it, since its caller gave up long ago."""
    hub_a, hub_b = fleet.hubs["a"], fleet.hubs["b"]
    connection_a = voltwatch_mqtt.get_connection(hub_a)
    await connection_a.stop()

    status, body = await post(fleet, "b", "trip", {"device_id": DEVICES[0]})

    assert status == 504, body
    assert "worker-a" in body["error"] and "did not answer within 1s" in body["error"]
    assert hub_b.peers.stats()["peers_forward_timeouts_total"] == 1
    [row] = await trip_audit(hub_b)
    assert (row["actor"], row["result"], row["detail"]["worker"]) == (OFFICER, "failed",
                                                                      "worker-a")
    assert "PeerTimeout" in row["detail"]["error"]

    connection_a.start()  # back on the broker: the queued request arrives, after its deadline
    await connection_a.wait_ready()
    await wait_until(lambda: hub_a.peers.served_late == 1)
    assert hub_a.peers.served == 0
    assert relay(fleet, 1) & 1 == 0  # never tripped
