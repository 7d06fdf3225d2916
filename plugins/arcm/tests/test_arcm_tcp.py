"""The arcm plugin against its simulator over Modbus TCP, through the real modbus transport."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from arcm_testkit import StandInHub, arcm_device, wait_polls
from voltwatch_arcm import ArcmRuntime
from voltwatch_arcm.device import DeviceRejected
from voltwatch_arcm.simulator import ArcmSimulator, SimOptions

from hub.core.context import Context
from hub.core.events import EVENT_STATE_REPORTED, callback
from hub.core.services import ServiceValidationError
from hub.core.states import STATE_UNAVAILABLE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def site(tmp_path: Any) -> Any:
    port = free_port()
    sim = ArcmSimulator(range(1, 5), SimOptions(wander=False, leak_every=None))
    server = await sim.start_tcp("127.0.0.1", port)
    hub = StandInHub(tmp_path)
    runtime = ArcmRuntime(hub)
    link = {"transport": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3,
            "retries": 0}
    devices = [arcm_device(f"arcm-{u}", {**link, "unit": u}, name=f"配电箱{u}")
               for u in (1, 2)]
    devices.append(arcm_device("arcm-9", {**link, "unit": 9}, name="配电箱9"))
    await runtime.async_setup({"devices": devices})
    yield hub, runtime, sim
    await runtime.async_shutdown()

    await hub.stop()
    await server.shutdown()


async def test_entities_and_values(site: Any) -> None:
    hub, runtime, _sim = site
    await wait_polls(runtime.devices["arcm-1"], 1)
    state = hub.states.get("sensor.arcm_1_residual_current")
    assert state.state == "30"
    assert state.attributes["unit_of_measurement"] == "mA"
    assert state.attributes["device_id"] == "arcm-1"
    assert state.attributes["friendly_name"] == "配电箱1 剩余电流"
    assert hub.states.get("sensor.arcm_1_temperature_1").state == "25.1"
    assert hub.states.get("sensor.arcm_1_voltage_b").state == "220.5"
    assert hub.states.get("sensor.arcm_1_current_a").state == "10"
    assert hub.states.get("sensor.arcm_1_power").state == "22"
    assert hub.states.get("sensor.arcm_1_energy").state == "123.45"
    assert hub.states.get("sensor.arcm_1_current_thd_c").state == "8.3"
    assert hub.states.get("switch.arcm_1_breaker").state == "on"
    assert hub.states.get("binary_sensor.arcm_1_online").state == "on"
    entry = hub.entities.get("sensor.arcm_1_temperature_4")
    assert (entry.device_id, entry.unit, entry.device_class) == ("arcm-1", "°C", "temperature")
    assert {e.entity_id for e in hub.entities.for_device("arcm-1")} >= {
        "sensor.arcm_1_voltage_thd_a", "switch.arcm_1_breaker", "binary_sensor.arcm_1_online"}
    assert runtime.devices["arcm-1"].info == {"model_code": 0x0A01, "firmware_version": 0x0103}


async def test_one_request_per_poll(site: Any) -> None:
    _hub, runtime, _sim = site
    device = runtime.devices["arcm-1"]
    assert [(b.start, b.count) for b in device.profile.poll_blocks] == [(0, 35)]


async def test_the_units_of_a_link_share_one_poll_task(site: Any) -> None:
    hub, runtime, _sim = site
    devices = list(runtime.devices.values())
    await asyncio.gather(*(wait_polls(d, 2) for d in devices[:2]))
    link = devices[0].link
    assert all(d.link is link for d in devices)
    assert len(hub.links.scheduler(link)) == 3
    names = [task.get_name() for task in asyncio.all_tasks()]
    assert names.count(f"poll {link.key}") == 1
    assert not [name for name in names if name.startswith("arcm poll")]


async def test_an_unchanged_reading_moves_last_reported_only(site: Any) -> None:
    hub, runtime, _sim = site
    device = runtime.devices["arcm-1"]
    await wait_polls(device, 1)
    first = hub.states.get("sensor.arcm_1_residual_current")
    changed, reported_at = first.last_changed, first.last_reported
    reported: list[str] = []
    unsub = hub.bus.listen(EVENT_STATE_REPORTED,
                           callback(lambda event: reported.append(event.data["entity_id"])))
    await wait_polls(device, 2)
    unsub()
    state = hub.states.get("sensor.arcm_1_residual_current")
    assert state is first and state.state == "30"
    assert state.last_changed == changed and state.last_reported > reported_at
    assert {"sensor.arcm_1_residual_current", "sensor.arcm_1_temperature_4",
            "switch.arcm_1_breaker", "binary_sensor.arcm_1_online"} <= set(reported)


async def test_an_unchanged_reading_rewrites_a_state_someone_else_replaced(site: Any) -> None:
    hub, runtime, _sim = site
    device = runtime.devices["arcm-1"]
    await wait_polls(device, 1)
    hub.states.async_set("sensor.arcm_1_residual_current", STATE_UNAVAILABLE)
    hub.states.async_set("binary_sensor.arcm_1_online", "off")
    await wait_polls(device, 1)
    state = hub.states.get("sensor.arcm_1_residual_current")
    assert state.state == "30" and state.attributes["friendly_name"] == "配电箱1 剩余电流"
    assert hub.states.get("binary_sensor.arcm_1_online").state == "on"


async def test_residual_alarm_raised_once_and_cleared(site: Any) -> None:
    hub, runtime, sim = site
    device = runtime.devices["arcm-2"]
    await wait_polls(device, 1)
    sim.units[2].regs[49] = 0  # no alarm delay
    sim.units[2].set_override("residual_current", 550)
    raised = await hub.wait_condition(
        lambda c: c["device_id"] == "arcm-2" and c["type"] == "residual_current_high")
    assert raised["active"] is True and raised["kind"] == "alarm"
    assert raised["message"] == "剩余电流过大 550mA"
    assert raised["message_en"] == "Residual current high 550mA"
    assert raised["entity_id"] == "sensor.arcm_2_residual_current"
    assert (raised["value"], raised["unit"]) == (550, "mA")
    await wait_polls(device, 3)
    same = [c for c in hub.conditions if c["device_id"] == "arcm-2"
            and c["type"] == "residual_current_high"]
    assert len(same) == 1, "an alarm that persists is fired once"
    sim.units[2].set_override("residual_current", None)
    cleared = await hub.wait_condition(
        lambda c: c["device_id"] == "arcm-2" and c["type"] == "residual_current_high"
        and not c["active"])
    assert cleared["kind"] == "alarm"


async def test_alarm_waits_for_the_configured_delay(site: Any) -> None:
    hub, runtime, sim = site
    device = runtime.devices["arcm-1"]
    sim.units[1].regs[49] = 600  # 60 s: far beyond this test
    sim.units[1].set_override("residual_current", 700)
    await wait_polls(device, 3)
    assert hub.states.get("sensor.arcm_1_residual_current").state == "700"
    assert not [c for c in hub.conditions if c["type"] == "residual_current_high"]


async def test_temperature_alarm_words(site: Any) -> None:
    hub, _runtime, sim = site
    call = await hub.services.async_call(
        "arcm", "set_parameter", {"device_id": "arcm-1", "name": "temperature_alarm_1",
                                  "value": 45}, return_response=True)
    assert call["value"] == 45 and call["confirmed"] is True
    sim.units[1].regs[49] = 0
    sim.units[1].set_override("temperature_1", 450 + 1)
    raised = await hub.wait_condition(lambda c: c["type"] == "temperature_high_1")
    assert raised["message"] == "温度1过大 45.1°C"
    assert raised["message_en"] == "Temperature 1 high 45.1°C"


async def test_probe_open_sentinel(site: Any) -> None:
    hub, runtime, sim = site
    sim.units[1].set_override("temperature_4", 0x7FFF)
    fault = await hub.wait_condition(lambda c: c["type"] == "probe_open_4")
    assert fault["kind"] == "fault" and fault["message"] == "温度4断线"
    assert hub.states.get("sensor.arcm_1_temperature_4").state == STATE_UNAVAILABLE
    await wait_polls(runtime.devices["arcm-1"], 2)
    assert len([c for c in hub.conditions if c["type"] == "probe_open_4"]) == 1
    sim.units[1].set_override("residual_current", 0xFFFF)
    fault = await hub.wait_condition(lambda c: c["type"] == "residual_transformer_open")
    assert fault["message"] == "剩余电流互感器断线"
    assert hub.states.get("sensor.arcm_1_residual_current").state == STATE_UNAVAILABLE


async def test_unit_that_does_not_answer(site: Any) -> None:
    hub, runtime, _sim = site
    lost = await hub.wait_condition(
        lambda c: c["device_id"] == "arcm-9" and c["type"] == "communication_lost")
    assert lost["message"] == "通讯中断" and lost["kind"] == "fault" and lost["active"]
    assert lost["source"] == "arcm"  # kept apart from a DTU server's claim on the same fault
    assert hub.states.get("binary_sensor.arcm_9_online").state == "off"
    assert hub.states.get("sensor.arcm_9_residual_current").state == STATE_UNAVAILABLE
    # Its neighbours on the same link go on being polled.
    before = runtime.devices["arcm-1"].good_polls
    await wait_polls(runtime.devices["arcm-1"], 2)
    assert runtime.devices["arcm-1"].good_polls >= before + 2
    assert hub.states.get("binary_sensor.arcm_1_online").state == "on"
    assert runtime.devices["arcm-1"].link is runtime.devices["arcm-9"].link


async def test_commands_confirmed_by_read_back(site: Any) -> None:
    hub, runtime, sim = site
    await wait_polls(runtime.devices["arcm-1"], 1)
    context = Context(user_id="operator-1")
    result = await hub.services.async_call("arcm", "trip", {"device_id": "arcm-1"},
                                           context=context, return_response=True)
    assert result["confirmed"] is True and result["breaker"] == "tripped"
    assert sim.units[1].regs[34] & 1
    assert hub.states.get("switch.arcm_1_breaker").state == "off"
    tripped = await hub.wait_condition(lambda c: c["type"] == "tripped")
    assert tripped["kind"] == "event" and tripped["message"] == "分闸"
    assert tripped["context_id"] == context.id
    await wait_polls(runtime.devices["arcm-1"], 2)
    assert len([c for c in hub.conditions if c["type"] == "tripped"]) == 1

    result = await hub.services.async_call("arcm", "close", {"device_id": "arcm-1"},
                                           return_response=True)
    assert result["breaker"] == "closed"
    assert hub.states.get("switch.arcm_1_breaker").state == "on"
    assert (await hub.wait_condition(lambda c: c["type"] == "closed"))["message"] == "合闸"

    result = await hub.services.async_call("arcm", "mute", {"device_id": "arcm-1"},
                                           return_response=True)
    assert result["relay"]["muted"] == 1
    result = await hub.services.async_call("arcm", "self_test", {"device_id": "arcm-1"},
                                           return_response=True)
    assert result["relay"]["self_test"] == 1
    result = await hub.services.async_call("arcm", "reset", {"device_id": "arcm-1"},
                                           return_response=True)
    assert result["relay"]["alarm_relay"] == 0 and result["relay"]["muted"] == 0
    assert (await hub.wait_condition(lambda c: c["type"] == "reset"))["message_en"] == "Reset"


async def test_set_parameter_validated_and_read_back(site: Any) -> None:
    hub, _runtime, sim = site
    with pytest.raises(ServiceValidationError, match="20–1000mA"):
        await hub.services.async_call("arcm", "set_parameter", {
            "device_id": "arcm-1", "name": "residual_current_alarm", "value": 5})
    assert sim.units[1].regs[48] == 300
    with pytest.raises(ServiceValidationError, match="unknown parameter"):
        await hub.services.async_call("arcm", "set_parameter", {
            "device_id": "arcm-1", "name": "no_such", "value": 5})
    with pytest.raises(ServiceValidationError):
        await hub.services.async_call("arcm", "set_parameter", {"device_id": "arcm-1"})
    result = await hub.services.async_call("arcm", "set_parameter", {
        "device_id": "arcm-1", "name": "residual_current_alarm", "value": 500},
        return_response=True)
    assert result == {"device_id": "arcm-1", "name": "residual_current_alarm", "value": 500,
                      "unit": "mA", "previous": 300, "confirmed": True}
    assert sim.units[1].regs[48] == 500
    result = await hub.services.async_call("arcm", "set_parameter", {
        "device_id": "arcm-1", "name": "residual_current_delay", "value": 2.5},
        return_response=True)
    assert result["value"] == 2.5 and sim.units[1].regs[49] == 25
    result = await hub.services.async_call("arcm", "set_parameter", {
        "device_id": "arcm-1", "name": "protection_mode", "value": "alarm_trip"},
        return_response=True)
    assert result["value"] == 2
    params = await hub.services.async_call("arcm", "read_parameters", {"device_id": "arcm-1"},
                                           return_response=True)
    assert params["parameters"]["residual_current_alarm"]["value"] == 500


async def test_unreachable_device_gives_a_clear_failure(site: Any) -> None:
    hub, _runtime, _sim = site
    from hub.core.platform import DeviceNotFound, DeviceUnreachable

    with pytest.raises(DeviceUnreachable) as info:
        await hub.services.async_call("arcm", "trip", {"device_id": "arcm-9"})
    assert info.value.status == 504
    with pytest.raises(DeviceNotFound):
        await hub.services.async_call("arcm", "trip", {"device_id": "nope"})


async def test_device_refusing_a_write(site: Any) -> None:
    """The simulator refuses what is outside its own range even if a profile allowed it."""
    _hub, runtime, _sim = site
    device = runtime.devices["arcm-1"]
    device.profile.setpoints["residual_current_alarm"].maximum = 5000  # a too-lax profile
    try:
        with pytest.raises(DeviceRejected, match="exception code 3"):
            await device.set_parameter("residual_current_alarm", 2000, Context())
    finally:
        device.profile.setpoints["residual_current_alarm"].maximum = 1000


async def test_api_created_device_starts(site: Any) -> None:
    hub, runtime, _sim = site
    link = dict(runtime.devices["arcm-1"].config["link"], unit=3)
    await hub.devices.async_upsert(id="arcm-3", platform="arcm", name="配电箱3", link=link,
                                   source="api", poll_interval=0.05)
    state = await hub.wait_state("binary_sensor.arcm_3_online", lambda s: s.state == "on")
    assert state.attributes["friendly_name"] == "配电箱3 在线"
    await hub.devices.async_remove("arcm-3")
    await asyncio.wait_for(_until(lambda: "arcm-3" not in runtime.devices), 10)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
