"""Modbus-RTU framing for the DTU socket: CRC-16/MODBUS, request builders, reply parsing.

Written here rather than borrowed from pymodbus's framer because the DTU stream interleaves
heartbeats, registration ids and garbage with RTU frames; the hub needs to decide byte by byte
whether the front of its buffer is a complete reply, a partial one or junk, which a framer
built for a clean serial line does not expose. The CRC is table driven (one lookup per byte),
cross-checked against pymodbus in the tests.
"""

from __future__ import annotations

import struct

READ_HOLDING = 0x03
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10
EXCEPTION_FLAG = 0x80

MAX_READ = 125  # registers per 03 request (Modbus limit: 250 data bytes)
MAX_WRITE = 123  # registers per 16 request
MAX_FRAME = 256  # an RTU ADU never exceeds 256 bytes


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    """A frame whose CRC covers itself leaves a remainder of zero."""
    return len(frame) >= 4 and crc16(frame) == 0


def read_request(unit: int, address: int, count: int) -> bytes:
    return with_crc(struct.pack(">BBHH", unit, READ_HOLDING, address, count))


def write_single_request(unit: int, address: int, value: int) -> bytes:
    return with_crc(struct.pack(">BBHH", unit, WRITE_SINGLE, address, value & 0xFFFF))


def write_multiple_request(unit: int, address: int, values: list[int]) -> bytes:
    body = struct.pack(">BBHHB", unit, WRITE_MULTIPLE, address, len(values), 2 * len(values))
    body += struct.pack(f">{len(values)}H", *(v & 0xFFFF for v in values))
    return with_crc(body)


def reply_length(buffer: bytes | bytearray, function: int) -> int | None:
    """Length of the reply at the front of `buffer` for a request of `function`.

    None while too few bytes have arrived to know. The caller has already checked that
    buffer[1] is `function` or its exception form.
    """
    if len(buffer) < 2:
        return None
    if buffer[1] == function | EXCEPTION_FLAG:
        return 5
    if function == READ_HOLDING:
        if len(buffer) < 3:
            return None
        return 5 + buffer[2]
    return 8  # 06 echoes the request; 16 answers address + quantity


def decode_registers(frame: bytes | bytearray) -> list[int]:
    """The register values of a complete, CRC-checked 03 reply."""
    count = frame[2] // 2
    return list(struct.unpack_from(f">{count}H", frame, 3))
