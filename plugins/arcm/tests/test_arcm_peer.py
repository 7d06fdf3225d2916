"""Against an independent peer: pymodbus's own server filled with registers directly.

Nothing of our simulator is involved, so these tests catch a decoder and a simulator that
agree with each other but not with the register map.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from arcm_testkit import StandInHub, arcm_device, wait_polls
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from voltwatch_arcm import ArcmRuntime
from voltwatch_arcm.device import CommandNotConfirmed
from voltwatch_arcm.profile import BUILTIN_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registers() -> list[int]:
    regs = [0] * 82
    regs[0] = 550                        # mA
    regs[1:5] = [0xFF9C, 451, 0x7FFF, 800]  # -10.0, 45.1, open, 80.0 °C
    regs[5:8] = [2311, 2290, 2305]       # V
    regs[8:11] = [1234, 56, 7]           # 12.34 A, 0.56 A, 0.07 A
    regs[11:13] = [0xFFFF, 0xFC18]       # -1000 W = -1 kW
    regs[13:15] = [0x0001, 0x86A0]       # 100000 -> 1000.00 kWh
    regs[15] = 4998
    regs[16:22] = [30, 31, 32, 120, 121, 122]
    regs[32] = 0b11                      # residual + temperature 1 alarms
    regs[33] = 0b1000                    # probe 3 open
    regs[34] = 0b1                       # breaker tripped
    regs[48:58] = [300, 50, 45, 80, 80, 80, 2640, 1870, 6300, 1]
    regs[80:82] = [0x1234, 0x0207]
    return regs


@pytest.fixture
async def peer(tmp_path: Path) -> Any:
    port = free_port()
    server = ModbusTcpServer(
        [SimDevice(id=5, simdata=SimData(0, values=registers(), datatype=DataType.REGISTERS))],
        address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    # A faster confirm timeout: this peer never moves its relay bits.
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "arcm-ref.yaml").write_text(
        (BUILTIN_DIR / "arcm-ref.yaml").read_text(encoding="utf-8").replace(
            "confirm_timeout: 3", "confirm_timeout: 0.3"), encoding="utf-8")
    # A model whose map runs past what the peer has: the peer answers exception 02.
    (tmp_path / "profiles" / "too-long.yaml").write_text(
        "id: too-long\nregisters:\n  - {name: residual_current, address: 0, unit: mA}\n"
        "  - {name: extra, address: 200}\n", encoding="utf-8")
    hub = StandInHub(tmp_path)
    runtime = ArcmRuntime(hub)
    link = {"transport": "modbus_tcp", "host": "127.0.0.1", "port": port, "unit": 5,
            "timeout": 0.5, "retries": 0}
    await runtime.async_setup({"devices": [
        arcm_device("peer-5", link),
        arcm_device("long-5", link, profile="too-long"),
    ]})
    yield hub, runtime
    await runtime.async_shutdown()
    await hub.stop()
    await server.shutdown()


async def test_decodes_a_foreign_server(peer: Any) -> None:
    hub, runtime = peer
    await wait_polls(runtime.devices["peer-5"], 1)
    get = lambda e: hub.states.get(e).state
    assert get("sensor.peer_5_residual_current") == "550"
    assert get("sensor.peer_5_temperature_1") == "-10"
    assert get("sensor.peer_5_temperature_2") == "45.1"
    assert get("sensor.peer_5_temperature_3") == "unavailable"
    assert get("sensor.peer_5_voltage_a") == "231.1"
    assert get("sensor.peer_5_current_a") == "12.34"
    assert get("sensor.peer_5_current_c") == "0.07"
    assert get("sensor.peer_5_power") == "-1"
    assert get("sensor.peer_5_energy") == "1000"
    assert get("sensor.peer_5_frequency") == "49.98"
    assert get("sensor.peer_5_current_thd_b") == "12.1"
    assert get("switch.peer_5_breaker") == "off"
    types = {c["type"]: c for c in hub.conditions if c["device_id"] == "peer-5"}
    assert types["residual_current_high"]["message"] == "剩余电流过大 550mA"
    assert types["temperature_high_1"]["message"] == "温度1过大 -10.0°C"
    assert types["probe_open_3"]["message"] == "温度3断线"
    assert "tripped" not in types  # the first reading is a state, not a transition
    assert runtime.devices["peer-5"].info == {"model_code": 0x1234, "firmware_version": 0x0207}
    assert runtime.devices["peer-5"].setpoints["temperature_alarm_1"] == 45


async def test_exception_response_is_a_named_fault(peer: Any) -> None:
    hub, runtime = peer
    fault = await hub.wait_condition(
        lambda c: c["device_id"] == "long-5" and c["type"] == "device_fault")
    assert fault["message"] == "设备故障：异常码 2 非法数据地址"
    assert fault["message_en"] == "Device fault: exception code 2 (illegal data address)"
    # The other device on the same link is not disturbed.
    await wait_polls(runtime.devices["peer-5"], 2)
    assert hub.states.get("binary_sensor.peer_5_online").state == "on"


async def test_set_parameter_on_a_foreign_server(peer: Any) -> None:
    hub, _runtime = peer
    result = await hub.services.async_call(
        "arcm", "set_parameter",
        {"device_id": "peer-5", "name": "under_voltage", "value": 190.5}, return_response=True)
    assert result["value"] == 190.5 and result["previous"] == 187


async def test_unconfirmed_command_fails_clearly(peer: Any) -> None:
    hub, _runtime = peer
    with pytest.raises(CommandNotConfirmed, match="close not confirmed") as info:
        await hub.services.async_call("arcm", "close", {"device_id": "peer-5"})
    assert info.value.status == 504
