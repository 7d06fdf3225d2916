"""One shared Modbus link per host:port or serial line, on top of pymodbus's async clients.

Why a wrapper around pymodbus rather than handing its client to device plugins:

* One RS485 line (or one gateway socket) carries many unit ids; requests must go one at a time
  and in the order they were asked (an `asyncio.Lock` is FIFO), whichever plugin asks.
* Device plugins must not depend on pymodbus types: they get lists of ints or one of the
  `hub.core.links` errors, the same errors the GSM DTU transport raises.
* Retries, timeouts and reconnect backoff are ours, so a dead host costs one failed connect per
  backoff period instead of a connect timeout for every unit polled behind it, and a single
  silent unit never closes the socket its neighbours are using.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from hub.core.links import (
    LinkError,
    LinkExceptionResponse,
    LinkProtocolError,
    LinkTimeout,
    LinkUnavailable,
)

_LOGGER = logging.getLogger(__name__)

EXCEPTION_NAMES: dict[int, tuple[str, str]] = {
    1: ("非法功能码", "illegal function"),
    2: ("非法数据地址", "illegal data address"),
    3: ("非法数据值", "illegal data value"),
    4: ("从站设备故障", "server device failure"),
    5: ("已确认", "acknowledge"),
    6: ("从站设备忙", "server device busy"),
    8: ("存储奇偶校验错", "memory parity error"),
    10: ("网关路径不可用", "gateway path unavailable"),
    11: ("网关目标设备无响应", "gateway target device failed to respond"),
}

TRANSPORTS = ("modbus_tcp", "rtu_over_tcp", "modbus_rtu")


def link_key(config: dict[str, Any]) -> str:
    """The identity of the physical link: devices with the same key share one connection."""
    transport = config["transport"]
    if transport == "modbus_rtu":
        return f"modbus_rtu://{config['port']}"
    return f"{transport}://{config['host']}:{config.get('port', 502)}"


@dataclass
class LinkStats:
    """Counters for `voltwatch` diagnostics and the benchmark; cheap integer bumps only."""

    requests: int = 0
    ok: int = 0
    timeouts: int = 0
    exceptions: int = 0
    protocol_errors: int = 0
    connects: int = 0
    connect_failures: int = 0
    last_error: str | None = None
    by_unit_failures: dict[int, int] = field(default_factory=dict)


class _HoldingRegistersResponse(ReadHoldingRegistersResponse):
    """Function 3's answer, decoded with one `struct.unpack_from` instead of one per register.

    pymodbus 3.16 unpacks a register at a time: 7 µs for a detector's 35-register block against
    2 µs here, on every poll of every unit (a poll costs the hub ~100-160 µs in all). Same
    result, same errors; registered on each client with pymodbus's own `client.register`.
    """

    def decode(self, data: bytes) -> None:
        data_len = int(data[0])
        if data_len >= len(data):
            raise ModbusIOException(
                f"byte_count {data_len} > length of packet {len(data)}",
                function_code=self.function_code,
            )
        self.registers = list(struct.unpack_from(f">{data_len // 2}H", data, 1))


class PymodbusLink:
    """A `hub.core.links.ModbusLink` over pymodbus (TCP, RTU over TCP, or a serial port)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.transport: str = config["transport"]
        if self.transport not in TRANSPORTS:
            raise LinkError(f"Unknown Modbus transport {self.transport!r}")
        self.key = link_key(config)
        self.timeout = float(config.get("timeout", 1.0))
        self.retries = int(config.get("retries", 1))
        self.reconnect_min = float(config.get("reconnect_min", 0.5))
        self.reconnect_max = float(config.get("reconnect_max", 30.0))
        # After this many unanswered requests in a row (any unit), the socket is presumed
        # half-open and is reopened; a success from any unit resets the count.
        self.max_silent = int(config.get("max_silent_requests", 8))
        self.stats = LinkStats()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._lock = asyncio.Lock()
        self._backoff = self.reconnect_min
        self._next_connect = 0.0
        self._silent = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<PymodbusLink {self.key}>"

    # -- connection -----------------------------------------------------------------------
    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        cfg = self.config
        if self.transport == "modbus_rtu":
            client: Any = AsyncModbusSerialClient(
                cfg["port"],
                framer=FramerType.RTU,
                baudrate=int(cfg.get("baudrate", 9600)),
                bytesize=int(cfg.get("bytesize", 8)),
                parity=str(cfg.get("parity", "N")),
                stopbits=int(cfg.get("stopbits", 1)),
                timeout=self.timeout,
                retries=0,
                reconnect_delay=0,
                name=self.key,
            )
        else:
            client = AsyncModbusTcpClient(
                cfg["host"],
                port=int(cfg.get("port", 502)),
                framer=FramerType.RTU if self.transport == "rtu_over_tcp" else FramerType.SOCKET,
                timeout=self.timeout,
                retries=0,
                reconnect_delay=0,
                name=self.key,
            )
        # We decide when a connection is dead (see max_silent), not pymodbus.
        client.set_max_no_responses(1 << 30)
        client.register(_HoldingRegistersResponse)
        return client

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def _ensure_connected(self) -> Any:
        if self._closed:
            raise LinkUnavailable(f"{self.key}: link is closed")
        client = self._client
        if client is not None and client.connected:
            return client
        now = time.monotonic()
        if now < self._next_connect:
            raise LinkUnavailable(
                f"{self.key}: not connected, next attempt in {self._next_connect - now:.1f}s"
                f" ({self.stats.last_error or 'connect failed'})"
            )
        if client is not None:
            client.close()
        client = self._client = self._new_client()
        try:
            ok = await client.connect()
        except Exception as err:  # noqa: BLE001 - serial open errors come as various types
            ok = False
            self.stats.last_error = f"{type(err).__name__}: {err}"
        if not ok:
            self.stats.connect_failures += 1
            self._next_connect = time.monotonic() + self._backoff
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self.reconnect_max)
            reason = self.stats.last_error or "connect failed"
            self.stats.last_error = reason
            _LOGGER.warning("%s: cannot connect (%s); retrying in %.1fs", self.key, reason, delay)
            client.close()
            raise LinkUnavailable(f"{self.key}: cannot connect ({reason})")
        self.stats.connects += 1
        self.stats.last_error = None
        self._backoff = self.reconnect_min
        self._silent = 0
        _LOGGER.info("%s: connected", self.key)
        return client

    def _drop_connection(self, reason: str) -> None:
        _LOGGER.warning("%s: closing the connection (%s)", self.key, reason)
        if self._client is not None:
            self._client.close()
        self._next_connect = 0.0  # reconnect on the next request; backoff applies if that fails

    # -- requests -------------------------------------------------------------------------
    async def _execute(self, unit: int, what: Callable[[], str],
                       call: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run one request under the line lock, with retries; map every failure to LinkError.

        `what` describes the request for error messages; it is called only when something
        failed, so the hot path (a good answer) formats no text.
        """
        async with self._lock:
            attempts = self.retries + 1
            last: LinkError | None = None
            for _attempt in range(attempts):
                client = self._client
                if client is None or not client.connected:
                    client = await self._ensure_connected()
                self.stats.requests += 1
                try:
                    response = await call(client)
                except ModbusIOException:
                    # No (valid) answer within the timeout: CRC garbage, silence, wrong unit.
                    self.stats.timeouts += 1
                    self._silent += 1
                    last = LinkTimeout(f"{self.key} unit {unit}: no valid response to {what()} "
                                       f"within {self.timeout:g}s")
                    if self._silent >= self.max_silent and self.transport != "modbus_rtu":
                        self._drop_connection(f"{self._silent} requests unanswered")
                        self._silent = 0
                    continue
                except ConnectionException as err:
                    self.stats.last_error = str(err)
                    self._drop_connection(str(err))
                    last = LinkUnavailable(f"{self.key}: connection lost ({err})")
                    continue
                except TimeoutError:
                    self.stats.timeouts += 1
                    last = LinkTimeout(f"{self.key} unit {unit}: timeout on {what()}")
                    continue
                except ModbusException as err:
                    self.stats.protocol_errors += 1
                    raise LinkProtocolError(f"{self.key} unit {unit}: {what()}: {err}") from err
                self._silent = 0
                if response.isError():
                    code = int(getattr(response, "exception_code", 0) or 0)
                    self.stats.exceptions += 1
                    _zh, en = EXCEPTION_NAMES.get(code, ("未知异常", "unknown exception"))
                    raise LinkExceptionResponse(
                        f"{self.key} unit {unit}: {what()}: exception code {code} ({en})", code
                    )
                self.stats.ok += 1
                return response
            assert last is not None
            self.stats.by_unit_failures[unit] = self.stats.by_unit_failures.get(unit, 0) + 1
            self.stats.last_error = str(last)
            raise last

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        response = await self._execute(
            unit,
            lambda: f"read {count} registers at {address}",
            lambda client: client.read_holding_registers(address, count=count, device_id=unit),
        )
        registers: list[int] = response.registers
        if len(registers) != count:
            if len(registers) < count:
                self.stats.protocol_errors += 1
                raise LinkProtocolError(
                    f"{self.key} unit {unit}: short response: {len(registers)} of {count} "
                    f"registers at {address}"
                )
            registers = registers[:count]
        return registers

    async def write_register(self, unit: int, address: int, value: int) -> None:
        response = await self._execute(
            unit,
            lambda: f"write register {address}={value}",
            lambda client: client.write_register(address, value & 0xFFFF, device_id=unit),
        )
        echoed = getattr(response, "registers", None)
        if echoed and echoed[0] != value & 0xFFFF:
            # Some servers echo the register's new content instead of the request (a command
            # register that reads 0 again); the caller's read-back decides, not the echo.
            _LOGGER.debug("%s unit %d: write echo %s differs from %s", self.key, unit,
                          echoed[0], value)

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        await self._execute(
            unit,
            lambda: f"write {len(values)} registers at {address}",
            lambda client: client.write_registers(
                address, [v & 0xFFFF for v in values], device_id=unit
            ),
        )

    async def close(self) -> None:
        self._closed = True
        if self._client is not None:
            self._client.close()
            self._client = None
