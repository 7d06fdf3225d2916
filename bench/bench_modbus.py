"""Modbus polling: the arcm plugin over the modbus transport vs a raw pymodbus client.

1. Throughput: 200 simulated arcm-ref units (4 Modbus TCP endpoints x 50 units, each endpoint
   served by a simulator process of its own so that neither shares our CPU). The raw baseline is one
   pymodbus AsyncModbusTcpClient per endpoint reading the same 35-register block unit after
   unit as fast as it can; the measured value is the arcm plugin (decode, 25 entity states,
   conditions) polling the same units as fast as the links allow. Same run, same simulator.
   The two alternate in ROUNDS rounds (raw then plugin, then plugin then raw, ...), and the
   rates pool every round, so a load change on a shared machine does not land on one side
   only; each round's ratio is printed too. The plugin side's warm-up starts once every unit
   has been polled once (start-up is not what is measured). Target: >= 0.8x the raw rate.
2. CPU share: 1,000 detectors (5 endpoints x 200 units) polled every 5 s by the plugin in this
   process; `time.process_time()` over a bounded wall-clock window after a warm-up. Target:
   < 15 % of one core. No recorder or HTTP listener is attached (core + plugin only).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import Result

ROUNDS = 4
THROUGHPUT_WINDOW = 2.5  # measured seconds per side and round
FIRST_POLLS_MAX = 20.0  # at most this long for every unit's first poll before the warm-up
CPU_WARMUP = 7.0
CPU_WINDOW = 20.0

_SERVER = """
import asyncio, sys, logging
logging.disable(logging.CRITICAL)
from voltwatch_arcm.simulator import ArcmSimulator, SimOptions
async def main(ports, units):
    servers = []
    for port in ports:
        sim = ArcmSimulator(range(1, units + 1), SimOptions(wander=True, leak_every=None, seed=port))
        servers.append(await sim.start_tcp("127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main([int(p) for p in sys.argv[1].split(",")], int(sys.argv[2])))
"""


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class _Simulators:
    """The simulators in their own processes, one per endpoint, so that neither our CPU nor a
    single simulator process is what the throughput run measures."""

    def __init__(self, endpoints: int, units: int, processes: int | None = None) -> None:
        self.ports = _free_ports(endpoints)
        self.units = units
        self.processes = processes or endpoints
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Self:
        groups = [self.ports[i::self.processes] for i in range(self.processes)]
        for group in groups:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, ",".join(map(str, group)), str(self.units)],
                stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                self.__exit__()
                raise RuntimeError(f"simulator did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


class _BenchHub:
    """The real core parts a plugin talks to, without storage or HTTP."""

    def __init__(self) -> None:
        import voltwatch_modbus

        from hub.core.events import EventBus
        from hub.core.links import LinkRegistry
        from hub.core.registries import DeviceRegistry, EntityRegistry
        from hub.core.services import ServiceRegistry
        from hub.core.states import StateMachine

        self.config_dir = None
        self.language = "zh-CN"
        self.bus = EventBus()
        self.bus.bind_loop(asyncio.get_running_loop())
        self.states = StateMachine(self.bus)
        self.services = ServiceRegistry(self.bus)
        self.devices = DeviceRegistry(self.bus)
        self.entities = EntityRegistry(self.bus)
        self.links = LinkRegistry()
        self.links.factories.update(voltwatch_modbus.voltwatch_link_factories(self))
        self._tasks: set[asyncio.Task[Any]] = set()

    def create_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.links.async_close_all()


def _devices(ports: list[int], units: int, interval: float) -> list[dict[str, Any]]:
    return [
        {"id": f"arcm-{port}-{unit}", "platform": "arcm", "profile": "arcm-ref",
         "poll_interval": interval, "failed_polls_for_comm_loss": 3,
         "link": {"transport": "modbus_tcp", "host": "127.0.0.1", "port": port, "unit": unit,
                  "timeout": 2.0}}
        for port in ports for unit in range(1, units + 1)
    ]


async def _raw_rate(ports: list[int], units: int) -> tuple[int, float, float]:
    """(requests, seconds, CPU seconds of this process) of one raw phase."""
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
               for port in ports]
    for client in clients:
        await client.connect()
    count = 0
    stop = False

    async def loop(client: Any) -> None:
        nonlocal count
        while not stop:
            for unit in range(1, units + 1):
                response = await client.read_holding_registers(0, count=35, device_id=unit)
                assert not response.isError()
                count += 1

    tasks = [asyncio.create_task(loop(c)) for c in clients]
    await asyncio.sleep(1.0)  # warm-up
    start_count, start, cpu0 = count, time.perf_counter(), time.process_time()
    await asyncio.sleep(THROUGHPUT_WINDOW)
    done, seconds = count - start_count, time.perf_counter() - start
    cpu = time.process_time() - cpu0
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        client.close()
    return done, seconds, cpu


async def _first_polls(devices: list[Any]) -> None:
    """Wait (at most FIRST_POLLS_MAX s) until every unit has been polled once.

    A unit's first poll also reads model, firmware and setpoints and creates its 25 states;
    at the rates of a loaded machine a fixed warm-up ended before every unit had had it, and
    the measured window paid the start-up that the raw client never has.
    """
    deadline = time.perf_counter() + FIRST_POLLS_MAX
    while any(d.good_polls == 0 for d in devices) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)


async def _plugin_rate(ports: list[int], units: int) -> tuple[int, float, float, int]:
    """(good polls, seconds, CPU seconds of this process, failed requests) of one phase."""
    from voltwatch_arcm import ArcmRuntime

    hub = _BenchHub()
    runtime = ArcmRuntime(hub)
    await runtime.async_setup({"devices": _devices(ports, units, 0.01)})
    devices = list(runtime.devices.values())
    links = hub.links.links()

    def failed() -> int:
        return sum(link.stats.timeouts + link.stats.exceptions + link.stats.protocol_errors
                   + link.stats.connect_failures for link in links)

    await _first_polls(devices)
    await asyncio.sleep(1.0)  # warm-up
    start_polls, start, failed0 = sum(d.good_polls for d in devices), time.perf_counter(), failed()
    cpu0 = time.process_time()
    await asyncio.sleep(THROUGHPUT_WINDOW)
    polls = sum(d.good_polls for d in devices) - start_polls
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    failures = failed() - failed0
    await runtime.async_shutdown()
    await hub.stop()
    return polls, seconds, cpu, failures


class _Throughput:
    """Pooled over the rounds: rates, CPU per poll in this process, each round's ratio."""

    def __init__(self) -> None:
        self.raw_n = self.raw_s = self.raw_cpu = 0.0
        self.ours_n = self.ours_s = self.ours_cpu = 0.0
        self.ratios: list[float] = []
        self.failures = 0

    @property
    def raw(self) -> float:
        return self.raw_n / self.raw_s

    @property
    def ours(self) -> float:
        return self.ours_n / self.ours_s


def _throughput(ports: list[int], units: int) -> _Throughput:
    """Raw and plugin phases in alternating rounds (ABBA), pooled."""
    out = _Throughput()
    for round_ in range(ROUNDS):
        sides = ["raw", "plugin"] if round_ % 2 == 0 else ["plugin", "raw"]
        rates: dict[str, float] = {}
        for side in sides:
            if side == "raw":
                n, s, c = asyncio.run(_raw_rate(ports, units))
                out.raw_n, out.raw_s, out.raw_cpu = out.raw_n + n, out.raw_s + s, out.raw_cpu + c
            else:
                n, s, c, f = asyncio.run(_plugin_rate(ports, units))
                out.ours_n, out.ours_s = out.ours_n + n, out.ours_s + s
                out.ours_cpu, out.failures = out.ours_cpu + c, out.failures + f
            rates[side] = n / s
        out.ratios.append(rates["plugin"] / rates["raw"])
        print(f"  round {round_ + 1}: raw {rates['raw']:,.0f}/s, plugin {rates['plugin']:,.0f}/s,"
              f" {out.ratios[-1]:.2f}x", file=sys.stderr, flush=True)
    return out


async def _cpu_share(ports: list[int], units: int) -> tuple[float, float]:
    from voltwatch_arcm import ArcmRuntime

    hub = _BenchHub()
    runtime = ArcmRuntime(hub)
    await runtime.async_setup({"devices": _devices(ports, units, 5.0)})
    devices = list(runtime.devices.values())
    await asyncio.sleep(CPU_WARMUP)
    polls0, cpu0, wall0 = sum(d.good_polls for d in devices), time.process_time(), \
        time.perf_counter()
    await asyncio.sleep(CPU_WINDOW)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    polls = sum(d.good_polls for d in devices) - polls0
    await runtime.async_shutdown()
    await hub.stop()
    return cpu / wall, polls / wall


def run() -> list[Result]:
    import logging

    logging.disable(logging.WARNING)
    results: list[Result] = []
    with _Simulators(4, 50) as sims:
        tp = _throughput(sims.ports, sims.units)
    if tp.failures:
        print(f"  note: {tp.failures} failed requests during the plugin phases", file=sys.stderr)
    rounds = " / ".join(f"{r:.2f}" for r in tp.ratios)
    results.append(Result(
        f"arcm polls/s, 200 units on 4 TCP links ({ROUNDS} alternating rounds: {rounds})",
        tp.ours, "polls/s", baseline=tp.raw, baseline_name="raw pymodbus, same blocks",
        target=">= 0.8x", met=tp.ours >= 0.8 * tp.raw))
    # Less sensitive to other load than the rates: what one poll costs this process.
    results.append(Result(
        "arcm CPU per poll in the hub process (same rounds)", tp.ours_cpu / tp.ours_n * 1e6,
        "µs", baseline=tp.raw_cpu / tp.raw_n * 1e6, baseline_name="µs per raw request",
        target="information"))
    with _Simulators(5, 200, processes=1) as sims:
        share, poll_rate = asyncio.run(_cpu_share(sims.ports, sims.units))
    results.append(Result(
        f"CPU, 1,000 detectors every 5 s ({poll_rate:,.0f} polls/s)", share * 100,
        "% of one core", target="< 15 %", met=share < 0.15))
    logging.disable(logging.NOTSET)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from common import HEADER

    rows = run()
    print(HEADER)
    for row in rows:
        print(row.row())
