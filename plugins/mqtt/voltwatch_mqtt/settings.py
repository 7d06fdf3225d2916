"""The `mqtt:` configuration section, the `mqtt` link transport and the hub's client id.

Why these defaults:

* MQTT 3.1.1 with `clean_session: false`: the broker keeps the hub's subscriptions and queues
  QoS 1 messages while the hub is away (a restart, a network blip), and every broker and
  every cheap detector speaks 3.1.1. Mosquitto keeps such a session until
  `persistent_client_expiration` (never, by default). MQTT 5's session expiry buys nothing
  here that the broker setting does not.
* A *stable* client id: a persistent session belongs to a client id, so a random id per start
  would leave an orphaned session (and its queue) on the broker at every restart. Unless the
  configuration names one, the id is generated once and kept in the config directory.
* `command_timeout: 10s`: a battery detector on NB-IoT or a sleepy Wi-Fi link may take
  seconds to wake and answer; 10 s is what CONTRACTS' CommandLink defaults to.
* Reconnect backoff from 1 s doubling to 30 s: quick after a broker restart, yet a broker
  that stays down is not hammered.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import voluptuous as vol

from hub.core.config import duration, port
from hub.core.states import slugify

_LOGGER = logging.getLogger(__name__)

DOMAIN = "mqtt"
DEFAULT_PREFIX = "voltwatch"
CLIENT_ID_FILE = ".mqtt_client_id"
_TOPIC_LEVEL = re.compile(r"^[^#+$\x00][^#+\x00]*$")
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_MAX_PAYLOAD = 64 * 1024

TLS_SCHEMA = vol.Schema(
    {
        vol.Optional("enabled", default=False): bool,
        # CA bundle that signed the broker's certificate (default: the system's).
        vol.Optional("ca_file"): vol.All(str, vol.Length(min=1)),
        # Client certificate and key, when the broker asks for one.
        vol.Optional("cert_file"): vol.All(str, vol.Length(min=1)),
        vol.Optional("key_file"): vol.All(str, vol.Length(min=1)),
        # Only for a lab broker with a self-made certificate; never in the field.
        vol.Optional("insecure", default=False): bool,
    }
)


def topic_prefix(value: Any) -> str:
    """A plain topic path without wildcards: `voltwatch`, `site-1/voltwatch`."""
    text = str(value).strip().strip("/")
    if not text or not all(_TOPIC_LEVEL.match(level) for level in text.split("/")):
        raise vol.Invalid(f"expected a topic prefix without wildcards or '$', got {value!r}")
    return text


def share_group(value: Any) -> str:
    text = str(value)
    if not _GROUP.match(text):
        raise vol.Invalid(f"expected a group name of letters, digits, '-', '_', '.', got {value!r}")
    return text


MQTT_SCHEMA = vol.Schema(
    {
        vol.Optional("host", default="127.0.0.1"): vol.All(str, vol.Length(min=1)),
        vol.Optional("port", default=1883): port,
        vol.Optional("topic_prefix", default=DEFAULT_PREFIX): topic_prefix,
        vol.Optional("client_id"): vol.All(str, vol.Length(min=1, max=128)),
        vol.Optional("username"): str,
        vol.Optional("password"): str,
        vol.Optional("keepalive", default=60): vol.All(int, vol.Range(min=5, max=3600)),
        vol.Optional("shared_group"): share_group,
        vol.Optional("command_timeout", default=10.0): vol.All(
            duration, vol.Range(min=0.01, max=3600)
        ),
        vol.Optional("reconnect_min", default=1.0): vol.All(duration, vol.Range(min=0.01, max=60)),
        vol.Optional("reconnect_max", default=30.0): vol.All(
            duration, vol.Range(min=0.01, max=3600)
        ),
        vol.Optional("qos", default=1): vol.In([0, 1]),
        # Bytes; a larger message is dropped, counted (malformed_too_large) and logged with
        # its topic before it is decoded. Telemetry is a few hundred bytes.
        vol.Optional("max_payload", default=DEFAULT_MAX_PAYLOAD): vol.All(
            int, vol.Range(min=64, max=256 * 1024 * 1024)
        ),
        # Directory (relative to the config dir) for the broker's generated password and ACL
        # files: one user per MQTT device, each confined to its own topics.
        vol.Optional("broker_files"): vol.All(str, vol.Length(min=1)),
        # A file holding the broker's pid: after every rewrite of broker_files the hub sends
        # it SIGHUP, so Mosquitto reads the new files (same machine, a user allowed to).
        vol.Optional("broker_pid_file"): vol.All(str, vol.Length(min=1)),
        # Subscribe to $SYS/broker/log/# to see the broker's refusals (brokerlog.py).
        vol.Optional("broker_log", default=True): bool,
        # The broker's log file (relative to the config dir), tailed for its ACL denials,
        # which Mosquitto logs at debug level only, never on $SYS (brokerlog.py).
        vol.Optional("broker_log_file"): vol.All(str, vol.Length(min=1)),
        # Relay this worker's device states to the other workers on the broker and show
        # theirs (mirror.py). Default: on when `shared_group` splits the telemetry.
        vol.Optional("mirror_states"): vol.Any(None, bool),
        # How long local state changes are gathered into one relay batch (latest per entity).
        vol.Optional("mirror_interval", default=0.05): vol.All(
            duration, vol.Range(min=0.001, max=10)
        ),
        # TCP_NODELAY on the hub's socket: a lone small message (a command, a call forwarded
        # between workers, its answer) goes out at once instead of waiting for the broker's
        # delayed ACK (~40 ms per hop measured here); docs/plugins/mqtt.md, "Latency".
        vol.Optional("tcp_nodelay", default=False): bool,
        # TLS for the hub's own connection (docs/plugins/mqtt.md, "Security").
        vol.Optional("tls", default={}): TLS_SCHEMA,
    }
)

LINK_SCHEMA = vol.Schema(
    {
        vol.Required("transport"): "mqtt",
        vol.Optional("command_timeout"): vol.All(duration, vol.Range(min=0.01, max=3600)),
    }
)


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The validated section with the client id resolved."""

    host: str
    port: int
    topic_prefix: str
    client_id: str
    username: str | None
    password: str | None
    keepalive: int
    shared_group: str | None
    command_timeout: float
    reconnect_min: float
    reconnect_max: float
    qos: int
    max_payload: int = DEFAULT_MAX_PAYLOAD
    tls: dict[str, Any] | None = None
    broker_files: str | None = None
    broker_pid_file: str | None = None
    broker_log: bool = True
    broker_log_file: str | None = None
    mirror_states: bool = False
    mirror_interval: float = 0.05
    tcp_nodelay: bool = False

    @classmethod
    def from_config(
        cls, section: dict[str, Any] | None, config_dir: Path | None = None, hub_name: str = ""
    ) -> MqttSettings:
        conf = MQTT_SCHEMA(dict(section or {}))
        client_id = conf.get("client_id") or stable_client_id(config_dir, hub_name)
        return cls(
            host=conf["host"],
            port=conf["port"],
            topic_prefix=conf["topic_prefix"],
            client_id=client_id,
            username=conf.get("username"),
            password=conf.get("password"),
            keepalive=conf["keepalive"],
            shared_group=conf.get("shared_group"),
            command_timeout=conf["command_timeout"],
            reconnect_min=conf["reconnect_min"],
            reconnect_max=max(conf["reconnect_max"], conf["reconnect_min"]),
            qos=conf["qos"],
            max_payload=conf["max_payload"],
            tls=_tls_paths(conf["tls"], config_dir),
            broker_files=(str(Path(config_dir or ".") / conf["broker_files"])
                          if conf.get("broker_files") else None),
            broker_pid_file=(str(Path(config_dir or ".") / conf["broker_pid_file"])
                             if conf.get("broker_pid_file") else None),
            broker_log=conf["broker_log"],
            broker_log_file=(str(Path(config_dir or ".") / conf["broker_log_file"])
                             if conf.get("broker_log_file") else None),
            mirror_states=(bool(conf.get("shared_group")) if conf.get("mirror_states") is None
                           else conf["mirror_states"]),
            mirror_interval=conf["mirror_interval"],
            tcp_nodelay=conf["tcp_nodelay"],
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the hub's connection, or None for plain MQTT."""
        tls = self.tls
        if tls is None:
            return None
        context = ssl.create_default_context(cafile=tls.get("ca_file"))
        if tls.get("cert_file"):
            context.load_cert_chain(tls["cert_file"], tls.get("key_file"))
        if tls.get("insecure"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _tls_paths(tls: dict[str, Any], config_dir: Path | None) -> dict[str, Any] | None:
    """TLS is on when `enabled` or a CA is given; relative files are beside configuration.yaml."""
    if not (tls.get("enabled") or tls.get("ca_file")):
        return None
    out = dict(tls)
    for key in ("ca_file", "cert_file", "key_file"):
        if out.get(key) and config_dir is not None:
            out[key] = str(Path(config_dir) / out[key])
    return out


def stable_client_id(config_dir: Path | None, hub_name: str = "") -> str:
    """`vw-<hub slug>-<8 hex>`, generated once and kept in `<config dir>/.mqtt_client_id`.

    Two hubs sharing a broker (shared subscriptions) must differ, so the id carries random
    bits rather than only the hub's name. When the file cannot be written the id is derived
    from the config directory's path and the hub name: stable for this installation, and
    still distinct between installations.
    """
    slug = slugify(hub_name)[:10] if hub_name else "hub"
    if slug == "unnamed":
        slug = "hub"
    if config_dir is not None:
        path = Path(config_dir) / CLIENT_ID_FILE
        try:
            text = path.read_text(encoding="ascii").strip()
            if text:
                return text
        except OSError:
            pass
        client_id = f"vw-{slug}-{secrets.token_hex(4)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(client_id + "\n", encoding="ascii")
            return client_id
        except OSError as err:
            _LOGGER.warning("MQTT: cannot store the client id in %s (%s); deriving it", path, err)
    digest = hashlib.sha1(f"{config_dir}|{hub_name}".encode()).hexdigest()[:8]
    return f"vw-{slug}-{digest}"
