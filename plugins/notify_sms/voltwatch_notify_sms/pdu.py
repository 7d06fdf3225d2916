"""SMS PDUs (3GPP TS 23.040 / 23.038): SMS-SUBMIT to send, SMS-DELIVER to read replies.

Why PDU mode and not text mode: text mode cannot carry a concatenation header, so a long
alarm text would arrive as unrelated messages, and text-mode UCS2 support differs between
modems. In PDU mode we decide everything ourselves:

* GSM-7 (the default alphabet, with the 0x1B escape table) when every character fits, else
  UCS2 (UTF-16BE; Chinese always goes this way);
* one message up to 160 septets / 70 UCS2 units; beyond that, concatenated segments with an
  8-bit-reference UDH (IEI 00) of 6 octets, which leaves 153 septets (the header plus one fill
  bit take 7 septets) or 67 UCS2 units per segment. python-gsmmodem splits by 160 here and
  loses the tail of 307–320 character texts; the tests check those lengths.
* An escape pair (e.g. `€`, `[`) is never split across two segments, nor a UTF-16 surrogate
  pair, so each segment decodes on its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D,
            "]": 0x3E, "|": 0x40, "€": 0x65}
_BASIC_INDEX = {ch: i for i, ch in enumerate(GSM7_BASIC) if ch != "\x1b"}
_EXT_REVERSE = {v: k for k, v in GSM7_EXT.items()}
ESC = 0x1B

GSM7_SINGLE, GSM7_SEGMENT = 160, 153
UCS2_SINGLE, UCS2_SEGMENT = 70, 67
DCS_GSM7, DCS_UCS2 = 0x00, 0x08

_refs = itertools.count(1)


class PduError(ValueError):
    """A PDU that cannot be built (bad number) or read (truncated, unknown coding)."""


def is_gsm7(text: str) -> bool:
    return all(ch in _BASIC_INDEX or ch in GSM7_EXT for ch in text)


def gsm7_units(text: str) -> list[list[int]]:
    """Septets per character: one, or two for an escape-table character."""
    out = []
    for ch in text:
        if ch in _BASIC_INDEX:
            out.append([_BASIC_INDEX[ch]])
        elif ch in GSM7_EXT:
            out.append([ESC, GSM7_EXT[ch]])
        else:
            raise PduError(f"{ch!r} is not in the GSM 7-bit alphabet")
    return out


def ucs2_units(text: str) -> list[list[int]]:
    """UTF-16BE code units per character (a surrogate pair stays together)."""
    out = []
    for ch in text:
        data = ch.encode("utf-16-be")
        out.append([int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)])
    return out


def _chunks(units: list[list[int]], size: int) -> list[list[int]]:
    parts: list[list[int]] = [[]]
    for unit in units:
        if len(parts[-1]) + len(unit) > size:
            parts.append([])
        parts[-1].extend(unit)
    return parts


def split(text: str) -> tuple[int, list[list[int]]]:
    """(DCS, segments as septets or UCS2 code units) for `text`."""
    if is_gsm7(text):
        units = gsm7_units(text)
        total = sum(len(u) for u in units)
        return DCS_GSM7, _chunks(units, GSM7_SINGLE if total <= GSM7_SINGLE else GSM7_SEGMENT)
    units = ucs2_units(text)
    total = sum(len(u) for u in units)
    return DCS_UCS2, _chunks(units, UCS2_SINGLE if total <= UCS2_SINGLE else UCS2_SEGMENT)


def pack_septets(septets: list[int], fill_bits: int = 0) -> bytes:
    """Pack 7-bit values LSB first, after `fill_bits` zero bits (to align after a UDH)."""
    acc, bits, out = 0, fill_bits, bytearray()
    for septet in septets:
        acc |= (septet & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    value = int.from_bytes(data, "little") >> fill_bits
    return [(value >> (7 * i)) & 0x7F for i in range(count)]


def decode_gsm7(septets: list[int]) -> str:
    out, escape = [], False
    for septet in septets:
        if escape:
            out.append(_EXT_REVERSE.get(septet, " "))
            escape = False
        elif septet == ESC:
            escape = True
        else:
            out.append(GSM7_BASIC[septet])
    return "".join(out)


def encode_address(number: str) -> bytes:
    """TP-DA: digit count, type of address (0x91 international / 0x81 unknown), BCD swapped."""
    text = number.strip().replace(" ", "").replace("-", "")
    international = text.startswith("+")
    digits = text[1:] if international else text
    if not digits.isdigit() or not 3 <= len(digits) <= 20:
        raise PduError(f"invalid phone number {number!r}")
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), 0x91 if international else 0x81]) + bytes.fromhex(swapped)


def decode_address(data: bytes, offset: int) -> tuple[str, int]:
    """(number, next offset) of an OA/DA field; alphanumeric senders decoded as GSM-7."""
    count, toa = data[offset], data[offset + 1]
    octets = (count + 1) // 2
    raw = data[offset + 2: offset + 2 + octets]
    if toa & 0x70 == 0x50:  # alphanumeric
        text = decode_gsm7(unpack_septets(raw, count * 4 // 7))
        return text, offset + 2 + octets
    digits = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in raw)[:count].rstrip("F")
    return ("+" if toa & 0x70 == 0x10 else "") + digits, offset + 2 + octets


@dataclass(slots=True)
class SubmitPdu:
    """One segment ready for `AT+CMGS=<tpdu_length>`: hex with a `00` SMSC prefix."""

    hex: str
    tpdu_length: int


def encode_submit(number: str, text: str, reference: int | None = None,
                  validity_minutes: int | None = 24 * 60,
                  status_report: bool = False) -> list[SubmitPdu]:
    """SMS-SUBMIT PDUs for `text` to `number`, one per segment.

    `status_report` sets TP-SRR: the network then sends an SMS-STATUS-REPORT per segment
    (the modem shows it as `+CDS`), which is how a record becomes `delivered`.
    """
    address = encode_address(number)
    dcs, segments = split(text)
    concat = len(segments) > 1
    if concat and len(segments) > 255:
        raise PduError("text too long (more than 255 segments)")
    ref = (reference if reference is not None else next(_refs)) & 0xFF
    first = 0x01  # SMS-SUBMIT
    vp = b""
    if validity_minutes is not None:
        first |= 0x10  # relative validity period
        vp = bytes([_relative_vp(validity_minutes)])
    if concat:
        first |= 0x40  # UDHI
    if status_report:
        first |= 0x20  # TP-SRR
    out = []
    for index, segment in enumerate(segments, 1):
        udh = bytes([5, 0x00, 3, ref, len(segments), index]) if concat else b""
        if dcs == DCS_GSM7:
            header_septets = (len(udh) * 8 + 6) // 7 if udh else 0
            fill = header_septets * 7 - len(udh) * 8 if udh else 0
            # the fill bits are the low bits of the first octet after the header
            body = pack_septets(segment, fill)
            udl = header_septets + len(segment)
            ud = udh + body
        else:
            ud = udh + b"".join(u.to_bytes(2, "big") for u in segment)
            udl = len(ud)
        tpdu = bytes([first, 0x00]) + address + bytes([0x00, dcs]) + vp + bytes([udl]) + ud
        out.append(SubmitPdu(hex="00" + tpdu.hex().upper(), tpdu_length=len(tpdu)))
    return out


def _relative_vp(minutes: int) -> int:
    if minutes <= 720:
        return max(0, minutes // 5 - 1)
    if minutes <= 1440:
        return 143 + (minutes - 720) // 30
    if minutes <= 30 * 1440:
        return 166 + minutes // 1440
    return min(255, 192 + minutes // (7 * 1440))


@dataclass(slots=True)
class Deliver:
    """A received SMS-DELIVER: sender, text, concatenation info (ref, total, seq)."""

    sender: str
    text: str
    timestamp: str = ""
    concat: tuple[int, int, int] | None = None
    extra: dict[str, int] = field(default_factory=dict)


def _concat_info(header: bytes) -> tuple[int, int, int] | None:
    """(reference, total, sequence) from a UDH: IEI 00 (8-bit ref) or 08 (16-bit ref)."""
    concat = None
    i = 1
    while i + 1 < len(header):
        iei, length = header[i], header[i + 1]
        value = header[i + 2: i + 2 + length]
        if iei == 0x00 and length == 3 and len(value) == 3:
            concat = (value[0], value[1], value[2])
        elif iei == 0x08 and length == 4 and len(value) == 4:
            concat = (int.from_bytes(value[:2], "big"), value[2], value[3])
        i += 2 + length
    return concat


def decode_deliver(pdu_hex: str, with_smsc: bool = True) -> Deliver:
    """Read an SMS-DELIVER as `AT+CMGR` returns it in PDU mode."""
    try:
        data = bytes.fromhex(pdu_hex.strip())
        pos = 0
        if with_smsc:
            pos = 1 + data[0]
        first = data[pos]
        if first & 0x03 != 0x00:
            raise PduError(f"not an SMS-DELIVER (first octet {first:02X})")
        sender, pos = decode_address(data, pos + 1)
        dcs = data[pos + 1]
        scts = data[pos + 2: pos + 9]
        udl = data[pos + 9]
        ud = data[pos + 10:]
    except (IndexError, ValueError) as err:
        raise PduError(f"malformed PDU: {err}") from err
    timestamp = "".join(f"{b & 0x0F}{b >> 4}" for b in scts)
    concat = None
    header = b""
    if first & 0x40:
        if not ud or len(ud) < 1 + ud[0]:
            raise PduError("malformed PDU: user data header longer than the user data")
        header = ud[: 1 + ud[0]]
        concat = _concat_info(header)
    coding = dcs & 0x0C if dcs & 0xC0 == 0 else (0x08 if dcs & 0xF0 == 0xE0 else 0x00)
    if coding == 0x08:
        text = ud[len(header):udl].decode("utf-16-be", errors="replace")
    elif coding == 0x04:
        text = ud[len(header):udl].decode("latin-1")
    else:
        header_septets = (len(header) * 8 + 6) // 7
        fill = header_septets * 7 - len(header) * 8
        septets = unpack_septets(ud[len(header):], udl - header_septets, fill)
        text = decode_gsm7(septets)
    return Deliver(sender=sender, text=text, timestamp=timestamp, concat=concat)


#: TP-ST (TS 23.040 §9.2.3.15): what the network says happened to a message.
_ST_WORDS = {
    0x00: "received by the handset", 0x01: "forwarded, delivery unconfirmed",
    0x02: "replaced by the service centre",
    0x20: "congestion", 0x21: "recipient busy", 0x22: "no response from the recipient",
    0x23: "service rejected", 0x24: "quality of service not available",
    0x25: "error in the recipient's handset",
    0x40: "remote procedure error", 0x41: "incompatible destination",
    0x42: "connection rejected by the recipient", 0x43: "number not obtainable",
    0x44: "quality of service not available", 0x45: "no interworking available",
    0x46: "validity period expired", 0x47: "deleted by the sender",
    0x48: "deleted by the service centre", 0x49: "message does not exist",
    0x60: "congestion", 0x61: "recipient busy", 0x62: "no response from the recipient",
    0x63: "service rejected", 0x64: "quality of service not available",
    0x65: "error in the recipient's handset",
}


@dataclass(slots=True)
class StatusReport:
    """An SMS-STATUS-REPORT: which message (TP-MR, recipient) and what became of it."""

    reference: int
    recipient: str
    status: int

    @property
    def delivered(self) -> bool:
        """The transaction is complete (0x00-0x1F): the handset has it."""
        return self.status < 0x20

    @property
    def final(self) -> bool:
        """No more attempts (delivered, or a permanent / given-up error); 0x20-0x3F are
        temporary errors the service centre is still retrying."""
        return not 0x20 <= self.status < 0x40

    @property
    def reason(self) -> str:
        words = _ST_WORDS.get(self.status)
        if words is None:
            words = ("delivered" if self.delivered else "temporary error, still trying"
                     if not self.final else "not delivered")
        return f"{words} (TP-ST 0x{self.status:02X})"


def decode_status_report(pdu_hex: str, with_smsc: bool = True) -> StatusReport:
    """Read the SMS-STATUS-REPORT that follows `+CDS: <length>` in PDU mode."""
    try:
        data = bytes.fromhex(pdu_hex.strip())
        pos = 1 + data[0] if with_smsc else 0
        first = data[pos]
        if first & 0x03 != 0x02:
            raise PduError(f"not an SMS-STATUS-REPORT (first octet {first:02X})")
        reference = data[pos + 1]
        recipient, pos = decode_address(data, pos + 2)
        status = data[pos + 14]  # after TP-SCTS and TP-DT, 7 octets each
    except (IndexError, ValueError) as err:
        raise PduError(f"malformed status report PDU: {err}") from err
    return StatusReport(reference=reference, recipient=recipient, status=status)
