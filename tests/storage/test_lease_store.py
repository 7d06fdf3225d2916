"""Leases (migration 0009, hub/storage/lease_store.py): one owner per name, on both backends.

Expiry is the database's clock; the tests never wait for it: an already expired lease is
written with a negative time to live."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub.core.leases import WORKER_ID_FILE, LeaseManager, worker_id_for
from hub.storage.database import Database
from hub.storage.lease_store import SqlLeaseStore


async def test_one_owner_take_over_renew_and_release(database: Database) -> None:
    store = SqlLeaseStore(database)
    assert await store.claim("gsm.dtu.1", "worker-a", 30) == (True, None)
    assert await store.claim("gsm.dtu.1", "worker-b", 30) == (False, "worker-a")  # live: a's
    assert await store.claim("gsm.dtu.1", "worker-a", 30) == (True, "worker-a")  # a again
    live = await store.live("gsm.dtu.")
    assert live["gsm.dtu.1"]["owner"] == "worker-a" and 0 < live["gsm.dtu.1"]["expires_in"] <= 30

    # b holds the DTU's newer socket: it takes over; a finds out when it renews.
    owned, previous = await store.claim("gsm.dtu.1", "worker-b", 30, take_over=True,
                                        info={"peer": "10.0.0.12:40000"})
    assert (owned, previous) == (True, "worker-a")
    assert await store.renew(["gsm.dtu.1"], "worker-a", 30) == set()
    assert await store.renew(["gsm.dtu.1"], "worker-b", 30) == {"gsm.dtu.1"}
    assert (await store.live("gsm.dtu."))["gsm.dtu.1"]["info"] == {"peer": "10.0.0.12:40000"}

    assert await store.release(["gsm.dtu.1"], "worker-a") == 0  # not a's to give away
    assert await store.release(["gsm.dtu.1"], "worker-b") == 1
    assert await store.live("gsm.dtu.") == {}


async def test_an_expired_lease_is_nobody_s(database: Database) -> None:
    store = SqlLeaseStore(database)
    await store.claim("gsm.dtu.2", "worker-a", -1)  # as a killed worker leaves it
    assert await store.live("gsm.dtu.") == {}
    assert await store.claim("gsm.dtu.2", "worker-b", 30) == (True, None)
    assert await store.renew(["gsm.dtu.2"], "worker-a", 30) == set()


async def test_concurrent_claims_have_one_winner(database: Database) -> None:
    store = SqlLeaseStore(database)
    results = await asyncio.gather(*(store.claim("gsm.dtu.3", f"worker-{n}", 30)
                                     for n in range(6)))
    winners = [n for n, (owned, _) in enumerate(results) if owned]
    assert len(winners) == 1
    assert (await store.live("gsm.dtu."))["gsm.dtu.3"]["owner"] == f"worker-{winners[0]}"


async def test_single_hub_manager_owns_everything_and_writes_nothing(database: Database) -> None:
    manager = LeaseManager("local", SqlLeaseStore(database), shared=False)
    assert await manager.claim("gsm.dtu.4", 30) == (True, None)
    assert await manager.renew(["gsm.dtu.4"], 30) == {"gsm.dtu.4"}
    assert await manager.live("gsm.dtu.") == {}
    assert await SqlLeaseStore(database).live("gsm.dtu.") == {}


def test_worker_id_configured_or_generated_once(tmp_path: Path) -> None:
    assert worker_id_for(tmp_path, {"worker_id": "worker-a"}) == "worker-a"
    assert not (tmp_path / WORKER_ID_FILE).exists()
    made = worker_id_for(tmp_path, {"name": "张家口示范"})
    assert made.startswith("vw-") and worker_id_for(tmp_path, {}) == made


async def test_claim_many_in_one_transaction(database: Database) -> None:
    store = SqlLeaseStore(database)
    await store.claim("gsm.dtu.11", "worker-a", 30)
    await store.claim("gsm.dtu.12", "worker-a", -1)  # expired
    names = {f"gsm.dtu.1{n}": {"peer": f"p{n}"} for n in range(1, 5)}
    owned, previous = await store.claim_many(names, "worker-b", 30)
    assert owned == {"gsm.dtu.12", "gsm.dtu.13", "gsm.dtu.14"} and previous == {
        "gsm.dtu.11": "worker-a"}
    owned, previous = await store.claim_many(names, "worker-b", 30, take_over=True)
    assert owned == set(names) and previous == dict.fromkeys(names, "worker-b") | {
        "gsm.dtu.11": "worker-a"}
    live = await store.live("gsm.dtu.1")
    assert {name: lease["owner"] for name, lease in live.items()} == dict.fromkeys(
        names, "worker-b")
