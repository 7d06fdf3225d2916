"""`voltwatch simulate modem`: a GSM modem on a pseudo-terminal, for tests and the bench.

It answers the AT commands of CONTRACTS §10 the way a real modem does (echo until ATE0,
`> ` prompt for AT+CMGS, Ctrl-Z, `+CMGS: <mr>`), records every message it is asked to send
(decoding the PDUs with its own decoder, written separately from the encoder in pdu.py so a
shared mistake cannot hide), delivers replies with `+CMTI` on demand (also as a multi-part
message, parts in any order, with an 8- or 16-bit reference), and fails on demand: `ERROR`,
`+CMS ERROR: <n>`, or silence; `vanish()` closes the port as an unplugged modem.

Delivery reports: once the hub has set `AT+CNMI=…,1,…` (ds=1), every segment it submits with
TP-SRR set is "delivered" and answered with `+CDS: <len>` and an SMS-STATUS-REPORT PDU
(TP-ST 0, or the status given to `report_next()`, e.g. 0x41 incompatible destination).

Tests run it in the hub's own event loop (`ModemSimulator.open()` returns the tty path
pyserial opens); the command line runs it standalone and prints the path, with a control
socket for replies and failures (`--control PATH`, JSON lines).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import tty
from dataclasses import dataclass, field
from typing import Any

_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~",
        0x3E: "]", 0x40: "|", 0x65: "€"}


def _septets_from_bits(data: bytes, skip_bits: int, count: int) -> list[int]:
    """Independent of pdu.unpack_septets: walks a bit string, LSB of each octet first."""
    bits = "".join(format(b, "08b")[::-1] for b in data)[skip_bits:]
    return [int(bits[i * 7:(i + 1) * 7][::-1], 2) for i in range(count)
            if len(bits[i * 7:(i + 1) * 7]) == 7]


def _gsm7_text(septets: list[int]) -> str:
    out, i = [], 0
    while i < len(septets):
        if septets[i] == 0x1B and i + 1 < len(septets):
            out.append(_EXT.get(septets[i + 1], "?"))
            i += 2
        else:
            out.append(_BASIC[septets[i]])
            i += 1
    return "".join(out)


@dataclass
class SubmitSegment:
    """One SMS-SUBMIT as the simulated network got it."""

    number: str
    text: str
    dcs: int
    udl: int
    concat: tuple[int, int, int] | None  # (ref, total, seq)
    units: int  # characters as the network counts them: septets or UCS2 code units
    status_report: bool = False  # TP-SRR: the sender wants a status report
    mr: int = 0  # the message reference the simulated network gave it (+CMGS: <mr>)


def decode_submit(pdu_hex: str) -> SubmitSegment:
    """Read an SMS-SUBMIT (with its SMSC prefix), as a network would."""
    data = bytes.fromhex(pdu_hex)
    pos = 1 + data[0]
    first = data[pos]
    if first & 0x03 != 0x01:
        raise ValueError(f"not an SMS-SUBMIT: {first:02X}")
    srr = bool(first & 0x20)
    pos += 2  # first octet, message reference
    digits, toa = data[pos], data[pos + 1]
    raw = data[pos + 2: pos + 2 + (digits + 1) // 2]
    number = "".join(f"{b & 0xF}{b >> 4}" if (b >> 4) != 0xF else f"{b & 0xF}" for b in raw)
    number = ("+" if toa == 0x91 else "") + number[:digits]
    pos += 2 + (digits + 1) // 2
    dcs = data[pos + 1]
    pos += 2
    vpf = (first >> 3) & 0x03
    pos += {0: 0, 2: 1, 1: 7, 3: 7}[vpf]
    udl = data[pos]
    ud = data[pos + 1:]
    concat = None
    header_len = 0
    if first & 0x40:
        header_len = ud[0] + 1
        if ud[1] == 0x00:
            concat = (ud[3], ud[4], ud[5])
    if dcs == 0x08:
        body = ud[header_len:udl]
        return SubmitSegment(number, body.decode("utf-16-be"), dcs, udl, concat, len(body) // 2,
                             srr)
    header_septets = -(-header_len * 8 // 7)
    septets = _septets_from_bits(ud, header_septets * 7, udl - header_septets)
    return SubmitSegment(number, _gsm7_text(septets), dcs, udl, concat, len(septets), srr)


def _address(number: str) -> bytes:
    international = number.startswith("+")
    digits = number.lstrip("+")
    padded = digits + ("F" if len(digits) % 2 else "")
    return bytes([len(digits), 0x91 if international else 0x81]) + bytes.fromhex(
        "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2)))


def _timestamp() -> bytes:
    ts = time.gmtime()
    return bytes(int(f"{v % 10}{v // 10 % 10}", 16) for v in (
        ts.tm_year % 100, ts.tm_mon, ts.tm_mday, ts.tm_hour, ts.tm_min, ts.tm_sec, 0))


def encode_deliver(sender: str, text: str,
                   concat: tuple[int, int, int] | None = None, ref16: bool = False) -> str:
    """An SMS-DELIVER PDU (with an empty SMSC prefix) for a reply from `sender`; `concat`
    (ref, total, seq) adds a concatenation header, IEI 08 (16-bit reference) when `ref16`."""
    header = b""
    if concat is not None:
        ref, total, seq = concat
        ie = (bytes([0x08, 4]) + ref.to_bytes(2, "big") if ref16
              else bytes([0x00, 3, ref & 0xFF])) + bytes([total, seq])
        header = bytes([len(ie)]) + ie
    if all(c in _BASIC and c != "\x1b" for c in text):
        septets = [_BASIC.index(c) for c in text]
        header_septets = -(-len(header) * 8 // 7)
        bits = "".join(format(b, "08b")[::-1] for b in header)
        bits += "0" * (header_septets * 7 - len(bits))  # fill to a septet boundary
        bits += "".join(format(s, "07b")[::-1] for s in septets)
        bits += "0" * (-len(bits) % 8)
        ud = bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8))
        dcs, udl = 0x00, header_septets + len(septets)
    else:
        ud = header + text.encode("utf-16-be")
        dcs, udl = 0x08, len(ud)
    first = 0x04 | (0x40 if header else 0)
    tpdu = bytes([first]) + _address(sender) + bytes([0x00, dcs]) + _timestamp() + bytes(
        [udl]) + ud
    return "00" + tpdu.hex().upper()


def encode_status_report(reference: int, recipient: str, status: int) -> str:
    """An SMS-STATUS-REPORT PDU (empty SMSC prefix): message `reference` to `recipient`."""
    tpdu = (bytes([0x06, reference & 0xFF]) + _address(recipient) + _timestamp()
            + _timestamp() + bytes([status & 0xFF]))
    return "00" + tpdu.hex().upper()


@dataclass
class SentMessage:
    number: str
    text: str
    segments: list[SubmitSegment] = field(default_factory=list)
    at: float = 0.0


class ModemSimulator:
    """One simulated modem on a pty pair; `path` is what the hub's `modem.port` names."""

    def __init__(self) -> None:
        self.master: int | None = None
        self.slave: int | None = None
        self.path: str | None = None
        self.echo = True
        self.mode = 0
        self.charset = "GSM"
        self.segments: list[SubmitSegment] = []
        self.sent: list[SentMessage] = []
        self.commands: list[str] = []
        self.cmgs_seen_at: list[float] = []
        self.storage: dict[int, str] = {}
        self.fail_queue: list[str] = []
        self.report_queue: list[int | None] = []
        self.reports: list[tuple[int, str, int]] = []  # (mr, number, TP-ST) as emitted
        self.cnmi_ds = 0
        #: commands answered with ERROR (an older modem: e.g. {"AT+CNMI=2,1,0,1,0"})
        self.refuse: set[str] = set()
        self._reply_ref = 0
        self._buffer = b""
        self._pending_cmgs: str | None = None
        self._mr = 0
        self._changed = asyncio.Event()
        self._partial: dict[tuple[str, int], list[SubmitSegment]] = {}

    # -- life -------------------------------------------------------------------------------
    def open(self, link: str | None = None) -> str:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)
        asyncio.get_running_loop().add_reader(self.master, self._readable)
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.path, link)
        return self.path

    def vanish(self) -> None:
        """The modem is unplugged: both ends close, the tty path disappears."""
        if self.master is not None:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
            self.master = None
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None

    close = vanish

    # -- test controls ----------------------------------------------------------------------
    def fail_next(self, how: str, count: int = 1) -> None:
        """Answer the next `count` AT+CMGS with `error`, `cms:<n>` or `silent`."""
        self.fail_queue.extend([how] * count)

    def report_next(self, status: int | None, count: int = 1) -> None:
        """The next `count` status reports say TP-ST `status` (0x41: incompatible
        destination, 0x46: expired, …); None withholds them (a network that never reports)."""
        self.report_queue.extend([status] * count)

    def inject_reply(self, sender: str, text: str) -> int:
        """A message arrives: stored, announced with +CMTI, read by AT+CMGR."""
        index = max(self.storage, default=0) + 1
        self.storage[index] = encode_deliver(sender, text)
        self._write(f'\r\n+CMTI: "SM",{index}\r\n')
        return index

    def inject_multipart(self, sender: str, parts: list[str], order: list[int] | None = None,
                         ref16: bool = False, reference: int | None = None) -> list[int]:
        """A multi-part message arrives: `parts` in the order `order` (1-based sequence
        numbers; leave some out for a set that never completes). Storage indices."""
        if reference is None:
            self._reply_ref += 1
            reference = (0x1200 if ref16 else 0) + self._reply_ref
        indices = []
        for seq in order or range(1, len(parts) + 1):
            index = max(self.storage, default=0) + 1
            self.storage[index] = encode_deliver(sender, parts[seq - 1],
                                                 (reference, len(parts), seq), ref16)
            self._write(f'\r\n+CMTI: "SM",{index}\r\n')
            indices.append(index)
        return indices

    async def wait_sent(self, count: int, timeout: float = 10.0) -> list[SentMessage]:
        async def until() -> list[SentMessage]:
            while len(self.sent) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.sent

        return await asyncio.wait_for(until(), timeout)

    async def wait_reports(self, count: int, timeout: float = 10.0
                           ) -> list[tuple[int, str, int]]:
        async def until() -> list[tuple[int, str, int]]:
            while len(self.reports) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.reports

        return await asyncio.wait_for(until(), timeout)

    # -- the wire ---------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        if self.master is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.master, text.encode("utf-8"))

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096) if self.master is not None else b""
        except OSError:
            return
        self._buffer += data
        while True:
            if self._pending_cmgs is not None:
                end = min((i for i in (self._buffer.find(b"\x1a"), self._buffer.find(b"\x1b"))
                           if i >= 0), default=-1)
                if end < 0:
                    return
                payload, terminator = self._buffer[:end], self._buffer[end:end + 1]
                self._buffer = self._buffer[end + 1:]
                cmd, self._pending_cmgs = self._pending_cmgs, None
                if terminator == b"\x1a":
                    self._submit(cmd, payload.decode("ascii", errors="replace").strip())
                continue
            end = self._buffer.find(b"\r")
            if end < 0:
                return
            line = self._buffer[:end].decode("ascii", errors="replace").strip()
            self._buffer = self._buffer[end + 1:].lstrip(b"\n")
            if line:
                self._command(line)

    def _ok(self, *lines: str) -> None:
        self._write("".join(f"\r\n{line}\r\n" for line in lines) + "\r\nOK\r\n")

    def _command(self, line: str) -> None:
        self.commands.append(line)
        if self.echo:
            self._write(line + "\r")
        upper = line.upper()
        if upper in self.refuse:
            self._write("\r\nERROR\r\n")
        elif upper in ("AT", "ATZ"):
            self._ok()
        elif upper in ("ATE0", "ATE1"):
            self.echo = upper == "ATE1"
            self._ok()
        elif upper.startswith("AT+CMGF="):
            self.mode = int(upper.split("=")[1])
            self._ok()
        elif upper.startswith("AT+CSCS="):
            self.charset = line.split("=", 1)[1].strip('"')
            self._ok()
        elif upper.startswith("AT+CNMI="):
            fields = upper.split("=", 1)[1].split(",")
            self.cnmi_ds = int(fields[3]) if len(fields) > 3 and fields[3].isdigit() else 0
            self._ok()
        elif upper.startswith("AT+CMEE"):
            self._ok()
        elif upper == "AT+CSQ":
            self._ok("+CSQ: 20,99")
        elif upper.startswith("AT+CMGS="):
            self.cmgs_seen_at.append(time.perf_counter())
            self._pending_cmgs = line
            self._write("\r\n> ")
        elif upper.startswith("AT+CMGR="):
            index = int(upper.split("=")[1])
            stored = self.storage.get(index)
            if stored is None:
                self._write("\r\n+CMS ERROR: 321\r\n")
            else:
                self._ok(f"+CMGR: 0,,{len(stored) // 2 - 1}", stored)
        elif upper.startswith("AT+CMGD="):
            self.storage.pop(int(upper.split("=")[1].split(",")[0]), None)
            self._ok()
        else:
            self._write("\r\nERROR\r\n")

    def _submit(self, cmd: str, payload: str) -> None:
        if self.fail_queue:
            how = self.fail_queue.pop(0)
            if how == "error":
                self._write("\r\nERROR\r\n")
            elif how.startswith("cms"):
                self._write(f"\r\n+CMS ERROR: {how.partition(':')[2] or 500}\r\n")
            return  # silent: no answer at all
        self._mr = (self._mr + 1) % 256
        if self.mode == 0:
            try:
                segment = decode_submit(payload)
            except (ValueError, IndexError):
                self._write("\r\n+CMS ERROR: 304\r\n")
                return
            segment.mr = self._mr
            self.segments.append(segment)
            self._collect(segment)
            if segment.status_report and self.cnmi_ds == 1:
                self._schedule_report(self._mr, segment.number)
        else:
            dest = cmd.split("=", 1)[1].strip('"')
            if self.charset == "UCS2":
                dest = bytes.fromhex(dest).decode("utf-16-be")
                text = bytes.fromhex(payload).decode("utf-16-be")
            else:
                text = payload
            segment = SubmitSegment(dest, text, 0, len(text), None, len(text))
            self.segments.append(segment)
            self._collect(segment)
        self._ok(f"+CMGS: {self._mr}")

    def _schedule_report(self, mr: int, number: str) -> None:
        """After the `+CMGS`/`OK`, the network's verdict comes as an unsolicited +CDS."""
        status = self.report_queue.pop(0) if self.report_queue else 0
        if status is None:
            return

        asyncio.get_running_loop().call_soon(self.emit_report, mr, number, status)

    def emit_report(self, mr: int, number: str, status: int = 0) -> None:
        """Send a `+CDS` status report for message reference `mr` now."""
        report = encode_status_report(mr, number, status)
        self.reports.append((mr, number, status))
        self._write(f"\r\n+CDS: {len(report) // 2 - 1}\r\n{report}\r\n")
        self._changed.set()

    def write_raw(self, text: str) -> None:
        """Put arbitrary bytes on the line (garbage, a broken report) for robustness tests."""
        self._write(text)

    def _collect(self, segment: SubmitSegment) -> None:
        if segment.concat is None:
            self.sent.append(SentMessage(segment.number, segment.text, [segment], time.time()))
        else:
            ref, total, _seq = segment.concat
            parts = self._partial.setdefault((segment.number, ref), [])
            parts.append(segment)
            if len(parts) == total:
                del self._partial[(segment.number, ref)]
                parts.sort(key=lambda s: s.concat[2] if s.concat else 0)
                self.sent.append(SentMessage(segment.number, "".join(p.text for p in parts),
                                             parts, time.time()))
        self._changed.set()


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--link", default=None,
                        help="also make this path a symlink to the pty (e.g. /tmp/modem)")
    parser.add_argument("--control", default=None,
                        help='unix socket for JSON lines: {"reply": {"from": "+86…", "text": "1"}}'
                             ', {"multipart": {"from": "+86…", "parts": ["…", "…"], '
                             '"order": [2, 1], "ref16": false}}'
                             ', {"fail": "error|cms:500|silent", "count": 1}'
                             ', {"report": 65, "count": 1} (TP-ST of the next status reports;'
                             ' null withholds them), {"vanish": true}')


async def show_sent(sim: ModemSimulator, prefix: str = "") -> None:
    """Print each SMS the simulated modem is handed, until cancelled."""
    shown = 0
    while True:
        await sim.wait_sent(shown + 1, timeout=3600 * 24)
        for message in sim.sent[shown:]:
            print(f"{prefix}SMS to {message.number} ({len(message.segments)} segment(s)): "
                  f"{message.text}", flush=True)
        shown = len(sim.sent)


async def simulate(args: argparse.Namespace) -> None:
    sim = ModemSimulator()
    path = sim.open(args.link)
    print(f"Simulated modem on {path}" + (f" (link {args.link})" if args.link else ""),
          flush=True)

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for raw in reader:
            try:
                order: dict[str, Any] = json.loads(raw)
                if "reply" in order:
                    sim.inject_reply(order["reply"]["from"], order["reply"]["text"])
                if "multipart" in order:
                    part = order["multipart"]
                    sim.inject_multipart(part["from"], list(part["parts"]), part.get("order"),
                                         bool(part.get("ref16", False)))
                if "fail" in order:
                    sim.fail_next(order["fail"], int(order.get("count", 1)))
                if "report" in order:
                    sim.report_next(order["report"], int(order.get("count", 1)))
                if order.get("vanish"):
                    sim.vanish()
                writer.write(b'{"ok": true}\n')
            except (ValueError, KeyError, TypeError) as err:
                writer.write(json.dumps({"ok": False, "error": str(err)}).encode() + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(control, args.control) if args.control else None
    try:
        await show_sent(sim)
    finally:
        if server is not None:
            server.close()
        sim.vanish()
