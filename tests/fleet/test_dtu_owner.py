"""One owning worker per DTU (issue 12): two real hubs on one PostgreSQL, one simulated DTU on
real TCP. The worker holding the DTU's socket owns it through a lease in the database; the other
worker does not poll its detectors, raises no `communication_lost` for them, shows them as
connected to the owner and refuses control calls naming it. The DTU dialling in to the other
worker moves the ownership and the polls; a DTU nobody owns raises one fault per device, only
once the dead owner's lease ran out.

Short lease and timeouts in the configuration (1 s lease, 2 s heartbeat timeout) keep it fast.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import voltwatch_arcm
import voltwatch_gsm
import yaml
from voltwatch_gsm.simulator import SimOptions, SimStats, SimulatedDtu
from voltwatch_mqtt.testing import free_port

from hub.core.conditions import EVENT_DEVICE_CONDITION
from hub.core.events import Event, callback
from hub.core.services import ServiceError
from hub.hub import Hub
from hub.storage.alarm_store import AlarmQuery
from hub.storage.database import Database
from hub.storage.lease_store import SqlLeaseStore

from .fleetkit import (
    WAIT,
    DeviceSeen,
    EventLog,
    FlappingDtu,
    Raised,
    RoundRobinBalancer,
    hang_up,
    hub_config,
    start_hub,
    wait_until,
)

IMEI = "860000000000077"
UNITS = (1, 2)
DEVICES = [f"dtu-arcm-{unit}" for unit in UNITS]
DTU_DEVICE = voltwatch_gsm.dtu_device_id(IMEI)
LEASE = 1.0
HEARTBEAT_TIMEOUT = 2.0

pytestmark = pytest.mark.timeout(120)


def worker_config(tmp_path: Path, pg_url: str, name: str) -> dict[str, Any]:
    devices = [{"id": f"dtu-arcm-{unit}", "platform": "arcm", "profile": "arcm-ref",
                "project": "fleet", "status_interval": 0.2, "measure_interval": 1.0,
                "link": {"transport": "gsm", "imei": IMEI, "unit": unit}} for unit in UNITS]
    return hub_config(
        tmp_path, pg_url, devices,
        hub={"name": f"worker {name}", "language": "en", "worker_id": f"worker-{name}"},
        gsm={"port": 0, "heartbeat_timeout": HEARTBEAT_TIMEOUT, "owner_lease": LEASE,
             "request_timeout": 0.5, "budget": "10GB"})


class Workers:
    def __init__(self) -> None:
        self.hubs: dict[str, Hub] = {}
        self.dtu: SimulatedDtu | None = None

    def server(self, name: str) -> Any:
        return voltwatch_gsm.get_server(self.hubs[name])

    async def stop(self, name: str) -> None:
        await self.hubs.pop(name).async_stop()


@pytest.fixture
async def workers(tmp_path: Path, pg_url: str) -> AsyncIterator[Workers]:
    """Worker a, the DTU dialling it (the balancer's pick; a test may point it elsewhere),
    then worker b: b starts while a already owns the DTU, as a worker joining a fleet does."""
    found = Workers()
    task: asyncio.Task[Any] | None = None
    try:
        found.hubs["a"] = await start_hub(tmp_path / "a", worker_config(tmp_path, pg_url, "a"),
                                          "gsm", "arcm")
        options = SimOptions(host="127.0.0.1", port=found.server("a").port,
                             heartbeat_interval=0.5, reconnect_delay=0.05)
        found.dtu = SimulatedDtu(IMEI, list(UNITS), options, SimStats())
        task = asyncio.get_running_loop().create_task(found.dtu.run())
        server_a = found.server("a")
        await server_a.wait_until(lambda: IMEI in server_a.ownership.held, timeout=20)
        found.hubs["b"] = await start_hub(tmp_path / "b", worker_config(tmp_path, pg_url, "b"),
                                          "gsm", "arcm")
        yield found
    finally:
        await hang_up(found.dtu, task)
        for name in list(found.hubs):
            await found.stop(name)


def sensors() -> set[str]:
    return {f"sensor.dtu_arcm_{unit}_residual_current" for unit in UNITS}


async def comm_lost_rows(hub: Hub) -> list[dict[str, Any]]:
    await hub.alarms.async_flush()
    rows = await hub.alarms.store.query(AlarmQuery(devices=[*DEVICES, DTU_DEVICE]))
    return [row for row in rows if row["type"] == "communication_lost"]


async def owned_by_a(workers: Workers) -> None:
    server_a, server_b = workers.server("a"), workers.server("b")
    await server_a.wait_until(lambda: IMEI in server_a.ownership.held, timeout=20)
    await server_b.wait_until(
        lambda: server_b.ownership.owner_elsewhere(IMEI) == "worker-a", timeout=20)


async def test_the_other_worker_defers_to_the_owner_and_ownership_moves(
        workers: Workers) -> None:
    dtu = workers.dtu
    assert dtu is not None
    hub_a, hub_b = workers.hubs["a"], workers.hubs["b"]
    server_a, server_b = workers.server("a"), workers.server("b")
    seen_a = DeviceSeen([hub_a], sensors())
    log = EventLog([hub_a, hub_b], "alarm_raised", EVENT_DEVICE_CONDITION)
    await seen_a.wait()  # worker a polls the units behind the DTU
    await owned_by_a(workers)

    # Worker b lets more than its heartbeat_timeout and its failed-poll limit pass (counted in
    # ownership refreshes, one every third of the lease): nothing is raised there.
    syncs = server_b.ownership.syncs
    beats = int(HEARTBEAT_TIMEOUT / (LEASE / 3)) + 3
    await server_b.wait_until(lambda: server_b.ownership.syncs >= syncs + beats, timeout=20)
    runtime_b = voltwatch_arcm.runtime_for(hub_b)
    assert runtime_b is not None
    for device_id in DEVICES:
        device = runtime_b.devices[device_id]
        assert device.polls > device.comm_loss_after and device.failures == 0
        online = hub_b.states.get(device.online_entity)
        assert online is not None and online.state == "on"
        assert online.attributes["worker"] == "worker-a"
        assert all(getattr(hub_b.states.get(entity), "state", None) in (None, "unknown")
                   for entity in sensors())  # never polled here
    [listed] = server_b.listing([IMEI])
    assert (listed["owner"], listed["owned_here"], listed["connected"]) == ("worker-a", False,
                                                                            False)
    assert listed["communication_lost"] is False and listed["counters"]["requests"] == 0
    dtu_state = hub_b.states.get(listed["entity_id"])
    assert dtu_state is not None and dtu_state.state == "on"
    assert dtu_state.attributes["worker"] == "worker-a"
    assert server_a.listing([IMEI])[0]["owner"] == "worker-a"
    assert not [d for _, kind, d in log.seen if kind == EVENT_DEVICE_CONDITION
                and d.get("type") == "communication_lost" and d.get("active")]
    assert await comm_lost_rows(hub_b) == []

    # A control call on the worker without the socket and without a transport between workers
    # (no mqtt plugin here; tests/fleet/test_forward.py has one) fails at once, naming the owner.
    with pytest.raises(ServiceError, match="worker-a") as refused:
        await hub_b.services.async_call("arcm", "trip", {"device_id": DEVICES[0]},
                                        return_response=True)
    assert getattr(refused.value, "status", None) == 409
    assert "no transport" in str(refused.value)  # no mqtt plugin here to forward it
    with pytest.raises(ServiceError, match="worker-a"):
        await hub_b.services.async_call(
            "arcm", "set_parameter",
            {"device_id": DEVICES[0], "name": "residual_current_alarm", "value": 500},
            return_response=True)

    # Worker a stops; the balancer sends the DTU's next connection to worker b.
    dtu.options.port = server_b.port
    seen_b = DeviceSeen([hub_b], sensors())
    await workers.stop("a")
    await server_b.wait_until(lambda: IMEI in server_b.ownership.held, timeout=20)
    await seen_b.wait()  # polls resume on b
    live = await hub_b.leases.live("gsm.dtu.")
    assert live[f"gsm.dtu.{IMEI}"]["owner"] == "worker-b"
    [listed] = server_b.listing([IMEI])
    assert (listed["owner"], listed["owned_here"]) == ("worker-b", True)
    for device_id in DEVICES:
        online = hub_b.states.get(runtime_b.devices[device_id].online_entity)
        assert online is not None and "worker" not in online.attributes
    result = await hub_b.services.async_call("arcm", "trip", {"device_id": DEVICES[0]},
                                             return_response=True)
    assert result["confirmed"] is True
    assert await comm_lost_rows(hub_b) == []
    assert not [d for _, kind, d in log.seen
                if kind == "alarm_raised" and d["type"] == "communication_lost"]


async def test_a_dead_owner_s_dtu_raises_one_fault_once_its_lease_ran_out(
        workers: Workers) -> None:
    dtu = workers.dtu
    assert dtu is not None
    hub_b = workers.hubs["b"]
    server_b = workers.server("b")
    await owned_by_a(workers)
    raised = Raised([hub_b])
    owner_at_raise: list[str | None] = []

    @callback
    def condition(event: Event) -> None:
        if event.data.get("type") == "communication_lost" and event.data.get("active"):
            owner_at_raise.append(server_b.ownership.owner_elsewhere(IMEI))

    hub_b.bus.listen(EVENT_DEVICE_CONDITION, condition)

    # Worker a dies as SIGKILL would leave it: its lease stays in the database (it cannot
    # release it), and the DTU is gone too (it dials no other worker).
    workers.server("a").ownership.held.clear()
    dtu.close()
    await workers.stop("a")

    for device_id in [*DEVICES, DTU_DEVICE]:
        await raised.wait(lambda r, d=device_id: r["device_id"] == d
                          and r["type"] == "communication_lost")
    assert owner_at_raise and set(owner_at_raise) == {None}  # never while a's lease was live
    rows = await comm_lost_rows(hub_b)
    assert sorted(r["device_id"] for r in rows) == sorted([*DEVICES, DTU_DEVICE])  # one each
    assert all(r["status"] == "active" for r in rows)
    announced = [r for _, r in raised.seen if r["type"] == "communication_lost"]
    assert len(announced) == len(rows)


def start_worker_process(config_dir: Path) -> subprocess.Popen[bytes]:
    """`voltwatch run` in its own process, so it can die like a real crash (SIGKILL)."""
    with (config_dir / "worker.log").open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "--config", str(config_dir)],
            env={**os.environ, "VOLTWATCH_PLUGINS": "gsm,arcm"},
            stdout=subprocess.DEVNULL, stderr=log_file)


async def test_a_sigkilled_owner_s_dtu_moves_to_the_other_worker_without_a_fault(
        tmp_path: Path, pg_url: str) -> None:
    """Worker a is a real `voltwatch run` process, killed with SIGKILL while it owns the DTU:
    its lease stays behind, the DTU redials worker b, which takes it over and polls."""
    config_dir = tmp_path / "a"
    config_dir.mkdir()
    port = free_port()
    config = worker_config(tmp_path, pg_url, "a")
    config["gsm"]["port"] = port
    (config_dir / "configuration.yaml").write_text(
        yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    proc = start_worker_process(config_dir)
    sim = SimulatedDtu(IMEI, list(UNITS), SimOptions(
        host="127.0.0.1", port=port, heartbeat_interval=0.5, reconnect_delay=0.05), SimStats())
    task = asyncio.get_running_loop().create_task(sim.run())  # dials until a listens
    database = Database(pg_url, tmp_path)
    hub_b: Hub | None = None
    try:
        await database.open()
        leases = SqlLeaseStore(database)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # a process start on a loaded machine; a failure bound
        while (await leases.live("gsm.dtu.")).get(f"gsm.dtu.{IMEI}", {}).get("owner") != \
                "worker-a":
            assert proc.poll() is None, (config_dir / "worker.log").read_text()[-3000:]
            assert loop.time() < deadline, "worker a never owned the DTU"
            await asyncio.sleep(0.05)
        hub_b = await start_hub(tmp_path / "b", worker_config(tmp_path, pg_url, "b"),
                                "gsm", "arcm")
        server_b = voltwatch_gsm.get_server(hub_b)
        await server_b.wait_until(
            lambda: server_b.ownership.owner_elsewhere(IMEI) == "worker-a", timeout=WAIT)
        seen_b = DeviceSeen([hub_b], sensors())
        log = EventLog([hub_b], "alarm_raised")

        sim.options.port = server_b.port  # the balancer's next pick
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await server_b.wait_until(lambda: IMEI in server_b.ownership.held, timeout=WAIT)
        await seen_b.wait()  # polls resume on b
        assert (await leases.live("gsm.dtu."))[f"gsm.dtu.{IMEI}"]["owner"] == "worker-b"
        assert await comm_lost_rows(hub_b) == []
        assert not [d for d in log.of("alarm_raised") if d["type"] == "communication_lost"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sim.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if hub_b is not None:
            await hub_b.async_stop()
        await database.close()


async def test_a_dtu_flapping_across_the_balancer_moves_between_workers_without_a_fault(
        tmp_path: Path, pg_url: str) -> None:
    """Drill (issue 12): a DTU behind a round-robin TCP balancer drops its connection after
    every 8 answers and redials, landing on the other worker each time. Ownership follows it
    (one live lease, the holder's), both workers poll it in turn, nobody holds two sockets for
    it, and no `communication_lost` is raised by either worker."""
    hubs: dict[str, Hub] = {}
    balancer: RoundRobinBalancer | None = None
    dtu: FlappingDtu | None = None
    task: asyncio.Task[Any] | None = None
    try:
        for name in ("a", "b"):
            config = worker_config(tmp_path, pg_url, name)
            for device in config["devices"]:
                # Debounce (5 x 0.2 s) three times the ownership refresh (1 s lease / 3), the
                # ratio of the defaults (3 x 10 s status against 30 s / 3): a worker the DTU
                # left learns the new owner before it would call the line lost.
                device["failed_polls_for_comm_loss"] = 5
            hubs[name] = await start_hub(tmp_path / name, config, "gsm", "arcm")
        servers = {name: voltwatch_gsm.get_server(hub) for name, hub in hubs.items()}
        by_port = {server.port: name for name, server in servers.items()}
        balancer = RoundRobinBalancer([servers["a"].port, servers["b"].port])
        await balancer.start()
        log = EventLog(list(hubs.values()), "alarm_raised", EVENT_DEVICE_CONDITION)
        most_open = 0

        def sample() -> None:  # every connection change on either worker
            nonlocal most_open
            most_open = max(most_open, sum(
                1 for server in servers.values() for c in server.connections
                if c.dtu_id == IMEI and not c.closed))

        for server in servers.values():
            announce = server.notify

            def notify(announce: Any = announce) -> None:
                sample()
                announce()

            server.notify = notify  # type: ignore[method-assign]
        dtu = FlappingDtu(IMEI, UNITS, balancer.port, answers=8)
        task = asyncio.get_running_loop().create_task(dtu.sim.run())
        await wait_until(lambda: dtu is not None and dtu.flaps >= 6, timeout=60)
        dtu.answers = 10**9  # the line settles on whichever worker it dials next
        await wait_until(lambda: dtu is not None and len(dtu.periods) == dtu.flaps + 1
                         and dtu.periods[-1][1] == 0.0, timeout=WAIT)
        holder = by_port[balancer.picks[len(dtu.periods) - 1]]
        other = "b" if holder == "a" else "a"
        await servers[holder].wait_until(lambda: IMEI in servers[holder].ownership.held,
                                         timeout=WAIT)
        await servers[other].wait_until(
            lambda: servers[other].ownership.owner_elsewhere(IMEI) == f"worker-{holder}",
            timeout=WAIT)

        # It really moved: both workers had it, alternately, and both polled its detectors.
        assert {by_port[port] for port in balancer.picks[:dtu.flaps]} == {"a", "b"}
        for name, hub in hubs.items():
            runtime = voltwatch_arcm.runtime_for(hub)
            assert runtime is not None
            assert all(runtime.devices[d].good_polls > 0 for d in DEVICES), name
        live = await hubs[holder].leases.live("gsm.dtu.")
        assert live[f"gsm.dtu.{IMEI}"]["owner"] == f"worker-{holder}"
        assert most_open <= 2  # the old socket closes as the new one registers, never more
        assert [c for c in servers[other].connections if c.dtu_id == IMEI and not c.closed] == []

        # No fault from the flapping on either worker, in events or in the shared table.
        for hub in hubs.values():
            await hub.alarms.async_flush()
        assert await comm_lost_rows(hubs[holder]) == []
        assert not [d for d in log.of(EVENT_DEVICE_CONDITION)
                    if d.get("type") == "communication_lost" and d.get("active")]
    finally:
        if dtu is not None:
            dtu.sim.close()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if balancer is not None:
            await balancer.close()
        for hub in hubs.values():
            await hub.async_stop()


async def test_two_workers_account_one_dtu_s_traffic_without_colliding(
        tmp_path: Path, pg_url: str) -> None:
    """Both workers carried the DTU this month (it moved): each writes its own kv row (an
    upsert, no `pk_kv` violation, nobody overwrites the other) and each budgets on the sum."""
    from voltwatch_gsm.traffic import Usage

    hubs: dict[str, Hub] = {}
    try:
        for name in ("a", "b"):
            hubs[name] = await start_hub(tmp_path / name, worker_config(tmp_path, pg_url, name),
                                         "gsm", "arcm")
        servers = {name: voltwatch_gsm.get_server(hub) for name, hub in hubs.items()}
        day = {}
        for name, up in (("a", 1000.0), ("b", 300.0)):
            traffic = servers[name].traffic
            entry = traffic.entry(IMEI)
            day[name] = traffic.day_of(traffic.clock())
            entry.days.setdefault(day[name], Usage()).add(Usage(up=up, down=up / 10))
            entry.dirty = True
        # Both insert their first row, then both update it: a second round must not collide.
        for _round in range(2):
            for name in ("a", "b"):
                servers[name].traffic.entry(IMEI).dirty = True
                assert await servers[name].traffic.flush() == 1
        for name in ("a", "b"):
            await servers[name].traffic.flush()  # a saw b's first row only; now b's is there
            servers[name].traffic.entry(IMEI).dirty = True
            await servers[name].traffic.flush()
        for name in ("a", "b"):
            month = servers[name].traffic.entry(IMEI).month_usage()
            assert (month.up, month.down) == (1300.0, 130.0), name
        async with hubs["a"].storage.engine.connect() as conn:
            from sqlalchemy import select

            from hub.storage.schema import kv
            keys = sorted(row[0] for row in (await conn.execute(
                select(kv.c.key).where(kv.c.key.like(f"gsm.traffic.{IMEI}.%")))).all())
        month_key = f"gsm.traffic.{IMEI}.{servers['a'].traffic.month_of(time.time())}"
        assert keys == [f"{month_key}@worker-a", f"{month_key}@worker-b"]

        # A restarted worker reads its own row back as its own and the other's as the other's.
        await hubs.pop("b").async_stop()
        hubs["b"] = await start_hub(tmp_path / "b", worker_config(tmp_path, pg_url, "b"),
                                    "gsm", "arcm")
        entry = voltwatch_gsm.get_server(hubs["b"]).traffic.entry(IMEI)
        assert sum(u.up for u in entry.days.values()) == 300.0
        assert entry.others.up == 1000.0
    finally:
        for hub in hubs.values():
            await hub.async_stop()
