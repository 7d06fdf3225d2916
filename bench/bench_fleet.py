"""A fleet of MQTT smoke detectors at one report per 30 s: the hub's CPU and RSS vs a raw
aiomqtt subscriber receiving the same stream, same broker, same run (issue 12).

What runs, each its own process so /proc tells its CPU and memory apart:
* a private Mosquitto;
* `voltwatch simulate fleet --devices N --interval 30` (the load generator; reports spread
  evenly, so N / 30 msg/s steady);
* (a) raw: an aiomqtt subscriber doing `json.loads` per message and nothing else; then
  (b) hub: `voltwatch run` with the N devices in its configuration (mqtt + smoke plugins, a
  fresh PostgreSQL database for the recorder and registries, alarms), subscribed to the same
  topics. (On SQLite a hub with 10,000 detectors does not finish starting: every device's
  registry writes and the recorder's first batches contend for the one write lock past the
  busy timeout.)

Each consumer gets a warm-up (one interval: every device has reported once, the hub has
created its entities) and is then measured over `FLEET_BENCH_WINDOW` seconds: messages it
handled, CPU seconds (utime + stime from /proc) and RSS at the end. The ratio printed is hub
CPU per message over raw CPU per message (lower is better). ThingsBoard's published
single-node figure (100k devices, 1,111 msg/s, 4 vCPU, about 20 % CPU) sits beside these in
docs/benchmarks.md.

`FLEET_BENCH_DEVICES` (default 10000, comma-separated for several runs, e.g. 10000,100000),
`FLEET_BENCH_INTERVAL` (30), `FLEET_BENCH_WINDOW` (30). `FLEET_BENCH_MIRROR=1` turns on the
hub's state relay to other workers (`mqtt.mirror_states`; docs/operations.md): compare a run
with and without it for the sender's cost (the receiver's is in bench_mirror.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result
from voltwatch_mqtt.testing import MosquittoBroker, free_port

DEVICES = [int(n) for n in os.environ.get("FLEET_BENCH_DEVICES", "10000").split(",")]
INTERVAL = float(os.environ.get("FLEET_BENCH_INTERVAL", "30"))
WINDOW = float(os.environ.get("FLEET_BENCH_WINDOW", "30"))
PYTHON = sys.executable
MIRROR = os.environ.get("FLEET_BENCH_MIRROR", "0") not in ("", "0", "false", "no")
#: The hub runs on PostgreSQL (a fresh database on this server), as a fleet this size would.
PG_ADMIN = os.environ.get("VOLTWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

RAW_SUBSCRIBER = textwrap.dedent("""
    import asyncio, json, sys, aiomqtt
    async def main(host, port, out):
        count = 0
        async with aiomqtt.Client(host, int(port), identifier="raw-bench") as client:
            await client.subscribe("voltwatch/dev/+/telemetry", qos=1)
            print("ready", flush=True)
            async for message in client.messages:
                json.loads(message.payload)
                count += 1
                if count % 500 == 0:
                    with open(out, "w") as f:
                        f.write(str(count))
    asyncio.run(main(*sys.argv[1:]))
""")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


class Consumer:
    """A measured process and how it reports how many messages it has handled."""

    def __init__(self, proc: subprocess.Popen[bytes], handled: object) -> None:
        self.proc = proc
        self.handled = handled  # () -> int

    def measure(self, window: float) -> tuple[float, float, float]:
        """(messages/s, CPU % of one core, RSS MB) over `window` seconds."""
        count0, cpu0, t0 = self.handled(), cpu_seconds(self.proc.pid), time.monotonic()
        time.sleep(window)
        count1, cpu1, t1 = self.handled(), cpu_seconds(self.proc.pid), time.monotonic()
        elapsed = t1 - t0
        return (count1 - count0) / elapsed, 100 * (cpu1 - cpu0) / elapsed, rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_raw(broker: MosquittoBroker, work: Path) -> Consumer:
    out = work / "raw.count"
    out.write_text("0")
    proc = subprocess.Popen([PYTHON, "-c", RAW_SUBSCRIBER, broker.host, str(broker.port),
                             str(out)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return Consumer(proc, lambda: int(out.read_text() or 0))


class HubProcess(Consumer):
    """`voltwatch run` in its own process, with its start-up time and its /metrics."""

    def __init__(self, proc: subprocess.Popen[bytes], work: Path, port: int, token: str,
                 startup: float) -> None:
        super().__init__(proc, self.telemetry)
        self.work = work
        self.port = port
        self.token = token
        self.startup = startup  # seconds from spawning the process to its health answering

    def metrics(self) -> dict[str, float]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            out = {}
            for line in answer.read().decode().splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    out[name] = float(value)
            return out

    def measure(self, window: float) -> tuple[float, float, float]:
        """As Consumer.measure; a hub too busy to answer /metrics within its timeout is
        saturated: messages/s is NaN (the row says NO), CPU and RSS are still read."""
        cpu0, t0 = cpu_seconds(self.proc.pid), time.monotonic()
        try:
            return super().measure(window)
        except (TimeoutError, OSError) as err:  # urllib wraps a timeout in URLError (OSError)
            elapsed = time.monotonic() - t0
            print(f"  hub saturated: /metrics did not answer ({err})", file=sys.stderr,
                  flush=True)
            return (float("nan"), 100 * (cpu_seconds(self.proc.pid) - cpu0) / elapsed,
                    rss_mb(self.proc.pid))

    def telemetry(self) -> int:
        value = self.metrics().get("voltwatch_mqtt_messages_telemetry_total")
        if value is None:
            raise RuntimeError("no telemetry counter in /metrics: "
                               f"{(self.work / 'hub.log').read_text()[-2000:]}")
        return int(value)

    def api(self, method: str, path: str, body: object | None = None) -> object:
        import json

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")


def start_hub(broker: MosquittoBroker, work: Path, devices_file: Path,
              database_url: str, extra_config: str = "",
              plugins: str = "mqtt,smoke") -> HubProcess:
    config = work / "hub"
    config.mkdir()
    port = free_port()
    (config / "configuration.yaml").write_text(textwrap.dedent(f"""
        hub: {{name: fleet bench, language: en}}
        http: {{host: 127.0.0.1, port: {port}}}
        database: {{url: "{database_url}"}}
        mqtt: {{host: {broker.host}, port: {broker.port}, client_id: bench-hub,
               mirror_states: {"true" if MIRROR else "false"}}}
        projects: [{{id: fleet, name: Fleet}}]
        devices: !include {devices_file.name}
    """) + textwrap.dedent(extra_config))
    (config / devices_file.name).write_bytes(devices_file.read_bytes())
    env = {**os.environ, "VOLTWATCH_PLUGINS": plugins}
    spawned = time.monotonic()
    proc = subprocess.Popen([PYTHON, "-m", "hub", "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=(work / "hub.log").open("wb"))
    deadline = time.monotonic() + 1800
    while True:  # a start-up bound, not a measurement
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the hub did not start: {(work / 'hub.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    startup = time.monotonic() - spawned
    token = subprocess.run([PYTHON, "-m", "hub", "token", "create", "bench", "--config",
                            str(config)], capture_output=True, text=True, env=env,
                           check=True).stdout.split()[-1]
    hub = HubProcess(proc, work, port, token, startup)
    while not hub.metrics().get("voltwatch_mqtt_connected"):  # subscribed before the fleet
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the hub never connected: {(work / 'hub.log').read_text()[-2000:]}")
        time.sleep(0.2)
    return hub


def write_fleet_devices(devices: int, devices_file: Path, interval: float = INTERVAL,
                        first_id: str = "fleet-smoke-1") -> None:
    """The configuration entries `voltwatch simulate fleet --devices-out` writes, written
    here so the hub can start (and be timed) before any device reports."""
    import argparse

    from voltwatch_mqtt.fleet import devices as fleet_devices

    from hub.fleet import write_devices

    args = argparse.Namespace(devices=devices, mqtt_id=first_id, interval=interval,
                              project="fleet")
    write_devices(devices_file, fleet_devices(args))


def start_fleet(broker: MosquittoBroker, devices: int, interval: float = INTERVAL,
                report_every: float = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "hub", "simulate", "fleet", "--devices", str(devices),
         "--interval", str(interval), "--broker", f"{broker.host}:{broker.port}",
         "--report-every", str(report_every)],
        stdout=subprocess.PIPE)


def stop_fleet(fleet: subprocess.Popen[bytes]) -> dict[str, int]:
    """SIGINT, then the totals of its last line (`fleet total: mqtt_messages N, ...`)."""
    fleet.send_signal(signal.SIGINT)
    try:
        out, _ = fleet.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        fleet.kill()
        out, _ = fleet.communicate()
    totals: dict[str, int] = {}
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("fleet total:"):
            for item in line.split(":", 1)[1].split(","):
                if item.strip():
                    name, value = item.split()
                    totals[name] = int(value)
    return totals


def settle(hub: HubProcess, published: int, quiet: float = 5.0, limit: float = 120.0) -> int:
    """The hub's telemetry count once it has everything published or stopped moving."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            count = hub.telemetry()
        except (TimeoutError, OSError):  # still busy: ask again until the limit
            continue
        if count >= published:
            return count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > quiet:
            break
        time.sleep(0.5)
    return last  # -1: the hub never answered


def pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one hub (its URL), dropped afterwards."""
    name = f"voltwatch_bench_fleet_{os.getpid()}"
    pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_one(devices: int) -> list[Result]:
    with bench_database() as database_url:
        return _bench_one(devices, database_url)


def _bench_one(devices: int, database_url: str) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        # As docs/operations.md configures a production broker: a consumer that lags (a hub
        # draining its start-up backlog) gets its messages queued, not dropped at 1,000.
        broker = MosquittoBroker(work / "broker", extra=["max_queued_messages 100000"])
        broker.start()
        devices_file = work / "fleet.yaml"
        write_fleet_devices(devices, devices_file)
        try:
            rows = {}
            raw = start_raw(broker, work)
            fleet = start_fleet(broker, devices)
            try:
                time.sleep(INTERVAL)  # warm-up: every device has reported once
                rows["raw"] = raw.measure(WINDOW)
            finally:
                stop_fleet(fleet)
                raw.stop()
            # The hub starts before the fleet: its start-up is timed alone, and everything
            # the fleet publishes after that must reach it (messages lost = published - handled).
            hub = start_hub(broker, work, devices_file, database_url)
            try:
                print(f"  {devices} devices: hub started in {hub.startup:.1f} s",
                      file=sys.stderr, flush=True)
                fleet = start_fleet(broker, devices)
                try:
                    time.sleep(INTERVAL)  # warm-up
                    rows["hub"] = hub.measure(WINDOW)
                finally:
                    published = stop_fleet(fleet).get("mqtt_messages", 0)
                handled = settle(hub, published)
            finally:
                hub.stop()
            for name in ("raw", "hub"):
                print(f"  {devices} devices, {name}: {rows[name][0]:,.0f} msg/s, "
                      f"{rows[name][1]:.1f} % CPU, {rows[name][2]:.0f} MB RSS",
                      file=sys.stderr, flush=True)
        finally:
            broker.stop()
    offered = devices / INTERVAL
    (raw_rate, raw_cpu, raw_rss), (hub_rate, hub_cpu, hub_rss) = rows["raw"], rows["hub"]
    # Unknown (NaN) when the hub never answered /metrics: a saturated hub, not a count.
    lost = float("nan") if handled < 0 else max(0, published - handled)
    label = f"{devices // 1000}k devices @{INTERVAL:g}s ({offered:,.0f} msg/s)" + (
        ", state relay on" if MIRROR else "")
    return [
        Result(f"fleet {label}: hub msg/s handled", hub_rate, "msg/s", raw_rate,
               "raw aiomqtt", f"= offered {offered:,.0f}", hub_rate >= 0.95 * offered),
        Result(f"fleet {label}: hub CPU % of one core", hub_cpu, "%", raw_cpu,
               "raw aiomqtt CPU %", "< 100 % (keeps up on one core)", hub_cpu < 100),
        Result(f"fleet {label}: hub RSS", hub_rss, "MB", raw_rss, "raw aiomqtt RSS MB", "-"),
        Result(f"fleet {label}: hub start-up", hub.startup, "s", None, "",
               "< 120 s", hub.startup < 120),
        Result(f"fleet {label}: messages lost of {published:,}", lost, "msgs", None, "",
               "0", lost == 0),
    ]


def run() -> list[Result]:
    results: list[Result] = []
    for devices in DEVICES:
        results.extend(bench_one(devices))
    return results


if __name__ == "__main__":
    for result in run():
        print(result.row())
