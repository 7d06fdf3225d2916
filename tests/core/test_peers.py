"""hub.peers: the rules of forwarding a call to the owning worker, on two real Hub objects
joined by an in-process transport (the wire itself is tested with a real broker in
tests/fleet/test_forward.py): a forwarded call is never forwarded again, a call already sent
is not repeated elsewhere, the owner's errors keep their kind, a late request is not run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol

from hub.core.context import Context
from hub.core.peers import Peers, PeerTimeout
from hub.core.services import CallElsewhere, ServiceCall, ServiceValidationError
from hub.hub import Hub


class Wire:
    """Delivers a request to the named worker's `Peers.serve`, as a transport would."""

    def __init__(self) -> None:
        self.peers: dict[str, Peers] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.deaf: set[str] = set()

    async def request(self, worker: str, message: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        self.sent.append((worker, message))
        if worker in self.deaf:
            raise TimeoutError
        return await self.peers[worker].serve(message)


def worker(tmp_path: Path, name: str, wire: Wire) -> Hub:
    hub = Hub(tmp_path / name)
    hub.leases.worker_id = name
    hub.peers.transport = wire
    wire.peers[name] = hub.peers
    return hub


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Hub, Hub, Wire]:
    wire = Wire()
    return worker(tmp_path, "a", wire), worker(tmp_path, "b", wire), wire


def owned_by(owner: str, ran: list[tuple[str, ServiceCall]], here: str,
             result: Any = None, forwardable: bool = True) -> Any:
    async def handler(call: ServiceCall) -> Any:
        ran.append((here, call))
        if owner != here:
            raise CallElsewhere(f"held by worker {owner}", owner, forwardable=forwardable)
        return result

    return handler


async def test_the_call_runs_once_on_the_owner_as_the_same_user(
        fleet: tuple[Hub, Hub, Wire]) -> None:
    hub_a, hub_b, _wire = fleet
    ran: list[tuple[str, ServiceCall]] = []
    for hub, name in ((hub_a, "a"), (hub_b, "b")):
        hub.services.register("arcm", "trip", owned_by("a", ran, name, {"breaker": "tripped"}),
                              schema=vol.Schema({"device_id": str}), supports_response=True)
    context = Context(user_id="officer", parent_id="P")
    result = await hub_b.services.async_call("arcm", "trip", {"device_id": "x"}, context)
    assert result == {"breaker": "tripped"}
    assert [(name, call.forwarded) for name, call in ran] == [("b", False), ("a", True)]
    owner_call = ran[1][1]
    assert owner_call.context.as_dict() == {"id": context.id, "user_id": "officer",
                                            "parent_id": "P"}
    assert (hub_b.peers.forwarded, hub_a.peers.served, hub_a.peers.forwarded) == (1, 1, 0)


async def test_a_forwarded_call_is_never_forwarded_again(
        fleet: tuple[Hub, Hub, Wire]) -> None:
    """Ownership moved meanwhile (a says b owns it, b says a): one hop, then a's 409."""
    hub_a, hub_b, wire = fleet
    ran: list[tuple[str, ServiceCall]] = []
    hub_a.services.register("arcm", "trip", owned_by("b", ran, "a"))
    hub_b.services.register("arcm", "trip", owned_by("a", ran, "b"))
    with pytest.raises(Exception, match="held by worker b") as refused:
        await hub_b.services.async_call("arcm", "trip", {})
    assert getattr(refused.value, "status", None) == 409
    assert [worker for worker, _ in wire.sent] == ["a"]
    assert [name for name, _ in ran] == ["b", "a"]


async def test_a_call_already_sent_is_not_repeated_on_the_new_owner(
        fleet: tuple[Hub, Hub, Wire]) -> None:
    _hub_a, hub_b, wire = fleet
    ran: list[tuple[str, ServiceCall]] = []
    hub_b.services.register("arcm", "trip", owned_by("a", ran, "b", forwardable=False))
    with pytest.raises(CallElsewhere):
        await hub_b.services.async_call("arcm", "trip", {})
    assert wire.sent == []


async def test_the_owner_s_errors_keep_their_kind_status_and_message(
        fleet: tuple[Hub, Hub, Wire]) -> None:
    hub_a, hub_b, _wire = fleet
    ran: list[tuple[str, ServiceCall]] = []

    async def refuses(call: ServiceCall) -> Any:
        raise ServiceValidationError("residual_current_alarm must be 20–1000mA")

    hub_a.services.register("arcm", "set_parameter", refuses)
    hub_b.services.register("arcm", "set_parameter", owned_by("a", ran, "b"))
    with pytest.raises(ServiceValidationError, match="must be 20–1000mA") as refused:
        await hub_b.services.async_call("arcm", "set_parameter", {})
    assert refused.value.status == 400


async def test_no_answer_is_a_504_naming_the_owner_and_a_late_request_is_not_run(
        fleet: tuple[Hub, Hub, Wire]) -> None:
    hub_a, hub_b, wire = fleet
    ran: list[tuple[str, ServiceCall]] = []
    hub_a.services.register("arcm", "trip", owned_by("a", ran, "a"))
    hub_b.services.register("arcm", "trip", owned_by("a", ran, "b"))
    wire.deaf.add("a")
    with pytest.raises(PeerTimeout, match="worker a") as lost:
        await hub_b.services.async_call("arcm", "trip", {})
    assert lost.value.status == 504
    [(_, message)] = wire.sent
    message["deadline"] = time.time() - 1  # the broker hands it over after the caller gave up
    reply = await hub_a.peers.serve(message)
    assert (reply["ok"], reply["status"]) == (False, 504)
    assert [name for name, _ in ran] == ["b"] and hub_a.peers.served_late == 1


async def test_without_a_transport_the_409_names_the_owner(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    ran: list[tuple[str, ServiceCall]] = []
    hub.services.register("arcm", "trip", owned_by("worker-a", ran, "b"))
    with pytest.raises(CallElsewhere, match="worker worker-a") as refused:
        await hub.services.async_call("arcm", "trip", {})
    assert refused.value.owner == "worker-a" and refused.value.status == 409
