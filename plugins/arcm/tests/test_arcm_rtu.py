"""The arcm plugin over Modbus RTU (CRC-16) on a real pty pair, with a misbehaving line."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from arcm_testkit import StandInHub, arcm_device, wait_polls
from voltwatch_arcm import ArcmRuntime
from voltwatch_arcm.simulator import ArcmSimulator, SimOptions, crc16, open_pty

from hub.core.states import STATE_UNAVAILABLE


@pytest.fixture
async def line(tmp_path: Any) -> Any:
    master, slave, name = open_pty()
    sim = ArcmSimulator(range(1, 4), SimOptions(wander=False, leak_every=None))
    responder = sim.responder()
    serve = asyncio.get_running_loop().create_task(sim.serve_fd(master, responder))
    hub = StandInHub(tmp_path, language="en")
    runtime = ArcmRuntime(hub)
    link = {"transport": "modbus_rtu", "port": name, "baudrate": 9600, "timeout": 0.3,
            "retries": 1}
    await runtime.async_setup({"devices": [
        arcm_device("rtu-1", {**link, "unit": 1}, name="Panel 1"),
        arcm_device("rtu-2", {**link, "unit": 2}, name="Panel 2"),
        arcm_device("rtu-7", {**link, "unit": 7}, name="Panel 7"),
    ]})
    yield hub, runtime, sim, responder
    await runtime.async_shutdown()
    await hub.stop()
    serve.cancel()
    await asyncio.gather(serve, return_exceptions=True)
    os.close(master)
    os.close(slave)


async def test_polls_over_rtu_and_shares_the_line(line: Any) -> None:
    hub, runtime, _sim, _responder = line
    await wait_polls(runtime.devices["rtu-1"], 2)
    await wait_polls(runtime.devices["rtu-2"], 1)
    assert hub.states.get("sensor.rtu_1_temperature_2").state == "26.2"
    assert hub.states.get("sensor.rtu_2_residual_current").state == "30"
    assert hub.states.get("sensor.rtu_1_residual_current").attributes["friendly_name"] == \
        "Panel 1 Residual current"
    assert runtime.devices["rtu-1"].link is runtime.devices["rtu-2"].link
    assert runtime.devices["rtu-1"].link.key.startswith("modbus_rtu:///dev/")


async def test_silent_unit_on_the_line(line: Any) -> None:
    hub, runtime, _sim, _responder = line
    lost = await hub.wait_condition(
        lambda c: c["device_id"] == "rtu-7" and c["type"] == "communication_lost")
    assert lost["message"] == "通讯中断" and lost["message_en"] == "Communication lost"
    assert hub.states.get("binary_sensor.rtu_7_online").state == "off"
    before = runtime.devices["rtu-1"].good_polls
    await wait_polls(runtime.devices["rtu-1"], 2)
    assert runtime.devices["rtu-1"].good_polls > before


async def test_crc_garbage_is_retried(line: Any) -> None:
    hub, runtime, _sim, responder = line
    device = runtime.devices["rtu-1"]
    await wait_polls(device, 1)
    spoiled = 0

    def mangle(unit: int, frame: bytes) -> bytes | None:
        nonlocal spoiled
        if unit == 1 and spoiled < 3:
            spoiled += 1
            return frame[:-2] + bytes([frame[-2] ^ 0xFF, frame[-1]])  # bad CRC
        return frame

    responder.mangle = mangle
    timeouts = device.link.stats.timeouts
    await wait_polls(device, 4)
    assert spoiled == 3
    assert device.link.stats.timeouts >= timeouts + 3
    assert hub.states.get("binary_sensor.rtu_1_online").state == "on"
    assert not [c for c in hub.conditions if c["device_id"] == "rtu-1"
                and c["type"] == "communication_lost"]


async def test_only_garbage_means_communication_lost(line: Any) -> None:
    hub, _runtime, _sim, responder = line
    responder.mangle = lambda unit, frame: (b"\x55\xaa" * 6) if unit == 2 else frame
    lost = await hub.wait_condition(
        lambda c: c["device_id"] == "rtu-2" and c["type"] == "communication_lost")
    assert lost["active"]
    assert hub.states.get("sensor.rtu_2_voltage_a").state == STATE_UNAVAILABLE
    responder.mangle = None
    cleared = await hub.wait_condition(
        lambda c: c["device_id"] == "rtu-2" and c["type"] == "communication_lost"
        and not c["active"])
    assert cleared["kind"] == "fault"
    state = await hub.wait_state("sensor.rtu_2_voltage_a", lambda s: s.state == "220")
    assert state.attributes["unit_of_measurement"] == "V"


async def test_short_frame_is_a_device_fault(line: Any) -> None:
    hub, _runtime, _sim, responder = line

    def short(unit: int, frame: bytes) -> bytes:
        if unit != 1 or frame[1] != 3:
            return frame
        body = bytes([1, 3, 4]) + frame[3:7]  # claims 2 registers instead of 35
        return body + crc16(body)

    responder.mangle = short
    fault = await hub.wait_condition(
        lambda c: c["device_id"] == "rtu-1" and c["type"] == "device_fault")
    assert "short response" in fault["message_en"]
    assert fault["message"].startswith("设备故障：应答帧错误")
    responder.mangle = None
    await hub.wait_condition(
        lambda c: c["device_id"] == "rtu-1" and c["type"] == "device_fault" and not c["active"])


async def test_commands_and_setpoints_over_rtu(line: Any) -> None:
    hub, _runtime, sim, _responder = line
    result = await hub.services.async_call("arcm", "trip", {"device_id": "rtu-2"},
                                           return_response=True)
    assert result["breaker"] == "tripped" and sim.units[2].regs[34] & 1
    result = await hub.services.async_call(
        "arcm", "set_parameter",
        {"device_id": "rtu-2", "name": "overload_current", "value": 40.5},
        return_response=True)
    assert result["value"] == 40.5 and sim.units[2].regs[56] == 4050


async def test_rtu_over_tcp_serial_server(tmp_path: Any) -> None:
    """A serial device server: RTU frames (with CRC) inside a TCP stream."""
    sim = ArcmSimulator([4], SimOptions(wander=False, leak_every=None))
    responder = sim.responder()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            for frame in responder.feed(data):
                writer.write(frame)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub = StandInHub(tmp_path)
    runtime = ArcmRuntime(hub)
    await runtime.async_setup({"devices": [arcm_device(
        "dtu-4", {"transport": "rtu_over_tcp", "host": "127.0.0.1", "port": port, "unit": 4})]})
    try:
        state = await hub.wait_state("sensor.dtu_4_voltage_c", lambda s: s.state == "219.8")
        assert state.attributes["unit_of_measurement"] == "V"
        assert runtime.devices["dtu-4"].link.key == f"rtu_over_tcp://127.0.0.1:{port}"
    finally:
        await runtime.async_shutdown()
        await hub.stop()
        server.close()
        await server.wait_closed()
