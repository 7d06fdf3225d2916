"""The `gsm:` configuration section and the `gsm` link transport schema.

Why these defaults:

* `host: 127.0.0.1` - a fresh install must not open a port to the internet by surprise; a real
  site sets `host: 0.0.0.0` (or the public interface) on purpose.
* `heartbeat_timeout: 180s` - typical DTUs send a heartbeat every 60-120 s; 180 s tolerates
  one lost heartbeat at 60-90 s intervals without flapping `communication_lost`.
* `request_timeout: 2s`, `retries: 1` - a 2G round trip plus an RS485 answer is usually
  well under a second; one retry rides out a lost packet without doubling every poll.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import voluptuous as vol

from hub.core.config import duration, port

DEFAULT_PORT = 9502
REGISTRATION_LINK = "link"
REGISTRATION_DATA = "data"
ID_IMEI = "imei"
ID_ICCID = "iccid"
ID_LENGTHS = {ID_IMEI: 15, ID_ICCID: 20}
_ID_PATTERNS = {ID_IMEI: re.compile(r"^\d{15}$"), ID_ICCID: re.compile(r"^[0-9A-Fa-f]{19,20}$")}


def hex_bytes(value: Any) -> str:
    """Hex text such as `FE 01` or `fe01`; kept as normalised lower-case hex."""
    text = re.sub(r"[\s:]", "", str(value)).lower()
    text = text.removeprefix("0x")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise vol.Invalid(f"expected hex bytes such as 'FE01', got {value!r}") from None
    return text


def ascii_text(value: Any) -> str:
    text = str(value)
    if not text.isascii():
        raise vol.Invalid("expected ASCII text (use heartbeat_hex for other bytes)")
    return text


def dtu_id(value: Any) -> str:
    """An IMEI (15 digits) or ICCID (19-20 hex digits) as text; YAML may give an int."""
    text = str(value).strip()
    if not (_ID_PATTERNS[ID_IMEI].match(text) or _ID_PATTERNS[ID_ICCID].match(text)):
        raise vol.Invalid(f"expected a 15-digit IMEI or a 20-digit ICCID, got {value!r}")
    return text.upper()


GSM_SCHEMA = vol.Schema(
    {
        vol.Optional("host", default="127.0.0.1"): vol.All(str, vol.Length(min=1)),
        vol.Optional("port", default=DEFAULT_PORT): port,
        vol.Optional("registration", default=REGISTRATION_LINK): vol.In(
            [REGISTRATION_LINK, REGISTRATION_DATA]
        ),
        vol.Optional("id_type", default=ID_IMEI): vol.In(list(ID_LENGTHS)),
        # Bytes some DTUs put before the id in their registration packet (hex).
        vol.Optional("registration_prefix", default=""): hex_bytes,
        vol.Exclusive("heartbeat", "heartbeat"): vol.All(ascii_text, vol.Length(min=1, max=64)),
        vol.Exclusive("heartbeat_hex", "heartbeat"): vol.All(hex_bytes, vol.Length(min=2, max=128)),
        vol.Optional("heartbeat_timeout", default=180.0): vol.All(
            duration, vol.Range(min=0.01, max=86400)
        ),
        vol.Optional("request_timeout", default=2.0): vol.All(duration, vol.Range(min=0.01, max=60)),
        vol.Optional("retries", default=1): vol.All(int, vol.Range(min=0, max=5)),
        vol.Optional("registration_timeout", default=30.0): vol.All(
            duration, vol.Range(min=0.01, max=3600)
        ),
        # Unknown DTUs kept for adoption; beyond this, the longest-offline one is forgotten.
        vol.Optional("max_pending", default=1000): vol.All(int, vol.Range(min=1)),
        # Register read on the old connection when a second one claims the same id.
        vol.Optional("probe_address", default=0): vol.All(int, vol.Range(min=0, max=65535)),
    }
)

LINK_SCHEMA = vol.Schema(
    {
        vol.Required("transport"): "gsm",
        vol.Required("imei"): dtu_id,
        vol.Optional("unit", default=1): vol.All(vol.Coerce(int), vol.Range(min=0, max=247)),
    }
)


@dataclass(frozen=True, slots=True)
class GsmSettings:
    """The validated section in the shape the server uses on its hot path (bytes, floats)."""

    host: str
    port: int
    registration: str
    id_type: str
    registration_prefix: bytes
    heartbeat: bytes
    heartbeat_timeout: float
    request_timeout: float
    retries: int
    registration_timeout: float
    max_pending: int
    probe_address: int

    @property
    def id_length(self) -> int:
        return ID_LENGTHS[self.id_type]

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> GsmSettings:
        conf = GSM_SCHEMA(dict(section or {}))
        if conf.get("heartbeat_hex"):
            heartbeat = bytes.fromhex(conf["heartbeat_hex"])
        else:
            heartbeat = conf.get("heartbeat", "ping").encode("ascii", "strict")
        return cls(
            host=conf["host"],
            port=conf["port"],
            registration=conf["registration"],
            id_type=conf["id_type"],
            registration_prefix=bytes.fromhex(conf["registration_prefix"]),
            heartbeat=heartbeat,
            heartbeat_timeout=conf["heartbeat_timeout"],
            request_timeout=conf["request_timeout"],
            retries=conf["retries"],
            registration_timeout=conf["registration_timeout"],
            max_pending=conf["max_pending"],
            probe_address=conf["probe_address"],
        )
