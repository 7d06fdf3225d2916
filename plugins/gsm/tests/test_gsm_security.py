"""Who may speak for a DTU (registration keys, policies) and limits at the socket (issue #14).

Real sockets on loopback against the real server; impostors and floods are raw sockets the
test drives, legitimate DTUs the plugin's simulator.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from gsm_testkit import IMEI_A, IMEI_B, close_harness, device, make_harness
from voltwatch_gsm import access

KEY_A = "k3y-A-0123456789"
DEVICES = [device("arcm-a1", IMEI_A, 1), device("arcm-b1", IMEI_B, 1)]


async def test_key_policy_admits_the_right_key_and_refuses_a_wrong_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await make_harness(
        tmp_path, {"auth": "key", "dtus": {IMEI_A: {"key": KEY_A}}}, DEVICES)
    try:
        server = harness.server
        await harness.start_sim(IMEI_A, [1], registration_key=KEY_A.encode())
        legit = server.dtus[IMEI_A]
        legit_peer = legit.peer
        entry = next(d for d in server.listing() if d["imei"] == IMEI_A)
        assert entry["auth"] == "key" and entry["weak"] is False and entry["verified"] is True
        await server.wait_until(lambda: legit.entity_ready)
        state = harness.hub.states.get(legit.entity_id)
        assert state.attributes["registration"] == "key" and state.attributes["weak"] is False

        with caplog.at_level(logging.WARNING):
            wrong = await harness.raw(IMEI_A.encode() + b"k3y-A-0123456780")
            assert await wrong.closed_by_hub()
        event = await harness.condition("dtu-860000000000001", "impostor", True)
        peer = wrong.writer.get_extra_info("sockname")
        peer_text = f"{peer[0]}:{peer[1]}"
        assert event["message"].startswith("疑似冒充") and peer_text in event["message"]
        assert peer_text in caplog.text and IMEI_A in caplog.text and "bad_key" in caplog.text
        # The live socket was never touched: no probe, same peer, still answers.
        assert legit.peer == legit_peer and legit.connected and legit.reconnects == 0
        assert legit.requests == 0
        assert len(await harness.link(IMEI_A).read_holding_registers(1, 0, 22)) == 22
        stats = server.stats()
        assert stats["gsm_refused_bad_key_total"] == 1 and stats["gsm_refused_total"] == 1
        assert legit.refused == 1
        assert server.refusals.recent[-1]["peer"] == peer_text
        assert server.refusals.recent[-1]["claimed"] == IMEI_A

        # Someone retrying in a loop: every attempt refused and counted, one event (no storm).
        for _ in range(3):
            again = await harness.raw(IMEI_A.encode() + b"x" * len(KEY_A))
            assert await again.closed_by_hub()
        await harness.hub.bus.async_drain()
        assert server.refusals.counts[access.REFUSED_BAD_KEY] == 4 and legit.refused == 4
        assert len([c for c in harness.conditions if c["type"] == "impostor"]) == 1
    finally:
        await close_harness(harness)


async def test_a_missing_key_is_refused_when_registration_times_out(tmp_path: Path) -> None:
    harness = await make_harness(
        tmp_path, {"auth": "open", "registration_timeout": 0.3,
                   "dtus": {IMEI_A: {"key": KEY_A}}}, DEVICES)
    try:
        # IMEI alone (a legacy DTU, or someone who read the label): the key never comes.
        bare = await harness.raw(IMEI_A.encode())
        assert await bare.closed_by_hub()
        assert harness.server.refusals.counts[access.REFUSED_BAD_KEY] == 1
        assert IMEI_A not in harness.server.dtus or not harness.server.dtus[IMEI_A].connected
        await harness.condition("dtu-860000000000001", "impostor", True)
    finally:
        await close_harness(harness)


async def test_key_policy_refuses_unknown_ids_and_ids_without_a_key(tmp_path: Path) -> None:
    harness = await make_harness(
        tmp_path, {"auth": "key", "dtus": {IMEI_A: {"key": KEY_A}}}, DEVICES)
    try:
        server = harness.server
        unknown = await harness.raw(b"861234567890123")
        keyless = await harness.raw(IMEI_B.encode())
        assert await unknown.closed_by_hub() and await keyless.closed_by_hub()
        assert server.refusals.counts[access.REFUSED_UNKNOWN] == 1
        assert server.refusals.counts[access.REFUSED_NO_KEY_CONFIGURED] == 1
        assert "861234567890123" not in server.dtus  # not even kept as pending
        assert not server.dtus[IMEI_B].connected
    finally:
        await close_harness(harness)


async def test_allowlist_admits_known_ids_only(tmp_path: Path) -> None:
    harness = await make_harness(tmp_path, {"auth": "allowlist"}, DEVICES)
    try:
        server = harness.server
        unknown = await harness.raw(b"861234567890123")
        assert await unknown.closed_by_hub()
        assert server.refusals.counts[access.REFUSED_UNKNOWN] == 1
        await harness.start_sim(IMEI_B, [1])
        entry = next(d for d in server.listing() if d["imei"] == IMEI_B)
        assert entry["connected"] and entry["weak"] is True and entry["auth"] == "open"
    finally:
        await close_harness(harness)


async def test_open_policy_keeps_contract_and_flags_dtus_without_key_weak(tmp_path: Path) -> None:
    harness = await make_harness(tmp_path, {"dtus": {IMEI_A: {"key": KEY_A}}}, DEVICES)
    try:
        server = harness.server
        unknown = "861234567890123"
        await harness.raw(unknown.encode())  # CONTRACTS §7: an unknown id is kept as pending
        await server.wait_until(lambda: unknown in server.dtus and server.dtus[unknown].connected)
        await harness.start_sim(IMEI_A, [1], registration_key=KEY_A.encode())
        stats = server.stats()
        assert stats["gsm_dtus_weak"] == 1  # B: known, no key (A has one; pending don't count)
        assert stats["gsm_refused_total"] == 0
    finally:
        await close_harness(harness)


async def test_key_in_front_of_every_packet_in_data_mode(tmp_path: Path) -> None:
    harness = await make_harness(
        tmp_path, {"registration": "data", "dtus": {IMEI_A: {"key": KEY_A}}}, DEVICES)
    try:
        await harness.start_sim(IMEI_A, [1], registration="data",
                                registration_key=KEY_A.encode())
        assert len(await harness.link(IMEI_A).read_holding_registers(1, 0, 22)) == 22
        assert harness.server.dtus[IMEI_A].garbage == 0
    finally:
        await close_harness(harness)


async def test_connection_rate_per_peer_address(tmp_path: Path) -> None:
    harness = await make_harness(tmp_path, {"connection_rate": "3/min"}, DEVICES)
    try:
        server = harness.server
        raws = [await harness.raw() for _ in range(5)]
        assert await raws[3].closed_by_hub() and await raws[4].closed_by_hub()
        await server.wait_until(lambda: len(server.connections) == 3)
        assert server.refusals.counts[access.REFUSED_RATE] == 2
        assert server.stats()["gsm_refused_connection_rate_total"] == 2
    finally:
        await close_harness(harness)


async def test_a_flooding_dtu_never_delays_another_dtus_alarm(tmp_path: Path) -> None:
    """B registers and then sends garbage as fast as TCP lets it; A's alarm is still read.

    Every poll of A keeps the default request timeout (2 s, one retry): a flood that starved
    the event loop would fail them. B is throttled (reading paused), counted, and its
    log lines are capped.
    """
    harness = await make_harness(tmp_path, {"packet_rate": "50/s", "byte_rate": "4096/s",
                                            "request_timeout": 2.0}, DEVICES)
    stop = asyncio.Event()

    async def flood() -> None:
        raw = await harness.raw(IMEI_B.encode())
        await server.wait_until(lambda: IMEI_B in server.dtus and server.dtus[IMEI_B].connected)
        chunk = b"\xff" * 65536
        while not stop.is_set():
            raw.writer.write(chunk)
            await raw.writer.drain()

    try:
        server = harness.server
        sim = await harness.start_sim(IMEI_A, [1])
        flooder = asyncio.ensure_future(flood())
        await server.wait_until(lambda: server.throttled > 0)
        sim.units[1].raise_alarm(600)
        link = harness.link(IMEI_A)
        for _ in range(20):
            alarm_bits = (await link.read_holding_registers(1, 32, 1))[0]
            assert alarm_bits & 1  # residual current over: the alarm lands
            assert len(await link.read_holding_registers(1, 0, 22)) == 22
        assert server.dtus[IMEI_B].throttled > 0 and server.stats()["gsm_throttled_total"] > 0
        stop.set()
        flooder.cancel()
        await asyncio.gather(flooder, return_exceptions=True)
    finally:
        stop.set()
        await close_harness(harness)



async def test_bytes_dropped_from_a_flood_count_against_the_data_budget(tmp_path: Path) -> None:
    """The hub drops a flooding DTU's packets unread, but the SIM carried them and the carrier
    bills them: the month's usage counts them, apart from the bytes the hub used."""
    harness = await make_harness(tmp_path, {"byte_rate": "4096/s"}, DEVICES)
    try:
        server = harness.server
        raw = await harness.raw(IMEI_B.encode())
        await server.wait_until(lambda: IMEI_B in server.dtus and server.dtus[IMEI_B].connected)
        dtu = server.dtus[IMEI_B]
        flood = b"\xff" * 12000  # more than the byte rate's burst: dropped
        await raw.send(flood)
        sent = len(IMEI_B) + len(flood)
        await server.wait_until(lambda: dtu.bytes_up + dtu.dropped_bytes == sent)
        assert dtu.dropped_bytes > 0 and dtu.throttled > 0

        server.traffic.settle()
        month = server.traffic.entry(IMEI_B).month_usage()
        assert month.up + month.dropped == sent and month.dropped == dtu.dropped_bytes
        report = server.traffic.report(IMEI_B)["month"]
        assert report["dropped"] == dtu.dropped_bytes
        # Billed: payload, dropped bytes and overhead, plus the cellular percentage.
        assert report["total"] == round((month.up + month.down + month.dropped
                                         + month.overhead) * 1.05)
        stats = server.stats()
        assert stats["gsm_bytes_dropped_month"] == dtu.dropped_bytes
        assert stats["gsm_dropped_bytes_total"] == dtu.dropped_bytes
    finally:
        await close_harness(harness)
