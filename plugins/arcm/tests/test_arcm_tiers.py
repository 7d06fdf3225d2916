"""Tiered polling (issue #13): schedule order, the alarm-triggered measurement read, precedence
of intervals, the link's budget stretch, and that LAN devices keep flat polling.

The tier logic runs against a recording in-memory link and an injected monotonic clock:
`poll_once()` is called at chosen instants, so the order of reads is checked without sleeping
and without asserting on timing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from arcm_testkit import WAIT, StandInHub, wait_polls
from voltwatch_arcm import DEVICE_SCHEMA
from voltwatch_arcm.device import ArcmDevice
from voltwatch_arcm.profile import BUILTIN_DIR, ProfileError, find_profile

from hub.core.context import Context
from hub.core.links import MeteredLink, ModbusLink, PollSchedule

STATUS = (32, 3)
MEASURE = (0, 22)
SETPOINTS = (48, 10)
INFO = (80, 2)
FLAT = (0, 35)


class RecordingLink:
    """Holding registers in memory; every read is recorded as (address, count)."""

    key = "memory://1"

    def __init__(self) -> None:
        self.regs = [0] * 128
        self.regs[0] = 12
        for n in range(1, 5):
            self.regs[n] = 250
        for n in range(5, 8):
            self.regs[n] = 2200
        self.regs[48] = 300
        self.regs[80:82] = [0x0A01, 0x0102]
        self.reads: list[tuple[int, int]] = []

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        self.reads.append((address, count))
        return self.regs[address:address + count]

    async def write_register(self, unit: int, address: int, value: int) -> None:
        self.regs[address] = value

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        self.regs[address:address + len(values)] = values

    async def close(self) -> None:
        return None

    def take(self) -> list[tuple[int, int]]:
        reads, self.reads = self.reads, []
        return reads


class MeteredRecordingLink(RecordingLink):
    """As a GSM DTU looks to a poller: metered, with its own interval defaults."""

    def __init__(self, defaults: dict[str, float] | None = None) -> None:
        super().__init__()
        self.defaults = defaults or {}
        self.schedules: list[PollSchedule] = []

    def polling_defaults(self) -> dict[str, float]:
        return dict(self.defaults)

    def declare_schedule(self, schedule: PollSchedule) -> Callable[[], None]:
        self.schedules.append(schedule)
        return lambda: self.schedules.remove(schedule)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_device(hub: StandInHub, link: Any, clock: Clock | None = None,
                **config: Any) -> ArcmDevice:
    conf = DEVICE_SCHEMA({"id": "arcm-t", "platform": "arcm", "link": {"unit": 1}, **config})
    return ArcmDevice(hub, conf, find_profile(conf["profile"]), link, clock=clock)


async def at(device: ArcmDevice, clock: Clock, offset: float) -> None:
    clock.now = 1000.0 + offset
    assert await device.poll_once()


async def test_the_links_satisfy_the_protocols(tmp_path: Path) -> None:
    assert isinstance(MeteredRecordingLink(), MeteredLink)
    assert isinstance(MeteredRecordingLink(), ModbusLink)
    assert not isinstance(RecordingLink(), MeteredLink)


async def test_tiered_schedule_order(tmp_path: Path) -> None:
    hub = StandInHub(tmp_path)
    link, clock = MeteredRecordingLink(), Clock()
    device = make_device(hub, link, clock, status_interval=10, measure_interval=30)
    await device.async_register_entities()
    assert device.tiered and device.status_interval == 10 and device.measure_interval == 30

    await at(device, clock, 0)
    # First cycle: info, setpoints, a measurement so entities have values, then status.
    assert link.take() == [INFO, SETPOINTS, MEASURE, STATUS]
    assert device.next_wake() == pytest.approx(1010.0)
    assert hub.states.get("sensor.arcm_t_residual_current").state == "12"
    for offset in (10, 20):
        await at(device, clock, offset)
        assert link.take() == [STATUS]
    await at(device, clock, 30)
    assert link.take() == [MEASURE, STATUS]
    await at(device, clock, 40)
    assert link.take() == [STATUS]

    # After a write the setpoints are read again, once (not every cycle).
    result = await device.set_parameter("residual_current_alarm", 500, Context())
    assert result["value"] == 500
    link.take()
    await at(device, clock, 50)
    assert link.take() == [SETPOINTS, STATUS]
    await at(device, clock, 60)
    assert link.take() == [MEASURE, STATUS]
    assert device.tier_reads == {"status": 7, "measure": 3, "alarm_measure": 0,
                                 "setpoints": 2, "info": 1}
    await hub.stop()


async def test_alarm_bit_triggers_an_immediate_measurement_read(tmp_path: Path) -> None:
    hub = StandInHub(tmp_path)
    link, clock = MeteredRecordingLink(), Clock()
    device = make_device(hub, link, clock, status_interval=10, measure_interval=300)
    await device.async_register_entities()
    await at(device, clock, 0)
    link.take()

    # The leak starts between two measurement reads: the status block shows the bit.
    link.regs[0] = 550
    link.regs[32] = 0b1
    await at(device, clock, 10)
    assert link.take() == [STATUS, MEASURE]
    alarm = await hub.wait_condition(lambda c: c["type"] == "residual_current_high"
                                     and c["active"])
    assert alarm["value"] == 550 and alarm["message"] == "剩余电流过大 550mA"
    assert alarm["entity_id"] == "sensor.arcm_t_residual_current"
    assert hub.states.get("sensor.arcm_t_residual_current").state == "550"

    # Still active: no second measurement read until its own time comes.
    await at(device, clock, 20)
    assert link.take() == [STATUS]
    # The extra read restarted the measurement timer (it was a measurement).
    assert device.next_wake() == pytest.approx(1030.0)
    link.regs[32] = 0
    await at(device, clock, 30)
    assert link.take() == [STATUS]
    cleared = await hub.wait_condition(lambda c: c["type"] == "residual_current_high"
                                       and not c["active"])
    assert cleared["device_id"] == "arcm-t"
    assert device.tier_reads["alarm_measure"] == 1
    await hub.stop()


async def test_a_status_poll_keeps_faults_only_a_measurement_can_see(tmp_path: Path) -> None:
    hub = StandInHub(tmp_path)
    link, clock = MeteredRecordingLink(), Clock()
    link.regs[0] = 0xFFFF  # residual transformer open: a sentinel in the measurement tier
    device = make_device(hub, link, clock, status_interval=10, measure_interval=300)
    await device.async_register_entities()
    await at(device, clock, 0)
    await at(device, clock, 10)
    await at(device, clock, 20)
    assert "residual_transformer_open" in device.active
    raised = [c for c in hub.conditions if c["type"] == "residual_transformer_open"]
    assert [c["active"] for c in raised] == [True]
    await hub.stop()


async def test_lan_links_keep_flat_polling(tmp_path: Path) -> None:
    hub = StandInHub(tmp_path)
    link = RecordingLink()
    device = make_device(hub, link, poll_interval=1)
    assert not device.tiered and device.polling_info() == {"mode": "flat", "poll_interval": 1.0}
    await device.async_register_entities()
    assert await device.poll_once()
    assert link.take() == [FLAT, SETPOINTS]
    assert await device.poll_once()
    assert link.take() == [FLAT]
    # A LAN device that asks for tiers gets them; a DTU device may opt out.
    assert make_device(hub, RecordingLink(), status_interval=5).tiered
    assert make_device(hub, RecordingLink(), polling="tiered").tiered
    assert not make_device(hub, MeteredRecordingLink(), polling="flat").tiered
    await hub.stop()


async def test_interval_precedence(tmp_path: Path) -> None:
    hub = StandInHub(tmp_path)
    # built-in profile: 10 s / 5 min
    device = make_device(hub, MeteredRecordingLink())
    assert (device.status_interval, device.status_interval_source) == (10.0, "profile")
    assert (device.measure_interval, device.measure_interval_source) == (300.0, "profile")
    # the link (a DTU or the gsm section) over the profile, the device over both
    link = MeteredRecordingLink({"status_interval": 20.0, "measure_interval": 600.0})
    device = make_device(hub, link, measure_interval="15m")
    assert (device.status_interval, device.status_interval_source) == (20.0, "link")
    assert (device.measure_interval, device.measure_interval_source) == (900.0, "device")
    await hub.stop()


async def test_the_link_stretches_measurements_never_status(tmp_path: Path) -> None:
    hub = StandInHub(tmp_path)
    link, clock = MeteredRecordingLink(), Clock()
    device = make_device(hub, link, clock, status_interval=10, measure_interval=30)
    await device.async_register_entities()
    device.start()  # declares the schedule (the poll task itself is not what this tests)
    assert len(link.schedules) == 1
    schedule = link.schedules[0]
    assert schedule.status_reads == [STATUS] and schedule.measure_reads == [MEASURE]
    await device.stop()
    assert link.schedules == []

    device = make_device(hub, link, clock, status_interval=10, measure_interval=30)
    await device.async_register_entities()
    await at(device, clock, 0)
    link.take()
    schedule = device.schedule
    schedule.measure_scale = 3.0
    schedule.reason = "projected 85MB this month > budget 30MB"
    for callback_ in schedule.on_change:
        callback_()
    assert device.effective_measure_interval == 90
    reads = []
    for offset in range(10, 100, 10):
        await at(device, clock, offset)
        reads.append((offset, link.take()))
    assert [offset for offset, r in reads if MEASURE in r] == [90]
    assert all(STATUS in r for _offset, r in reads)  # status every 10 s throughout
    attrs = hub.states.get("binary_sensor.arcm_t_online").attributes
    assert attrs["measure_interval"] == 90 and "budget" in attrs["polling_reason"]
    info = device.polling_info()
    assert info["effective_measure_interval"] == 90 and info["status_interval"] == 10
    await hub.stop()


async def test_the_tiered_loop_runs_and_withdraws(tmp_path: Path) -> None:
    hub = StandInHub(tmp_path)
    link = MeteredRecordingLink({"status_interval": 0.02, "measure_interval": 0.1})
    device = make_device(hub, link)
    await device.async_register_entities()
    device.start()
    await wait_polls(device, 10, timeout=WAIT)
    assert device.tier_reads["status"] >= 10 and device.tier_reads["measure"] >= 1
    assert link.schedules == [device.schedule]
    await device.stop()
    assert link.schedules == []
    await hub.stop()


def test_arcm_ref_tiers_match_the_brief() -> None:
    profile = find_profile("arcm-ref")
    assert [(b.start, b.count) for b in profile.status_blocks] == [STATUS]
    assert [(b.start, b.count) for b in profile.measure_blocks] == [MEASURE]
    assert [(b.start, b.count) for b in profile.setpoint_blocks] == [SETPOINTS]
    assert [(b.start, b.count) for b in profile.info_blocks] == [INFO]
    assert (profile.status_interval, profile.measure_interval) == (10.0, 300.0)


@pytest.mark.parametrize(("old", "new", "words"), [
    ("status: [alarm_bits, fault_bits, relay_bits]", "status: [alarm_bits, fault_bitz]",
     "no register or bitfield is called 'fault_bitz'"),
    ("status: [alarm_bits, fault_bits, relay_bits]", "status: [fault_bits, relay_bits]",
     "alarm bitfield 'alarm_bits' must be in polling.status"),
])
def test_tier_errors_are_named(tmp_path: Path, old: str, new: str, words: str) -> None:
    text = (BUILTIN_DIR / "arcm-ref.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        find_profile(str(path))
    assert any(words in e and e.startswith(f"{path}:") for e in info.value.errors), \
        info.value.errors


def test_a_profile_may_move_a_value_into_the_status_tier(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "arcm-ref.yaml").read_text(encoding="utf-8").replace(
        "status: [alarm_bits, fault_bits, relay_bits]",
        "status: [residual_current, alarm_bits, fault_bits, relay_bits]")
    path = tmp_path / "leaky.yaml"
    path.write_text(text, encoding="utf-8")
    profile = find_profile(str(path))
    assert [(b.start, b.count) for b in profile.status_blocks] == [(0, 1), (32, 3)]
    assert [(b.start, b.count) for b in profile.measure_blocks] == [(1, 21)]


async def test_scheduled_flat_polls_send_the_next_request_before_publishing(
    tmp_path: Path,
) -> None:
    """The scheduler asks the next unit first, then the answer is published (states, then the
    poll listeners), so the line works while the hub decodes; a direct poll_once publishes
    before it returns."""
    import asyncio

    from hub.core.polling import _Periodic

    hub = StandInHub(tmp_path)
    order: list[str] = []

    class OrderedLink(RecordingLink):
        async def read_holding_registers(self, unit: int, address: int,
                                         count: int) -> list[int]:
            order.append(f"read {unit}")
            await asyncio.sleep(0)  # a real link suspends on its I/O
            return await super().read_holding_registers(unit, address, count)

    link = OrderedLink()
    devices = []
    for unit in (1, 2):
        conf = DEVICE_SCHEMA({"id": f"arcm-{unit}", "platform": "arcm", "poll_interval": 3600,
                              "link": {"unit": unit}})
        device = ArcmDevice(hub, conf, find_profile(conf["profile"]), link)
        await device.async_register_entities()
        devices.append(device)
    assert await devices[0].poll_once()  # direct: published when it returns
    assert hub.states.get("sensor.arcm_1_residual_current").state == "12"
    order.clear()
    published = asyncio.get_running_loop().create_future()

    def listener(device: ArcmDevice) -> None:
        state = hub.states.get(f"sensor.{device.id.replace('-', '_')}_residual_current")
        order.append(f"published {device.unit} {state.state if state else None}")
        if device is devices[1] and not published.done():
            published.set_result(None)

    for device in devices:
        device.add_poll_listener(listener)
        due = asyncio.get_running_loop().time()
        device._job = hub.links.scheduler(link).add(
            f"arcm {device.id}", _Periodic(device._poll_flat, 3600, due), due)
    await asyncio.wait_for(published, WAIT)
    reads_before_first_publish = order[:order.index("published 1 12")]
    assert "read 2" in reads_before_first_publish, order
    assert order.index("published 1 12") < order.index("published 2 12")
    for device in devices:
        await device.stop()
    await hub.stop()
