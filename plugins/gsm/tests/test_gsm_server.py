"""The DTU socket server over real loopback sockets (CONTRACTS §7)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from gsm_testkit import (
    IMEI_A,
    IMEI_B,
    close_harness,
    default_harness,
    device,
    make_harness,
    read_reply,
)
from voltwatch_gsm import rtu

from hub.core.links import LinkExceptionResponse, LinkTimeout, LinkUnavailable, ModbusLink


async def test_link_mode_registration_and_polling(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        sim = await harness.start_sim(IMEI_A, [1, 2])
        link = harness.link(IMEI_A, 1)
        assert isinstance(link, ModbusLink)
        assert harness.link(IMEI_A, 2) is link  # one link per DTU, shared by its units

        values = await link.read_holding_registers(1, 0, 22)
        assert 5 <= values[0] <= 30  # residual current, mA
        assert all(200 <= t <= 300 for t in values[1:5])  # 0.1 °C
        assert all(2100 <= v <= 2300 for v in values[5:8])  # 0.1 V

        await link.write_register(2, 48, 450)
        assert await link.read_holding_registers(2, 48, 1) == [450]
        await link.write_registers(1, 50, [90, 91, 92, 93])
        assert await link.read_holding_registers(1, 50, 4) == [90, 91, 92, 93]

        dtu = harness.server.dtus[IMEI_A]
        assert dtu.frames == 5 and dtu.crc_errors == 0 and dtu.garbage == 0
        assert sim.stats.bad_crc == 0  # every request the hub built had a valid CRC
        assert dtu.bytes_down > 0 and dtu.bytes_up > 0
        assert harness.hub.states.get(dtu.entity_id).state == "on"


async def test_data_mode_registration(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, gsm={"registration": "data"},
                           devices=[device("arcm-a1", IMEI_A, 1)])
    try:
        await h.start_sim(IMEI_A, [1], registration="data")
        link = h.link(IMEI_A, 1)
        for _ in range(3):
            assert len(await link.read_holding_registers(1, 0, 22)) == 22
        dtu = h.server.dtus[IMEI_A]
        assert dtu.frames == 3 and dtu.garbage == 0 and dtu.heartbeats == 1
    finally:
        await close_harness(h)


async def test_heartbeat_is_not_answered_and_not_a_frame(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        raw = await harness.raw(IMEI_A.encode())
        await raw.send(b"ping")
        await raw.send(b"pi")  # a heartbeat split across packets
        await raw.send(b"ngping")
        server = harness.server
        await server.wait_until(lambda: IMEI_A in server.dtus and server.dtus[IMEI_A].heartbeats == 3)
        dtu = server.dtus[IMEI_A]
        assert dtu.frames == 0 and dtu.garbage == 0

        read = asyncio.ensure_future(harness.link(IMEI_A).read_holding_registers(1, 0, 2))
        # The first bytes the DTU receives are the request: no heartbeat was ever answered.
        request = await raw.read_request()
        assert request == rtu.read_request(1, 0, 2)
        await raw.send(read_reply(request, [12, 250]))
        assert await read == [12, 250]


async def test_crc_error_counted_and_next_request_works(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        raw = await harness.raw(IMEI_A.encode())
        link = harness.link(IMEI_A)
        await harness.server.wait_until(lambda: harness.server.dtus[IMEI_A].connected)

        read = asyncio.ensure_future(link.read_holding_registers(1, 0, 1))
        request = await raw.read_request()
        good = read_reply(request, [12])
        await raw.send(good[:-1] + bytes([good[-1] ^ 0xFF]))  # corrupt CRC
        retry = await raw.read_request()  # the hub retries at once
        assert retry == request
        await raw.send(good)
        assert await read == [12]

        # Garbage between requests is counted and dropped too.
        await raw.send(b"\x00\xff\x13\x37garbage")
        dtu = harness.server.dtus[IMEI_A]
        await harness.server.wait_until(lambda: dtu.garbage == 1)

        read = asyncio.ensure_future(link.read_holding_registers(1, 5, 1))
        request = await raw.read_request()
        await raw.send(read_reply(request, [2201]))
        assert await read == [2201]
        assert dtu.crc_errors == 1 and dtu.frames == 2


async def test_reply_split_across_packets(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        raw = await harness.raw(IMEI_A.encode())
        await harness.server.wait_until(lambda: harness.server.dtus[IMEI_A].connected)
        read = asyncio.ensure_future(harness.link(IMEI_A).read_holding_registers(1, 0, 3))
        request = await raw.read_request()
        reply = read_reply(request, [1, 2, 3])
        await raw.send(reply[:2])
        await raw.send(reply[2:5])
        await raw.send(reply[5:])
        assert await read == [1, 2, 3]


async def test_exception_response(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        await harness.start_sim(IMEI_A, [1])
        link = harness.link(IMEI_A)
        with pytest.raises(LinkExceptionResponse) as err:
            await link.read_holding_registers(1, 120, 20)  # past the end of the map
        assert err.value.code == 2
        with pytest.raises(LinkExceptionResponse) as err:
            await link.write_register(1, 48, 5000)  # residual alarm threshold out of range
        assert err.value.code == 3
        assert await link.read_holding_registers(1, 48, 1) == [300]


async def test_timeout_then_retry(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        raw = await harness.raw(IMEI_A.encode())
        await harness.server.wait_until(lambda: harness.server.dtus[IMEI_A].connected)
        link = harness.link(IMEI_A)
        dtu = harness.server.dtus[IMEI_A]

        read = asyncio.ensure_future(link.read_holding_registers(1, 0, 1))
        first = await raw.read_request()  # ignored: the hub times out and retries
        second = await raw.read_request()
        assert first == second
        await raw.send(read_reply(second, [11]))
        assert await read == [11]
        assert dtu.timeouts == 1

        read = asyncio.ensure_future(link.read_holding_registers(1, 0, 1))
        await raw.read_request()
        await raw.read_request()
        with pytest.raises(LinkTimeout, match=IMEI_A):
            await read
        assert dtu.timeouts == 3


async def test_not_connected(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        with pytest.raises(LinkUnavailable, match=f"DTU {IMEI_A} not connected"):
            await harness.link(IMEI_A).read_holding_registers(1, 0, 1)


async def test_silence_raises_and_talking_clears_communication_lost(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, gsm={"heartbeat_timeout": 0.2},
                           devices=[device("arcm-a1", IMEI_A, 1), device("arcm-a2", IMEI_A, 2)])
    try:
        raw = await h.raw(IMEI_A.encode())
        await h.server.wait_until(lambda: h.server.dtus[IMEI_A].connected)
        dtu = h.server.dtus[IMEI_A]
        lost = await h.condition("dtu-860000000000001", "communication_lost", True)
        assert lost["kind"] == "fault" and lost["message"].startswith("通讯中断")
        assert lost["source"] == "gsm"
        behind = await h.condition("arcm-a1", "communication_lost", True)
        assert behind["source"] == "gsm"
        await h.condition("arcm-a2", "communication_lost", True)
        assert h.hub.states.get(dtu.entity_id).state == "off"
        assert not h.link(IMEI_A).available

        await raw.send(b"ping")
        await h.condition("dtu-860000000000001", "communication_lost", False)
        await h.condition("arcm-a1", "communication_lost", False)
        assert h.hub.states.get(dtu.entity_id).state == "on"
    finally:
        await close_harness(h)


async def test_configured_dtu_that_never_dials_in_is_lost(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, gsm={"heartbeat_timeout": 0.1},
                           devices=[device("arcm-a1", IMEI_A, 1)])
    try:
        await h.condition("arcm-a1", "communication_lost", True)
    finally:
        await close_harness(h)


async def test_reconnect_replaces_closed_socket(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        first = await harness.raw(IMEI_A.encode())
        server = harness.server
        await server.wait_until(lambda: server.dtus[IMEI_A].connected)
        first.close()
        await server.wait_until(lambda: not server.dtus[IMEI_A].connected)
        second = await harness.raw(IMEI_A.encode())
        await server.wait_until(lambda: server.dtus[IMEI_A].connected)
        dtu = server.dtus[IMEI_A]
        assert dtu.reconnects == 1 and dtu.impostors == 0

        read = asyncio.ensure_future(harness.link(IMEI_A).read_holding_registers(1, 0, 1))
        request = await second.read_request()
        await second.send(read_reply(request, [13]))
        assert await read == [13]


async def test_reconnect_replaces_socket_that_fails_probe(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        """A DTU whose old socket is half-open (no FIN seen) dials in again: the probe decides."""
        old = await harness.raw(IMEI_A.encode())
        server = harness.server
        await server.wait_until(lambda: server.dtus[IMEI_A].connected)
        old_peer = server.dtus[IMEI_A].peer
        new = await harness.raw(IMEI_A.encode())
        probe = await old.read_request()  # the old socket is probed ...
        assert probe == rtu.read_request(1, 0, 1)
        assert await old.read_request() == probe  # ... retried ...
        # ... and never answered: the newcomer takes over.
        assert await old.closed_by_hub()
        await server.wait_until(lambda: server.dtus[IMEI_A].peer != old_peer)
        dtu = server.dtus[IMEI_A]
        assert dtu.reconnects == 1 and dtu.impostors == 0 and dtu.timeouts == 2
        read = asyncio.ensure_future(harness.link(IMEI_A).read_holding_registers(1, 0, 1))
        request = await new.read_request()
        await new.send(read_reply(request, [14]))
        assert await read == [14]


async def test_impostor_refused_while_old_socket_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with default_harness(tmp_path) as harness:
        await harness.start_sim(IMEI_A, [1])
        server = harness.server
        legit_peer = server.dtus[IMEI_A].peer
        with caplog.at_level(logging.WARNING):
            impostor = await harness.raw(IMEI_A.encode())
            assert await impostor.closed_by_hub()
        event = await harness.condition("dtu-860000000000001", "impostor", True)
        assert event["kind"] == "event" and event["message"].startswith("疑似冒充")
        local = impostor.writer.get_extra_info("sockname")
        assert f"{local[0]}:{local[1]}" in caplog.text and "impostor" in caplog.text
        dtu = server.dtus[IMEI_A]
        assert dtu.impostors == 1 and dtu.reconnects == 0 and dtu.peer == legit_peer
        assert len(await harness.link(IMEI_A).read_holding_registers(1, 0, 22)) == 22


async def test_unknown_imei_is_pending_then_adopted(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        unknown = "861234567890123"
        raw = await harness.raw(unknown.encode())
        server = harness.server
        await server.wait_until(lambda: unknown in server.dtus and server.dtus[unknown].connected)
        entry = next(d for d in server.listing() if d["imei"] == unknown)
        assert entry["status"] == "pending" and entry["connected"] and entry["peer"]
        assert entry["connected_at"] and entry["last_seen"]
        assert harness.hub.states.get("binary_sensor.dtu_861234567890123_online") is None

        # An admin adds a device behind it: the DTU becomes known and gets its online sensor.
        await harness.hub.devices.async_upsert(**device("new-1", unknown, 1), source="api")
        await server.wait_until(lambda: server.dtus[unknown].known and server.dtus[unknown].entity_ready)
        state = harness.hub.states.get("binary_sensor.dtu_861234567890123_online")
        assert state is not None and state.state == "on"
        assert harness.hub.devices.get("dtu-861234567890123").project == "market-1"
        assert next(d for d in server.listing() if d["imei"] == unknown)["status"] == "known"
        raw.close()


async def test_two_dtus_with_same_unit_ids_kept_apart(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        await harness.start_sim(IMEI_A, [1])
        await harness.start_sim(IMEI_B, [1])
        link_a, link_b = harness.link(IMEI_A), harness.link(IMEI_B)
        assert link_a is not link_b
        await link_a.write_register(1, 48, 777)
        await link_b.write_register(1, 48, 555)
        results = await asyncio.gather(
            *(link.read_holding_registers(1, 48, 1) for link in (link_a, link_b) for _ in range(5))
        )
        assert results == [[777]] * 5 + [[555]] * 5


async def test_garbage_before_registration_closes_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with default_harness(tmp_path) as harness:
        await harness.start_sim(IMEI_A, [1])
        with caplog.at_level(logging.WARNING):
            garbage = await harness.raw(b"\x16\x03\x01\x00\xa5GET / HTTP/1.1\r\n")
            assert await garbage.closed_by_hub()
            oversized = await harness.raw(b"8" * 600)
            assert await oversized.closed_by_hub()
        assert "binary garbage before registration" in caplog.text
        assert "oversized packet before registration" in caplog.text
        assert harness.server.rejected == 2
        assert harness.server.dtus[IMEI_A].connected
        assert len(await harness.link(IMEI_A).read_holding_registers(1, 0, 22)) == 22


async def test_registration_timeout(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, gsm={"registration_timeout": 0.1})
    try:
        raw = await h.raw(b"86000")  # a partial id, then nothing
        assert await raw.closed_by_hub()
        assert h.server.rejected == 1 and not h.server.dtus
    finally:
        await close_harness(h)


async def test_registration_prefix_and_iccid(tmp_path: Path) -> None:
    iccid = "89860012345678901234"
    h = await make_harness(tmp_path, gsm={"id_type": "iccid", "registration_prefix": "AA55",
                                          "heartbeat_hex": "FE"},
                           devices=[device("arcm-c1", iccid, 1)])
    try:
        raw = await h.raw(b"\xaa\x55" + iccid.encode() + b"\xfe\xfe")
        await h.server.wait_until(lambda: iccid in h.server.dtus
                                  and h.server.dtus[iccid].heartbeats == 2)
        assert h.server.dtus[iccid].known
        read = asyncio.ensure_future(h.link(iccid).read_holding_registers(1, 0, 1))
        request = await raw.read_request()
        await raw.send(read_reply(request, [9]))
        assert await read == [9]
    finally:
        await close_harness(h)


async def test_simulator_drop_every_reconnects(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        await harness.start_sim(IMEI_A, [1], drop_every=0.05, reconnect_delay=0.01)
        server = harness.server
        await server.wait_until(lambda: server.dtus[IMEI_A].reconnects >= 2)
        dtu = server.dtus[IMEI_A]
        assert dtu.impostors == 0 and dtu.garbage == 0


async def test_hub_shutdown_does_not_report_dtus_offline(tmp_path: Path) -> None:
    async with default_harness(tmp_path) as harness:
        await harness.start_sim(IMEI_A, [1])
        entity_id = harness.server.dtus[IMEI_A].entity_id
        await harness.server.async_stop()
        await harness.server.wait_until(lambda: not harness.server.connections)
        assert harness.hub.states.get(entity_id).state == "on"
        assert not [c for c in harness.conditions if c["type"] == "communication_lost"]
