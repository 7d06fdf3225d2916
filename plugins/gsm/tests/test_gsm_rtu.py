"""CRC-16/MODBUS and RTU framing, cross-checked against pymodbus and published vectors."""

from __future__ import annotations

import random

from pymodbus.framer import FramerRTU
from voltwatch_gsm import rtu
from voltwatch_gsm.settings import GsmSettings


def test_crc_matches_known_vector() -> None:
    # Read 1 holding register at 0 from unit 1: the frame every Modbus manual prints.
    assert rtu.read_request(1, 0, 1).hex() == "010300000001840a"
    assert rtu.crc_ok(bytes.fromhex("010300000001840a"))
    assert not rtu.crc_ok(bytes.fromhex("010300000001840b"))


def test_crc_agrees_with_pymodbus_on_random_frames() -> None:
    rng = random.Random(4)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 256)))
        ours = rtu.crc16(data)
        theirs = FramerRTU.compute_CRC(data)  # pymodbus returns the bytes swapped (wire order)
        assert ours.to_bytes(2, "little") == theirs.to_bytes(2, "big")


def test_request_builders() -> None:
    assert rtu.write_single_request(3, 64, 1) == rtu.with_crc(bytes.fromhex("0306004000 01"
                                                                             .replace(" ", "")))
    frame = rtu.write_multiple_request(2, 48, [500, 60])
    assert frame[:7] == bytes.fromhex("0210003000020 4".replace(" ", ""))
    assert frame[7:11] == bytes.fromhex("01f4003c")
    assert rtu.crc_ok(frame)


def test_reply_length() -> None:
    assert rtu.reply_length(b"\x01", rtu.READ_HOLDING) is None
    assert rtu.reply_length(b"\x01\x03", rtu.READ_HOLDING) is None
    assert rtu.reply_length(b"\x01\x03\x04", rtu.READ_HOLDING) == 9
    assert rtu.reply_length(b"\x01\x83", rtu.READ_HOLDING) == 5
    assert rtu.reply_length(b"\x01\x06", rtu.WRITE_SINGLE) == 8
    assert rtu.reply_length(b"\x01\x10", rtu.WRITE_MULTIPLE) == 8


def test_settings_defaults_and_hex_heartbeat() -> None:
    settings = GsmSettings.from_config({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 9502
    assert settings.heartbeat == b"ping"
    assert settings.heartbeat_timeout == 180.0
    assert settings.request_timeout == 2.0 and settings.retries == 1
    hexed = GsmSettings.from_config({"heartbeat_hex": "FE 01", "heartbeat_timeout": "2m",
                                     "registration_prefix": "AA55"})
    assert hexed.heartbeat == b"\xfe\x01"
    assert hexed.heartbeat_timeout == 120.0
    assert hexed.registration_prefix == b"\xaa\x55"
