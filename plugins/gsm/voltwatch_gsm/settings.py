"""The `gsm:` configuration section and the `gsm` link transport schema.

Why these defaults:

* `host: 127.0.0.1` - a fresh install must not open a port to the internet by surprise; a real
  site sets `host: 0.0.0.0` (or the public interface) on purpose.
* `heartbeat_timeout: 180s` - typical DTUs send a heartbeat every 60-120 s; 180 s tolerates
  one lost heartbeat at 60-90 s intervals without flapping `communication_lost`.
* `request_timeout: 2s`, `retries: 1` - a 2G round trip plus an RS485 answer is usually
  well under a second; one retry rides out a lost packet without doubling every poll.
* `budget: 30MB` - the "one yuan per device per month" IoT SIM plans carry a few tens of MB;
  1 MB = 1024 x 1024 bytes, as carriers bill.
* `traffic:` - the TCP/IP and cellular overhead the hub cannot see but the SIM bill counts;
  the numbers and their reasons are in docs/plugins/gsm.md ("Traffic model").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import voluptuous as vol

from hub.core.config import duration, port
from hub.core.ratelimit import Rate, rate

from .access import AUTH_OPEN, AUTH_POLICIES, MAX_KEY_BYTES

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


def dtu_key(value: Any) -> str:
    """A DTU's registration key: printable ASCII, 1-100 bytes (what DTUs accept)."""
    text = str(value)
    if not text.isascii() or not text.isprintable() or not 1 <= len(text) <= MAX_KEY_BYTES:
        raise vol.Invalid(f"a DTU key is 1-{MAX_KEY_BYTES} printable ASCII characters")
    return text


def dtu_id(value: Any) -> str:
    """An IMEI (15 digits) or ICCID (19-20 hex digits) as text; YAML may give an int."""
    text = str(value).strip()
    if not (_ID_PATTERNS[ID_IMEI].match(text) or _ID_PATTERNS[ID_ICCID].match(text)):
        raise vol.Invalid(f"expected a 15-digit IMEI or a 20-digit ICCID, got {value!r}")
    return text.upper()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
MB = 1024 * 1024


def data_size(value: Any) -> int:
    """`30MB`, `512KB`, `1GB` or a number of bytes, as bytes (1 MB = 1024 KB, as carriers bill).

    A bare number is bytes, not MB, so that a validated section validates again unchanged (the
    core validates configuration.yaml, then the plugin builds its settings from the result).
    """
    if isinstance(value, bool):
        raise vol.Invalid("expected a size such as 30MB")
    if isinstance(value, int | float):
        size = float(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise vol.Invalid(f"expected a size such as 30MB or 512KB, got {value!r}")
        size = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "mb").lower()]
    if size < 1024:
        raise vol.Invalid("a data budget below 1KB is not a plan (write sizes as 30MB)")
    return int(size)


def percent(value: Any) -> float:
    """`5%` or a fraction such as 0.05, as a fraction."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise vol.Invalid(f"expected a percentage such as 5%, got {value!r}") from None
    if not 0 <= number <= 10:
        raise vol.Invalid("expected a percentage between 0% and 1000%")
    return number


_INTERVAL = vol.All(duration, vol.Range(min=0.01, max=86400))

TRAFFIC_SCHEMA = vol.Schema(
    {
        # Bytes of IP + TCP headers per packet: IPv4 20 + TCP 20 (52 with TCP timestamps,
        # 60-72 on IPv6).
        vol.Optional("ip_overhead", default=40): vol.All(int, vol.Range(min=0, max=200)),
        # Pure ACK packets per request/reply exchange: the hub's ACK of the reply; the DTU's ACK
        # of the request rides on its reply (set 2 for DTUs that ACK at once).
        vol.Optional("acks_per_exchange", default=1): vol.All(vol.Coerce(float),
                                                              vol.Range(min=0, max=4)),
        # The hub's ACK of each heartbeat packet.
        vol.Optional("acks_per_heartbeat", default=1): vol.All(vol.Coerce(float),
                                                               vol.Range(min=0, max=4)),
        # Per (re)connection: SYN, SYN-ACK, ACK (60 + 60 + 40), FIN/ACK both ways (4 x 40).
        vol.Optional("connect_overhead", default=320): vol.All(int, vol.Range(min=0)),
        # On top of all that: TCP retransmissions, carrier rounding per session, DNS, PDP.
        vol.Optional("cellular_overhead", default="5%"): percent,
        # How often usage is written to the database (and at shutdown), never per frame.
        vol.Optional("flush_interval", default=60.0): vol.All(duration,
                                                               vol.Range(min=0.01, max=3600)),
        # The longest a budget may stretch the measurement interval to.
        vol.Optional("max_measure_interval", default=86400.0): _INTERVAL,
    }
)

DTU_SCHEMA = vol.Schema(
    {
        vol.Optional("budget"): data_size,
        vol.Optional("heartbeat_interval"): _INTERVAL,
        vol.Optional("heartbeat_timeout"): vol.All(duration, vol.Range(min=0.01, max=86400)),
        vol.Optional("status_interval"): _INTERVAL,
        vol.Optional("measure_interval"): _INTERVAL,
        # Sent right after the id in the registration packet (use !secret).
        vol.Optional("key"): dtu_key,
    }
)


def _dtu_map(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping of DTU id (IMEI/ICCID) to settings")
    out: dict[str, dict[str, Any]] = {}
    for key, entry in value.items():
        try:
            ident = dtu_id(key)
        except vol.Invalid as err:
            raise vol.Invalid(str(err), path=[key]) from None
        out[ident] = DTU_SCHEMA(entry or {})
    return out


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
        # Data budget per DTU per calendar month (hub time zone) and what the projection assumes
        # the DTUs send; tier intervals for the detectors behind every DTU (below a device's own).
        vol.Optional("budget", default="30MB"): data_size,
        vol.Optional("heartbeat_interval", default=60.0): _INTERVAL,
        vol.Optional("status_interval"): _INTERVAL,
        vol.Optional("measure_interval"): _INTERVAL,
        vol.Optional("traffic", default={}): TRAFFIC_SCHEMA,
        # Who may register (docs/plugins/gsm.md, "Registration keys"): open | allowlist | key.
        vol.Optional("auth", default=AUTH_OPEN): vol.In(AUTH_POLICIES),
        # Limits (docs/plugins/gsm.md, "Limits"): new connections per peer address (many DTUs
        # may share one carrier NAT address: keep it generous), packets and bytes per DTU.
        vol.Optional("connection_rate", default="1200/min"): rate,
        vol.Optional("packet_rate", default="50/s"): rate,
        vol.Optional("byte_rate", default="16384/s"): rate,
        # Per DTU: budget, heartbeat_interval, heartbeat_timeout, status/measure_interval.
        vol.Optional("dtus", default={}): _dtu_map,
        # Several workers on one PostgreSQL (docs/plugins/gsm.md, "Several workers"): how long
        # a worker's ownership of a DTU lasts without renewal (renewed every third of it).
        vol.Optional("owner_lease", default=30.0): vol.All(duration, vol.Range(min=0.1, max=3600)),
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
class TrafficSettings:
    """The overhead model and accounting knobs (`gsm.traffic`)."""

    ip_overhead: int = 40
    acks_per_exchange: float = 1.0
    acks_per_heartbeat: float = 1.0
    connect_overhead: int = 320
    cellular_overhead: float = 0.05
    flush_interval: float = 60.0
    max_measure_interval: float = 86400.0


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
    budget: int = 30 * MB
    heartbeat_interval: float = 60.0
    status_interval: float | None = None
    measure_interval: float | None = None
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    dtus: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth: str = AUTH_OPEN
    connection_rate: Rate = field(default_factory=lambda: rate("1200/min"))
    packet_rate: Rate = field(default_factory=lambda: rate("50/s"))
    byte_rate: Rate = field(default_factory=lambda: rate("16384/s"))
    owner_lease: float = 30.0

    def key_of(self, dtu_id: str) -> bytes | None:
        """The DTU's registration key as bytes, or None when it has none."""
        key = self.dtus.get(dtu_id, {}).get("key")
        return key.encode("ascii") if key else None

    @property
    def id_length(self) -> int:
        return ID_LENGTHS[self.id_type]

    def for_dtu(self, dtu_id: str, key: str) -> Any:
        """A per-DTU setting, else the section's (budget, heartbeat_*, *_interval)."""
        value = self.dtus.get(dtu_id, {}).get(key)
        return value if value is not None else getattr(self, key)

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
            budget=conf["budget"],
            heartbeat_interval=conf["heartbeat_interval"],
            status_interval=conf.get("status_interval"),
            measure_interval=conf.get("measure_interval"),
            traffic=TrafficSettings(**conf["traffic"]),
            dtus=conf["dtus"],
            auth=conf["auth"],
            connection_rate=conf["connection_rate"],
            packet_rate=conf["packet_rate"],
            byte_rate=conf["byte_rate"],
            owner_lease=conf["owner_lease"],
        )
