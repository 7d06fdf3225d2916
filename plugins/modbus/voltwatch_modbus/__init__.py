"""Voltwatch transport plugin `modbus`: Modbus TCP, Modbus RTU on a serial line, RTU over TCP.

Provides the link transports `modbus_tcp`, `modbus_rtu` and `rtu_over_tcp` for a device's
`link:` mapping. Device plugins never import this package: they call
`hub.links.acquire(device["link"])` and talk to whatever `hub.core.links.ModbusLink` comes back,
so the same detector plugin works over a GSM DTU (plugin `gsm`) unchanged.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from hub import hookimpl

from .link import TRANSPORTS, PymodbusLink, link_key

__all__ = ["LINK_SCHEMAS", "TRANSPORTS", "PymodbusLink", "link_key"]

_UNIT = vol.All(vol.Coerce(int), vol.Range(min=0, max=247))
_SECONDS = vol.All(vol.Coerce(float), vol.Range(min=0.01, max=600))

_COMMON = {
    vol.Required("transport"): vol.In(TRANSPORTS),
    vol.Optional("unit", default=1): _UNIT,
    # Per-request answer timeout; a detector on RS485 at 9600 baud answers in ~50 ms.
    vol.Optional("timeout", default=1.0): _SECONDS,
    vol.Optional("retries", default=1): vol.All(vol.Coerce(int), vol.Range(min=0, max=5)),
    vol.Optional("reconnect_min", default=0.5): _SECONDS,
    vol.Optional("reconnect_max", default=30.0): _SECONDS,
    vol.Optional("max_silent_requests", default=8): vol.All(vol.Coerce(int), vol.Range(min=1)),
}

_TCP = vol.Schema({
    **_COMMON,
    vol.Required("host"): vol.All(str, vol.Length(min=1)),
    vol.Optional("port", default=502): vol.All(vol.Coerce(int), vol.Range(min=1, max=65535)),
})

_RTU = vol.Schema({
    **_COMMON,
    vol.Required("port"): vol.All(str, vol.Length(min=1)),
    vol.Optional("baudrate", default=9600): vol.In(
        [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]
    ),
    vol.Optional("bytesize", default=8): vol.In([7, 8]),
    vol.Optional("parity", default="N"): vol.All(vol.Upper, vol.In(["N", "E", "O"])),
    vol.Optional("stopbits", default=1): vol.In([1, 2]),
})

LINK_SCHEMAS: dict[str, vol.Schema] = {
    "modbus_tcp": _TCP,
    "rtu_over_tcp": _TCP,
    "modbus_rtu": _RTU,
}


@hookimpl
def voltwatch_link_schemas() -> dict[str, vol.Schema]:
    return dict(LINK_SCHEMAS)


def _factory(transport: str) -> Any:
    schema = LINK_SCHEMAS[transport]

    def make(link_config: dict[str, Any]) -> PymodbusLink:
        # Links created from the API (not through check-config) still get their defaults.
        return PymodbusLink(schema(dict(link_config)))

    return make


@hookimpl
def voltwatch_link_factories(hub: Any) -> dict[str, Any]:
    return {transport: _factory(transport) for transport in TRANSPORTS}
