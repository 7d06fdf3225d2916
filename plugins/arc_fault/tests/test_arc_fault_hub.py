"""The arc_fault plugin in a real Hub over Modbus TCP: GB 50166 counts 9 and 14, latching,
the detector's own bit, and services with read-back."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from voltwatch_arc_fault import runtime_for
from voltwatch_arc_fault.simulator import ArcFaultSimulator

from hub.core.events import Event, callback
from hub.core.plugins import PluginManager
from hub.core.services import ServiceError, ServiceValidationError
from hub.hub import Hub

WAIT = 10.0  # failure bound, never a synchronisation delay


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Records:
    """alarm_* events from the moment it is made; `wait` returns the first match."""

    def __init__(self, hub: Hub) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._waiters: list[tuple[Callable[[str, dict[str, Any]], bool], asyncio.Future[Any]]] = []
        for event_type in ("alarm_raised", "alarm_updated", "alarm_cleared"):
            hub.bus.listen(event_type, self._on)

    @callback
    def _on(self, event: Event) -> None:
        self.seen.append((event.event_type, event.data))
        for predicate, future in self._waiters:
            if not future.done() and predicate(event.event_type, event.data):
                future.set_result(event.data)

    async def wait(self, event_type: str, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = WAIT) -> dict[str, Any]:
        def match(kind: str, data: dict[str, Any]) -> bool:
            return kind == event_type and predicate(data)

        for kind, data in self.seen:
            if match(kind, data):
                return data
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (match, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(entry)


async def polls(device: Any, count: int = 1) -> None:
    """Await `count` completed polls (a failure bound, not a delay)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen = 0

    def done(_device: Any) -> None:
        nonlocal seen
        seen += 1
        if seen >= count and not future.done():
            future.set_result(None)

    unsub = device.add_poll_listener(done)
    try:
        await asyncio.wait_for(future, WAIT)
    finally:
        unsub()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Hub, ArcFaultSimulator, Records]]:
    port = free_port()
    sim = ArcFaultSimulator([1, 2], wander=False)
    server = await sim.start_tcp("127.0.0.1", port)
    manager = PluginManager()
    manager.load_entrypoints(only=["modbus", "arc_fault"])
    link = {"transport": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.5}
    hub = Hub(tmp_path, config={
        "hub": {"name": "afd", "language": "zh-CN"},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
        "http": {"enabled": False},
        "projects": [{"id": "school-1", "name": "第一中学"}],
        "devices": [
            {"id": "afd-1", "name": "电弧探测器1", "platform": "arc_fault", "project": "school-1",
             "poll_interval": "50ms", "link": {**link, "unit": 1}},
            {"id": "afd-2", "platform": "arc_fault", "project": "school-1",
             "poll_interval": 0.05, "link": {**link, "unit": 2}},
        ],
    }, plugin_manager=manager)
    records = Records(hub)
    await hub.async_start()
    try:
        assert hub.plugins.failures == []
        yield hub, sim, records
    finally:
        await hub.async_stop()
        await server.shutdown()


async def test_readings_become_entities(site: Any) -> None:
    hub, sim, _records = site
    device = runtime_for(hub).devices["afd-1"]
    sim.units[1].set_arc_count(3)
    await polls(device, 2)
    count = hub.states.get("sensor.afd_1_arc_count")
    assert count.state == "3" and count.attributes["threshold"] == 14
    assert count.attributes["unit_of_measurement"] == "half-cycles/s"
    assert hub.states.get("sensor.afd_1_arc_total").state == "3"
    assert hub.states.get("sensor.afd_1_current").state == "12.5"
    assert hub.states.get("sensor.afd_1_temperature").state == "26.5"
    assert hub.states.get("switch.afd_1_breaker").state == "on"
    assert hub.states.get("binary_sensor.afd_1_online").state == "on"
    assert hub.entities.get("sensor.afd_1_arc_count") is not None


async def test_nine_half_cycles_never_alarm(site: Any) -> None:
    hub, sim, records = site
    device = runtime_for(hub).devices["afd-1"]
    for count in (9, 13):  # 9: GB 50166's "no alarm"; 10-13: below the default threshold
        sim.units[1].set_arc_count(count)
        await polls(device, 3)
        assert hub.states.get("sensor.afd_1_arc_count").state == str(count)
    await hub.alarms.async_flush()
    assert [d for kind, d in records.seen if d["type"] == "arc_fault"] == []
    assert hub.alarms.get_active("afd-1", "arc_fault") is None


async def test_fourteen_half_cycles_alarm_and_latch_until_reset(site: Any) -> None:
    hub, sim, records = site
    device = runtime_for(hub).devices["afd-1"]
    sim.units[1].set_arc_count(14)
    raised = await records.wait("alarm_raised", lambda r: r["type"] == "arc_fault")
    assert raised["kind"] == "alarm" and raised["severity"] == "critical"
    assert raised["message"].startswith("故障电弧") and raised["latching"] is True
    assert raised["device_id"] == "afd-1" and raised["entity_id"] == "sensor.afd_1_arc_count"
    await polls(device, 2)
    record = hub.alarms.get_active("afd-1", "arc_fault")
    assert record.sources == {"arc_fault_hub", "arc_fault"}  # the hub rule and the bit

    # The arcing stops: the hub's rule lets go, the detector's bit and the alarm stay latched.
    sim.units[1].set_arc_count(0)
    await polls(device, 3)
    assert hub.alarms.get_active("afd-1", "arc_fault").sources == {"arc_fault"}
    await hub.alarms.async_flush()
    stored = await hub.alarms.store.get(raised["id"])
    assert stored["status"] == "active" and stored["message"].startswith("故障电弧")

    result = await hub.services.async_call("arc_fault", "reset", {"device_id": "afd-1"},
                                           return_response=True)
    assert result["confirmed"] is True and result["breaker"] == "closed"
    cleared = await records.wait("alarm_cleared", lambda r: r["type"] == "arc_fault")
    assert cleared["id"] == raised["id"]
    assert hub.alarms.get_active("afd-1", "arc_fault") is None


async def test_the_hub_rule_alone_latches(site: Any) -> None:
    """A detector whose own threshold is higher still alarms by the hub's 14 (GB 50166)."""
    hub, sim, records = site
    device = runtime_for(hub).devices["afd-2"]
    unit = sim.units[2]
    await polls(device, 1)
    unit.regs[32] = 30  # the detector would not set its bit at 14 ...
    device.threshold = 14  # ... while the hub keeps the GB figure it read at start
    unit.set_arc_count(14)
    raised = await records.wait("alarm_raised", lambda r: r["device_id"] == "afd-2")
    assert raised["sources"] == ["arc_fault_hub"] and raised["type"] == "arc_fault"
    unit.set_arc_count(0)
    await records.wait("alarm_updated", lambda r: r["device_id"] == "afd-2"
                       and r["sources"] == [])
    assert hub.alarms.get_active("afd-2", "arc_fault") is not None  # latched, no source


async def test_detector_bit_alone_raises(site: Any) -> None:
    _hub, sim, records = site
    sim.units[1].regs[16] |= 1  # the detector saw arcs between two of our polls
    raised = await records.wait("alarm_raised", lambda r: r["type"] == "arc_fault")
    assert raised["sources"] == ["arc_fault"]
    assert "探测器报警" in raised["message"]


async def test_services_answer_after_read_back(site: Any) -> None:
    hub, sim, records = site
    context = hub.context(user_id="alice")
    result = await hub.services.async_call("arc_fault", "trip", {"device_id": "afd-1"},
                                           context=context, return_response=True)
    assert result["breaker"] == "tripped" and sim.units[1].regs[16] & 4
    assert hub.states.get("switch.afd_1_breaker").state == "off"
    tripped = await records.wait("alarm_raised", lambda r: r["type"] == "tripped")
    assert tripped["kind"] == "event" and tripped["message"] == "分闸"

    await hub.services.async_call("arc_fault", "mute", {"device_id": "afd-1"})
    assert sim.units[1].regs[16] & 8
    await hub.services.async_call("arc_fault", "self_test", {"device_id": "afd-1"})
    await records.wait("alarm_raised", lambda r: r["type"] == "self_test")

    result = await hub.services.async_call(
        "arc_fault", "set_parameter",
        {"device_id": "afd-1", "name": "arc_alarm_threshold", "value": 20},
        return_response=True)
    assert result == {"device_id": "afd-1", "name": "arc_alarm_threshold", "value": 20,
                      "unit": "half-cycles/s", "previous": 14, "confirmed": True}
    assert sim.units[1].regs[32] == 20 and runtime_for(hub).devices["afd-1"].threshold == 20
    with pytest.raises(ServiceValidationError, match="1–100"):
        await hub.services.async_call("arc_fault", "set_parameter",
                                      {"device_id": "afd-1", "name": "arc_alarm_threshold",
                                       "value": 0})
    with pytest.raises(ServiceValidationError, match="unknown parameter"):
        await hub.services.async_call("arc_fault", "set_parameter",
                                      {"device_id": "afd-1", "name": "volume", "value": 3})
    with pytest.raises(ServiceError, match="No arc_fault device"):
        await hub.services.async_call("arc_fault", "trip", {"device_id": "afd-9"})


async def test_a_raised_threshold_moves_the_rule(site: Any) -> None:
    hub, sim, records = site
    device = runtime_for(hub).devices["afd-1"]
    await hub.services.async_call("arc_fault", "set_parameter",
                                  {"device_id": "afd-1", "name": "arc_alarm_threshold",
                                   "value": 10})
    sim.units[1].set_arc_count(10)
    raised = await records.wait("alarm_raised", lambda r: r["type"] == "arc_fault")
    assert "10半周波/秒 ≥ 10" in raised["message"] or "探测器报警" in raised["message"]
    await polls(device, 1)
    assert hub.alarms.get_active("afd-1", "arc_fault").sources == {"arc_fault_hub", "arc_fault"}


async def test_a_failing_unit_is_a_fault(site: Any) -> None:
    _hub, sim, records = site
    del sim.units[2]  # the simulator's action now fails: pymodbus answers with an exception
    fault = await records.wait("alarm_raised", lambda r: r["device_id"] == "afd-2"
                               and r["kind"] == "fault")
    assert fault["type"] in ("communication_lost", "device_fault")
