"""The arc_fault plugin over Modbus RTU on a real pty pair and behind a GSM DTU socket."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import voltwatch_gsm
from voltwatch_arc_fault.simulator import ArcFaultSimulator, open_pty

from hub.core.events import Event, callback
from hub.core.plugins import PluginManager
from hub.hub import Hub

WAIT = 10.0  # failure bound, never a synchronisation delay
IMEI = "860000000000021"


def _hub(tmp_path: Path, plugins: list[str], devices: list[dict[str, Any]],
         **sections: Any) -> Hub:
    manager = PluginManager()
    manager.load_entrypoints(only=plugins)
    return Hub(tmp_path, config={
        "hub": {"name": "afd links"},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        "http": {"enabled": False},
        "devices": devices, **sections,
    }, plugin_manager=manager)


async def _raised(hub: Hub, predicate: Any) -> dict[str, Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @callback
    def on(event: Event) -> None:
        if predicate(event.data) and not future.done():
            future.set_result(event.data)

    unsub = hub.bus.listen("alarm_raised", on)
    try:
        return await asyncio.wait_for(future, WAIT)
    finally:
        unsub()


async def test_arc_alarm_over_rtu_on_a_pty(tmp_path: Path) -> None:
    master, slave, name = open_pty()
    sim = ArcFaultSimulator([1, 2], wander=False)
    serve = asyncio.get_running_loop().create_task(sim.serve_fd(master))
    link = {"transport": "modbus_rtu", "port": name, "baudrate": 9600, "timeout": 0.3}
    hub = _hub(tmp_path, ["modbus", "arc_fault"], [
        {"id": "rtu-afd-1", "platform": "arc_fault", "poll_interval": 0.05,
         "link": {**link, "unit": 1}},
        {"id": "rtu-afd-2", "platform": "arc_fault", "poll_interval": 0.05,
         "link": {**link, "unit": 2}},
    ])
    await hub.async_start()
    try:
        assert hub.plugins.failures == []
        alarm = asyncio.ensure_future(_raised(hub, lambda r: r["type"] == "arc_fault"))
        sim.units[2].set_arc_count(14)
        raised = await alarm
        assert raised["device_id"] == "rtu-afd-2" and raised["message"].startswith("故障电弧")
        result = await hub.services.async_call("arc_fault", "trip", {"device_id": "rtu-afd-1"},
                                               return_response=True)
        assert result["breaker"] == "tripped" and sim.units[1].regs[16] & 4
        result = await hub.services.async_call(
            "arc_fault", "set_parameter",
            {"device_id": "rtu-afd-2", "name": "arc_alarm_threshold", "value": 12},
            return_response=True)
        assert result["value"] == 12 and sim.units[2].regs[32] == 12
    finally:
        await hub.async_stop()
        serve.cancel()
        await asyncio.gather(serve, return_exceptions=True)
        os.close(master)
        os.close(slave)


async def test_arc_alarm_behind_a_gsm_dtu(tmp_path: Path) -> None:
    """A DTU: registers with its IMEI, then carries RTU frames to the detector behind it."""
    sim = ArcFaultSimulator([3], wander=False)
    responder = sim.responder()
    hub = _hub(tmp_path, ["gsm", "arc_fault"], [
        {"id": "dtu-afd-3", "platform": "arc_fault", "poll_interval": 0.1,
         "link": {"transport": "gsm", "imei": IMEI, "unit": 3}},
    ], gsm={"port": 0, "request_timeout": 0.5})
    await hub.async_start()
    writer = None
    carry = None
    try:
        assert hub.plugins.failures == []
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       voltwatch_gsm.get_server(hub).port)
        writer.write(IMEI.encode())
        await writer.drain()

        async def dtu() -> None:
            while data := await reader.read(4096):
                for frame in responder.feed(data):
                    writer.write(frame)
                await writer.drain()

        carry = asyncio.get_running_loop().create_task(dtu())
        alarm = asyncio.ensure_future(_raised(hub, lambda r: r["type"] == "arc_fault"))
        sim.units[3].set_arc_count(15)
        raised = await alarm
        assert raised["device_id"] == "dtu-afd-3" and raised["address"] == f"gsm {IMEI}"
        result = await hub.services.async_call("arc_fault", "reset", {"device_id": "dtu-afd-3"},
                                               return_response=True)
        assert result["confirmed"] is True and not sim.units[3].regs[16] & 1
    finally:
        if carry is not None:
            carry.cancel()
            await asyncio.gather(carry, return_exceptions=True)
        if writer is not None:
            writer.close()
        await hub.async_stop()


async def test_a_dtu_another_worker_owns_is_not_polled_here(tmp_path: Path) -> None:
    """What `tests/fleet/test_dtu_owner.py` shows for arcm, for arc_fault: the owner (as a
    shared-database refresh would have read it) polls; this hub skips, raises nothing, shows
    the device connected to that worker and refuses control naming it."""
    import time

    from voltwatch_arc_fault import runtime_for

    from hub.core.services import ServiceError

    hub = _hub(tmp_path, ["gsm", "arc_fault"], [
        {"id": "afd-remote", "platform": "arc_fault", "poll_interval": 0.05,
         "link": {"transport": "gsm", "imei": IMEI, "unit": 1}},
    ], gsm={"port": 0, "heartbeat_timeout": 0.2})
    server = voltwatch_gsm.get_server(hub)
    server.ownership.remote[IMEI] = ("worker-z", time.monotonic() + 3600)
    conditions: list[dict[str, Any]] = []
    hub.bus.listen("device_condition", callback(lambda event: conditions.append(event.data)))
    await hub.async_start()
    try:
        runtime = runtime_for(hub)
        assert runtime is not None
        device = runtime.devices["afd-remote"]
        polled = asyncio.Event()
        device.add_poll_listener(lambda d: polled.set() if d.polls > 10 else None)
        await asyncio.wait_for(polled.wait(), WAIT)  # past 3 failed polls and the 0.2 s silence
        assert device.failures == 0
        assert not [c for c in conditions if c["type"] == "communication_lost"]
        online = hub.states.get(device.online_entity)
        assert online is not None and online.state == "on"
        assert online.attributes["worker"] == "worker-z"
        with_owner = server.listing([IMEI])[0]
        assert (with_owner["owner"], with_owner["owned_here"]) == ("worker-z", False)
        try:
            await hub.services.async_call("arc_fault", "trip", {"device_id": "afd-remote"},
                                          return_response=True)
        except ServiceError as err:
            assert "worker-z" in str(err) and getattr(err, "status", None) == 409
        else:
            raise AssertionError("a trip through another worker's DTU answered")
    finally:
        await hub.async_stop()
