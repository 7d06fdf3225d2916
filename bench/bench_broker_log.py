"""What seeing the broker's ACL denials costs: Mosquitto's CPU with and without debug logging.

Mosquitto 2.0.11 logs `Denied PUBLISH ...` at debug level only, so `mqtt.broker_log_file`
needs `log_type debug` and `log_dest file` (docs/security.md, "Refusals at the broker"):
every message then writes a few debug lines to the file. This runs the same load twice
against a private Mosquitto, each its own process so /proc tells their CPU apart:

* (a) baseline: the default log types (error, warning, notice, information) to the topic;
* (b) debug: the same plus `log_type subscribe`, `log_type debug` and `log_dest file`, with
  the hub's tail (`BrokerLogTail`, in this process) reading the file once a second.

Load: `BROKER_LOG_BENCH_CLIENTS` `mosquitto_pub -l` publishers (default 20) sending QoS 1
telemetry at `BROKER_LOG_BENCH_RATE` msg/s in all (3000) and one `mosquitto_sub` taking all of
it (the hub's role), for `BROKER_LOG_BENCH_WINDOW` seconds (20) after a 3 s warm-up. Reported: broker
CPU % in both runs (the ratio is the cost), log bytes per second, the tail's CPU % and the
messages delivered (a run that did not reach the offered rate says so).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result
from voltwatch_mqtt.brokerlog import BrokerLog, BrokerLogTail
from voltwatch_mqtt.testing import MosquittoBroker

CLIENTS = int(os.environ.get("BROKER_LOG_BENCH_CLIENTS", "20"))
RATE = float(os.environ.get("BROKER_LOG_BENCH_RATE", "3000"))
WINDOW = float(os.environ.get("BROKER_LOG_BENCH_WINDOW", "20"))
WARMUP = 3.0
TICKS = os.sysconf("SC_CLK_TCK")

PAYLOAD = b'{"values": {"smoke_level": 1, "battery": 97}}'


class Load:
    """`mosquitto_pub -l` publishers (C, QoS 1) fed lines at the offered rate by this process,
    and one `mosquitto_sub` taking everything (the hub's role) into a file: its size over the
    payload's line length is the count delivered."""

    def __init__(self, broker: MosquittoBroker, directory: Path) -> None:
        self.out = directory / "delivered"
        args = ["-h", broker.host, "-p", str(broker.port), "-q", "1"]
        self.sub = subprocess.Popen(
            ["mosquitto_sub", *args, "-i", "bench-hub", "-t", "voltwatch/dev/+/telemetry"],
            stdout=self.out.open("wb"), stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        self.pubs = [subprocess.Popen(
            ["mosquitto_pub", *args, "-i", f"bench-{i}", "-l",
             "-t", f"voltwatch/dev/bench-{i}/telemetry"],
            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL) for i in range(CLIENTS)]
        self.sent = 0
        self.start = time.monotonic()

    def pump(self, until: float) -> None:
        """Write lines to the publishers at RATE until `until` (monotonic)."""
        while (now := time.monotonic()) < until:
            due = int((now - self.start) * RATE) - self.sent
            for _ in range(due):
                pub = self.pubs[self.sent % CLIENTS]
                assert pub.stdin is not None
                pub.stdin.write(PAYLOAD + b"\n")
                self.sent += 1
            for pub in self.pubs:
                assert pub.stdin is not None
                pub.stdin.flush()
            time.sleep(0.01)

    def delivered(self) -> int:
        return _size(self.out) // (len(PAYLOAD) + 1)

    def stop(self) -> None:
        for process in (*self.pubs, self.sub):
            process.terminate()
            process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(directory: Path, debug: bool) -> dict[str, float]:
    log_file = directory / "broker.log"
    extra = ["log_type error", "log_type warning", "log_type notice", "log_type information"]
    if debug:
        extra += ["log_type subscribe", "log_type debug", f"log_dest file {log_file}"]
    broker = MosquittoBroker(directory, extra=extra)
    # log_dest topic only (not stderr): the baseline is the shipped setup of docs/plugins/mqtt.md.
    broker.extra.insert(0, "log_dest topic")
    with broker:
        assert broker.process is not None
        load = Load(broker, directory)
        tail = BrokerLogTail(log_file, BrokerLog("voltwatch")) if debug else None
        try:
            load.pump(time.monotonic() + WARMUP)
            if tail is not None:
                tail.poll()  # opens at the end, as the hub does
            cpu0, n0, size0 = cpu_seconds(broker.process.pid), load.delivered(), _size(log_file)
            tail_cpu, t0 = 0.0, time.monotonic()
            while (elapsed := time.monotonic() - t0) < WINDOW:
                load.pump(time.monotonic() + 1.0)
                if tail is not None:
                    c = time.process_time()
                    tail.poll()
                    tail_cpu += time.process_time() - c
            cpu = cpu_seconds(broker.process.pid) - cpu0
            n = load.delivered() - n0
            size = _size(log_file) - size0
        finally:
            load.stop()
    return {"cpu": 100 * cpu / elapsed, "rate": n / elapsed, "log_bytes": size / elapsed,
            "tail_cpu": 100 * tail_cpu / elapsed}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="vw-bench-brokerlog-") as tmp:
        base = measure(Path(tmp) / "baseline", debug=False)
        debug = measure(Path(tmp) / "debug", debug=True)
    for label, numbers in (("default logging", base), ("debug logging", debug)):
        print(f"broker log, {label}: " + ", ".join(f"{k} {v:,.2f}" for k, v in numbers.items()),
              file=sys.stderr)
    offered = f"offered {RATE:,.0f} msg/s"
    return [
        Result("broker log: msg/s delivered, debug logging", debug["rate"], "msg/s",
               base["rate"], "same load, default logging", offered,
               debug["rate"] >= 0.95 * RATE),
        Result("broker log: Mosquitto CPU %, debug logging to a file", debug["cpu"], "%",
               base["cpu"], "default logging CPU %", "the cost (ratio)"),
        Result("broker log: log file bytes/s, debug", debug["log_bytes"], "B/s"),
        Result("broker log: hub's tail CPU %", debug["tail_cpu"], "%", None, "",
               "< 5 % of a core", debug["tail_cpu"] < 5),
    ]
