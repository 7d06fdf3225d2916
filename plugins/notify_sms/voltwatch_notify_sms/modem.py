"""An AT-command GSM modem on a serial port (CONTRACTS §10), over pyserial-asyncio.

One command at a time: a modem interleaves nothing, so every command takes the lock, writes,
and reads lines until its final result (`OK`, `ERROR`, `+CMS ERROR: n`, `+CME ERROR: n`) or
its timeout. Unsolicited lines (`+CMTI: "SM",3` for a new SMS) can arrive at any moment,
also in the middle of another command's answer; the reader takes them out of the stream and
handles them after the current command (read with `AT+CMGR`, then delete with `AT+CMGD`).
Parts of a multi-part reply are put back together (reassembly.py) before they are handed on.

Delivery reports: every SMS-SUBMIT asks for a status report (TP-SRR) and `AT+CNMI=2,1,0,1,0`
has the modem pass each SMS-STATUS-REPORT straight to us as `+CDS: <length>` followed by the
PDU (no storage, no acknowledgement needed with the default `AT+CSMS=0`). A modem that refuses
that CNMI setting gets `AT+CNMI=2,1,0,0,0` and no reports; records then stay `sent`.

The port can vanish (USB modem unplugged, pty closed): the reader sees EOF or an error, the
modem is marked unavailable at once (so the core fails over without waiting for a send to
time out), and a supervisor reopens it with backoff. A health check (`AT`) every
`health_interval` catches a modem that is present but hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import serial_asyncio

from hub.core.tasks import cancel_and_wait

from . import pdu
from .reassembly import Reassembler

_LOGGER = logging.getLogger(__name__)

_FINAL = re.compile(r"^(OK|ERROR|\+CMS ERROR: ?(\d+)|\+CME ERROR: ?(.+)|NO CARRIER)$")
_CMTI = re.compile(r'^\+CMTI: ?"?([A-Z]+)"?, ?(\d+)$')
_CDS_PDU = re.compile(r"^\+CDS: ?(\d+)$")  # PDU mode: the PDU is the next line
_CDS_TEXT = re.compile(r"^\+CDS: ?(\d+), ?(\d+), ?\"?([^\",]*)\"?, ?(\d*), ?\"[^\"]*\", ?\"[^\"]*\", ?(\d+)")
CNMI_REPORTS = "AT+CNMI=2,1,0,1,0"
CNMI_NO_REPORTS = "AT+CNMI=2,1,0,0,0"
CTRL_Z = b"\x1a"
ESCAPE = b"\x1b"

IncomingHandler = Callable[[str, str], Awaitable[None]]
ReportHandler = Callable[[pdu.StatusReport], Awaitable[None]]


class ModemError(Exception):
    """The modem answered ERROR / +CMS ERROR, or did not answer in time, or is gone."""

    def __init__(self, reason: str, code: int | None = None, gone: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.gone = gone


class Modem:
    def __init__(self, port: str, baudrate: int = 115200, *, command_timeout: float = 10.0,
                 send_timeout: float = 60.0, health_interval: float = 30.0,
                 reconnect_max: float = 30.0, mode: str = "pdu",
                 on_incoming: IncomingHandler | None = None,
                 on_report: ReportHandler | None = None, status_reports: bool = True,
                 multipart_timeout: float = 600.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self.command_timeout = command_timeout
        self.send_timeout = send_timeout
        self.health_interval = health_interval
        self.reconnect_max = reconnect_max
        self.mode = mode
        self.on_incoming = on_incoming
        self.on_report = on_report
        #: asked for (config); `reports_enabled` says whether the modem accepted AT+CNMI ds=1
        self.status_reports = status_reports
        self.reports_enabled = False
        self.reports_received = 0
        self.bad_reports = 0
        self.reassembler = Reassembler(multipart_timeout)
        self.multipart_dropped = asyncio.Event()  # set on each dropped incomplete set
        self._expiry: asyncio.TimerHandle | None = None
        #: the last health check (the init commands at open count as one): None before any
        self.healthy: bool | None = None
        self.checked_at: float | None = None
        self.connected = False
        self.last_error: str | None = f"{port} not opened yet"
        self.sent_segments = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._prompt = asyncio.Event()
        self._read_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._incoming: list[tuple[str, Any]] = []  # ("read", index) | ("report", line)
        self._cds_next = False
        self._incoming_wake = asyncio.Event()
        self._incoming_task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.connected_event = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._supervisor = loop.create_task(self._supervise(), name=f"modem {self.port}")
        self._incoming_task = loop.create_task(self._incoming_loop(),
                                               name=f"modem {self.port} incoming")

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for task in (self._supervisor, self._incoming_task):
            await cancel_and_wait(task)
        await self._close()

    async def _supervise(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._open()
                backoff = 0.2
            except Exception as err:  # noqa: BLE001 - absent port: keep trying
                self.last_error = f"cannot open {self.port}: {err}"
                self._checked(False)
                _LOGGER.warning("Modem %s", self.last_error)
                await self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.reconnect_max)
                continue
            # healthy: check now and then until the port goes away or stops answering
            while self.connected:
                try:
                    await asyncio.wait_for(self._lost.wait(), self.health_interval)
                except TimeoutError:
                    try:
                        await self.command("AT")
                        self._checked(True)
                    except ModemError as err:
                        self.last_error = f"health check of {self.port} failed: {err.reason}"
                        self._checked(False)
                        _LOGGER.warning("Modem %s", self.last_error)
                        break
            await self._close()
            await asyncio.sleep(backoff)

    async def _open(self) -> None:
        self._lost.clear()
        self._cds_next = False  # a report cut off by a lost port is not the next line
        self._lines = asyncio.Queue()
        self._reader, self._writer = await serial_asyncio.open_serial_connection(
            url=self.port, baudrate=self.baudrate)
        self._read_task = asyncio.get_running_loop().create_task(
            self._read_loop(self._reader), name=f"modem {self.port} reader")
        self.connected = True  # the init commands below need the reader
        try:
            await self.command("AT")
            await self.command("ATE0")
            if self.mode == "pdu":
                try:
                    await self.command("AT+CMGF=0")
                except ModemError:
                    _LOGGER.warning("Modem %s refuses PDU mode; using text mode", self.port)
                    self.mode = "text"
            if self.mode == "text":
                await self.command("AT+CMGF=1")
            self.reports_enabled = False
            if self.status_reports:
                try:
                    await self.command(CNMI_REPORTS)
                    self.reports_enabled = self.mode == "pdu"
                except ModemError:
                    _LOGGER.warning("Modem %s refuses delivery reports (%s)", self.port,
                                    CNMI_REPORTS)
            if not self.reports_enabled:
                await self.command(CNMI_NO_REPORTS)
        except ModemError:
            self.connected = False
            raise
        self.last_error = None
        self._checked(True)
        self.connected_event.set()
        _LOGGER.info("Modem %s ready (%s mode)", self.port, self.mode)

    async def _close(self) -> None:
        self.connected = False
        self.connected_event.clear()
        if self._read_task is not None:
            await cancel_and_wait(self._read_task)
            self._read_task = None
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self._lines.put_nowait(None)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        try:
            while True:
                chunk = await reader.read(1024)
                if not chunk:
                    raise ConnectionError("port closed")
                buffer += chunk
                while True:
                    stripped = buffer.lstrip(b"\r\n")
                    if stripped.startswith(b">"):
                        self._prompt.set()
                        buffer = stripped[1:].lstrip(b" ")
                        continue
                    end = buffer.find(b"\r\n")
                    if end < 0:
                        break
                    line = buffer[:end].decode("utf-8", errors="replace").strip()
                    buffer = buffer[end + 2:]
                    if line:
                        self._line(line)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the port vanished
            self.last_error = f"port lost: {self.port}: {type(err).__name__}: {err}"
            _LOGGER.warning("Modem %s", self.last_error)
            self.connected = False
            self._checked(False)
            self.connected_event.clear()
            self._lines.put_nowait(None)
            self._lost.set()

    def _checked(self, ok: bool) -> None:
        self.healthy = ok
        self.checked_at = time.time()

    def _line(self, line: str) -> None:
        if self._cds_next:  # the PDU of a `+CDS: <length>` line
            self._cds_next = False
            self._unsolicited("report", line)
            return
        match = _CMTI.match(line)
        if match:
            self._unsolicited("read", int(match.group(2)))
            return
        if line.startswith("+CDS:"):
            if _CDS_PDU.match(line):
                self._cds_next = True
            else:
                self._unsolicited("report", line)
            return
        self._lines.put_nowait(line)

    def _unsolicited(self, what: str, arg: Any) -> None:
        self._incoming.append((what, arg))
        self._incoming_wake.set()

    # -- commands ---------------------------------------------------------------------------
    async def command(self, cmd: str, timeout: float | None = None) -> list[str]:
        async with self._lock:
            return await self._command(cmd, timeout)

    async def _command(self, cmd: str, timeout: float | None = None,
                       payload: bytes | None = None) -> list[str]:
        if not self.connected or self._writer is None:
            raise ModemError(f"modem unavailable ({self.last_error})", gone=True)
        while not self._lines.empty():  # stale lines of an earlier, timed-out command
            self._lines.get_nowait()
        self._prompt.clear()
        self._writer.write(cmd.encode("ascii") + b"\r")
        wait = timeout or self.command_timeout
        if payload is not None:
            try:
                await asyncio.wait_for(self._prompt.wait(), wait)
            except TimeoutError:
                self._writer.write(ESCAPE)
                raise ModemError(f"no '>' prompt for {cmd} within {wait:g} s") from None
            self._writer.write(payload + CTRL_Z)
            wait = self.send_timeout if timeout is None else timeout
        lines: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ModemError(f"no answer to {cmd.split('=')[0]} within {wait:g} s")
            try:
                line = await asyncio.wait_for(self._lines.get(), remaining)
            except TimeoutError:
                raise ModemError(f"no answer to {cmd.split('=')[0]} within {wait:g} s") from None
            if line is None:
                raise ModemError(f"modem unavailable ({self.last_error})", gone=True)
            if line == cmd:  # echo (before ATE0 took effect)
                continue
            final = _FINAL.match(line)
            if final is None:
                lines.append(line)
                continue
            if line == "OK":
                return lines
            code = int(final.group(2)) if final.group(2) else None
            raise ModemError(line, code=code)

    async def send_sms(self, number: str, text: str) -> list[int]:
        """Send one text (all its segments, in order); the message references."""
        refs = []
        if self.mode == "pdu":
            for part in pdu.encode_submit(number, text, status_report=self.reports_enabled):
                async with self._lock:
                    lines = await self._command(f"AT+CMGS={part.tpdu_length}",
                                                payload=part.hex.encode("ascii"))
                refs.append(_reference(lines))
                self.sent_segments += 1
            return refs
        # text mode: UCS2 hex for anything outside ASCII, no concatenation header
        async with self._lock:
            if all(ord(c) < 128 for c in text):
                await self._command('AT+CSCS="GSM"')
                body, dest = text.encode("ascii"), number
            else:
                await self._command('AT+CSCS="UCS2"')
                body = text.encode("utf-16-be").hex().upper().encode("ascii")
                dest = number.encode("utf-16-be").hex().upper()
            lines = await self._command(f'AT+CMGS="{dest}"', payload=body)
        self.sent_segments += 1
        return [_reference(lines)]

    # -- incoming ---------------------------------------------------------------------------
    async def _incoming_loop(self) -> None:
        while True:
            await self._incoming_wake.wait()
            self._incoming_wake.clear()
            while self._incoming:
                what, arg = self._incoming.pop(0)
                try:
                    if what == "report":
                        await self._report(arg)
                    else:
                        await self._read_incoming(arg)
                except ModemError as err:
                    _LOGGER.warning("Modem %s: reading SMS %s failed: %s", self.port, arg,
                                    err.reason)
                except Exception:
                    _LOGGER.exception("Modem %s: unsolicited %s %r", self.port, what, arg)

    async def _report(self, line: str) -> None:
        """A `+CDS` status report: decoded and handed on; a bad one is counted and logged."""
        try:
            report = parse_cds(line, self.mode)
        except (pdu.PduError, ValueError) as err:
            self.bad_reports += 1
            _LOGGER.warning("Modem %s: unreadable status report %r: %s", self.port,
                            line[:80], err)
            return
        self.reports_received += 1
        _LOGGER.info("Modem %s: status report for message %d to %s: %s", self.port,
                     report.reference, report.recipient, report.reason)
        if self.on_report is not None:
            await self.on_report(report)

    async def _read_incoming(self, index: int) -> None:
        async with self._lock:
            lines = await self._command(f"AT+CMGR={index}")
            with contextlib.suppress(ModemError):
                await self._command(f"AT+CMGD={index}")
        sender, text, concat = parse_cmgr(lines, self.mode)
        if concat is not None:
            whole = self.reassembler.add(sender, concat, text)
            self._arm_expiry()
            if whole is None:
                _LOGGER.debug("SMS part %d/%d from %s (reference %d) kept", concat[2],
                              concat[1], sender, concat[0])
                return
            text = whole
        _LOGGER.info("SMS from %s: %r", sender, text[:60])
        if self.on_incoming is not None:
            await self.on_incoming(sender, text)

    def _arm_expiry(self) -> None:
        """A timer for the oldest incomplete set, so a lost part is noticed without new
        traffic."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        due = self.reassembler.next_expiry()
        if due is None:
            return
        delay = max(0.0, due - self.reassembler.clock())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self.reassembler.expire():
            self.multipart_dropped.set()
        self._arm_expiry()

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "connected": self.connected, "mode": self.mode,
                "last_error": self.last_error, "sent_segments": self.sent_segments,
                "delivery_reports": self.reports_enabled,
                "reports_received": self.reports_received, "bad_reports": self.bad_reports,
                "multipart_waiting": len(self.reassembler),
                "multipart_dropped": self.reassembler.dropped}


def _reference(lines: list[str]) -> int:
    for line in lines:
        if line.startswith("+CMGS:"):
            return int(line.split(":", 1)[1].strip().split(",")[0])
    raise ModemError("no +CMGS reference in the answer")


def parse_cmgr(lines: list[str], mode: str
               ) -> tuple[str, str, tuple[int, int, int] | None]:
    """(sender, text, concatenation (ref, total, seq) or None) of an `AT+CMGR` answer."""
    header = next((i for i, line in enumerate(lines) if line.startswith("+CMGR:")), None)
    if header is None or header + 1 >= len(lines):
        raise ModemError(f"unexpected +CMGR answer: {lines!r}")
    if mode == "pdu":
        message = pdu.decode_deliver(lines[header + 1])
        return message.sender, message.text, message.concat
    fields = [f.strip('"') for f in lines[header].split(":", 1)[1].split(",")]
    sender = fields[1] if len(fields) > 1 else ""
    return sender, "\n".join(lines[header + 1:]), None


def parse_cds(line: str, mode: str) -> pdu.StatusReport:
    """A status report: the PDU line after `+CDS: <len>` (PDU mode), or the text-mode
    `+CDS: <fo>,<mr>,<ra>,<tora>,<scts>,<dt>,<st>` line."""
    if not line.startswith("+CDS:"):
        return pdu.decode_status_report(line)
    match = _CDS_TEXT.match(line)
    if match is None:
        raise ValueError("not a text-mode +CDS line")
    number = match.group(3)
    if match.group(4) == "145" and not number.startswith("+"):
        number = "+" + number
    return pdu.StatusReport(reference=int(match.group(2)), recipient=number,
                            status=int(match.group(5)))
