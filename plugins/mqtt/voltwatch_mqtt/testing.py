"""A private Mosquitto for tests, benchmarks and the demo, on a free loopback port.

Tests must never lean on a system broker (one may or may not run on 1883, with whatever
retained messages and sessions other programs left there), so each user of this module starts
its own `mosquitto` with a generated configuration in a temporary directory. Mosquitto 2.x
listens only on localhost and refuses anonymous clients unless told otherwise, hence the
explicit `listener` and `allow_anonymous` lines.

Other plugins (smoke) reuse this: `from voltwatch_mqtt.testing import MosquittoBroker`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

DEFAULT_BINARY = "/usr/sbin/mosquitto"


def find_mosquitto() -> str | None:
    """The mosquitto binary, or None when it is not installed (callers skip or degrade)."""
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    return shutil.which("mosquitto")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so a killed demo leaves no broker behind.

    Linux only (prctl PR_SET_PDEATHSIG); elsewhere the broker is stopped by `stop()` alone.
    The signal follows the *thread* that started the child, so start brokers from the main
    thread (not an executor thread) when relying on it.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """One mosquitto subprocess; `stop()` and `start()` again keep the same port.

    `persistence=True` makes the broker save sessions and queued QoS 1 messages to
    `directory` on stop, so a test can restart it and prove a persistent session survives.
    `extra` lines are appended to the configuration (e.g. `max_queued_messages 0`, or
    `password_file`/`acl_file`/`certfile` lines, which apply to the one listener);
    `anonymous=False` refuses clients without a user name. `log_topic=True` also publishes
    the broker's log to `$SYS/broker/log/#`, where the hub reads its refusals. While running,
    `pid_path` holds the broker's pid (for `mqtt.broker_pid_file`: SIGHUP reloads its files).
    """

    def __init__(
        self,
        directory: str | Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = False,
        extra: list[str] | None = None,
        binary: str | None = None,
        anonymous: bool = True,
        log_topic: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.persistence = persistence
        self.extra = list(extra or [])
        self.anonymous = anonymous
        self.log_topic = log_topic
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.pid_path = self.directory / "mosquitto.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Started as root, mosquitto drops to user `mosquitto`, who cannot write its
            # persistence file into our temporary directory: keep the starting user.
            lines.append("user root")
        if self.persistence:
            lines.append(f"persistence_location {self.directory}/")
            lines.append("autosave_interval 3600")
        if self.log_topic:
            lines += ["log_dest stderr", "log_dest topic"]
        lines += self.extra
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait until the port accepts connections (the bound is a failure limit)."""
        if self.running:
            return self
        self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        finally:
            log.close()
        self.pid_path.write_text(f"{self.process.pid}\n", encoding="ascii")
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"mosquitto did not accept on {self.host}:{self.port}: {self.log_tail()}"
                    ) from None
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file then) and wait for the exit."""
        process, self.process = self.process, None
        self.pid_path.unlink(missing_ok=True)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def refused_connect(broker: MosquittoBroker, user: str, password: str,
                    client_id: str = "impostor-1") -> tuple[str, int]:
    """A raw MQTT 3.1.1 CONNECT, so a test knows its own peer address (what the broker logs
    for a refused login); returns the peer and the CONNACK return code."""

    def field(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    body = (field("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
            + field(client_id) + field(user) + field(password))
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        host, port = sock.getsockname()[:2]
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = sock.recv(4)
    return f"{host}:{port}", connack[3]
