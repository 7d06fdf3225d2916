"""Shared pieces of the fleet tests: the fleet's own argument parser, a started Hub, waits."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.core.events import Event, callback
from hub.core.plugins import PluginManager
from hub.fleet import FleetMember, FleetPlan, add_arguments, device_entries, plan_from_args
from hub.hub import Hub

WAIT = 20.0  # a failure bound for awaited events, never a synchronisation delay


def members() -> dict[str, FleetMember]:
    manager = PluginManager()
    manager.load_entrypoints(only=["mqtt", "gsm"])
    return manager.merged_dict("voltwatch_fleet_members")


def fleet_args(*argv: str) -> tuple[dict[str, FleetMember], argparse.Namespace, FleetPlan]:
    """Exactly what `voltwatch simulate fleet ARGV` would parse."""
    found = members()
    parser = argparse.ArgumentParser()
    add_arguments(parser, found)
    args = parser.parse_args(list(argv))
    return found, args, plan_from_args(args)


def hub_plugins(*names: str) -> PluginManager:
    manager = PluginManager()
    manager.load_entrypoints(only=list(names))
    return manager


def hub_config(tmp_path: Path, db_url: str, devices: list[dict[str, Any]],
               **sections: Any) -> dict[str, Any]:
    if db_url.startswith("sqlite") and ":///" in db_url and not db_url.endswith(":///"):
        name = db_url.rsplit("/", 1)[1]
        db_url = f"sqlite+aiosqlite:///{tmp_path / name}"
    return {"hub": {"name": "fleet test", "language": "en"},
            "database": {"url": db_url}, "http": {"enabled": False},
            "projects": [{"id": "fleet", "name": "Fleet"}],
            "devices": devices, **sections}


async def start_hub(config_dir: Path, config: dict[str, Any], *plugins: str) -> Hub:
    config_dir.mkdir(parents=True, exist_ok=True)
    hub = Hub(config_dir, config=config, plugin_manager=hub_plugins(*plugins))
    await hub.async_start()
    assert hub.plugins.failures == []
    return hub


class DeviceSeen:
    """Resolves once every listed entity has had a real value written (not unknown)."""

    def __init__(self, hubs: list[Hub], entity_ids: set[str]) -> None:
        self.missing = set(entity_ids)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsubs = [hub.bus.listen("state_changed", self._changed) for hub in hubs]
        if not self.missing:
            self.done.set_result(None)

    @callback
    def _changed(self, event: Event) -> None:
        new = event.data.get("new_state")
        if new is None or new.state in ("unknown", "unavailable"):
            return
        self.missing.discard(event.data["entity_id"])
        if not self.missing and not self.done.done():
            self.done.set_result(None)

    async def wait(self, timeout: float = WAIT) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout)
        except TimeoutError:
            raise AssertionError(f"no value within {timeout} s for {sorted(self.missing)[:5]}"
                                 f" (+{max(0, len(self.missing) - 5)} more)") from None
        finally:
            for unsub in self._unsubs:
                unsub()


class Raised:
    """Collects `alarm_raised` events of several hubs; `wait` returns the first match."""

    def __init__(self, hubs: list[Hub]) -> None:
        self.seen: list[tuple[Hub, dict[str, Any]]] = []
        self._changed: asyncio.Event = asyncio.Event()
        for hub in hubs:
            hub.bus.listen("alarm_raised", self._make(hub))

    def _make(self, hub: Hub) -> Callable[[Event], None]:
        @callback
        def raised(event: Event) -> None:
            self.seen.append((hub, dict(event.data)))
            self._changed.set()

        return raised

    async def wait(self, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for _, record in self.seen:
                    if predicate(record):
                        return record
                self._changed.clear()
                await self._changed.wait()


class EventLog:
    """Every event of the given types on several hubs, as (hub, event type, data)."""

    def __init__(self, hubs: list[Hub], *event_types: str) -> None:
        self.seen: list[tuple[Hub, str, dict[str, Any]]] = []
        for hub in hubs:
            for event_type in event_types:
                hub.bus.listen(event_type, self._make(hub, event_type))

    def _make(self, hub: Hub, event_type: str) -> Callable[[Event], None]:
        @callback
        def record(event: Event) -> None:
            self.seen.append((hub, event_type, dict(event.data)))

        return record

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [data for _, kind, data in self.seen if kind == event_type]


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait for a condition; the timeout is a failure bound, not a synchronisation."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached within the failure bound")
        await asyncio.sleep(0.01)


async def hang_up(dtu: Any, task: asyncio.Task[Any] | None) -> None:
    """A simulated DTU stops dialling: its socket closed, its `run` task ended."""
    if dtu is not None:
        dtu.close()
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_in_background(coro: Any) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro)


async def stop(task: asyncio.Task[Any]) -> None:
    from hub.core.tasks import cancel_and_wait

    await cancel_and_wait(task)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def smoke_entities(entries: list[dict[str, Any]]) -> set[str]:
    from hub.core.states import slugify

    return {f"sensor.{slugify(e['id'])}_smoke_level" for e in entries}


def fleet_entries(found: dict[str, FleetMember], args: argparse.Namespace) -> list[dict[str, Any]]:
    return device_entries(found, args)


class FlappingDtu:
    """The gsm plugin's simulated DTU, dropping its connection after `answers` replies (the
    carrier drops it mid-session) and redialling ~50 ms later, as a DTU does.

    `allowed` is the DTU's power: cleared, it stays away after the next drop until set again.
    `periods` are its connected spans (wall clock; the end is 0.0 while connected).
    """

    def __init__(self, imei: str, units: tuple[int, ...] | list[int], port: int,
                 answers: int) -> None:
        from voltwatch_gsm.simulator import SimOptions, SimStats, SimulatedDtu

        self.answers = answers
        self.flaps = 0
        self.allowed = asyncio.Event()
        self.allowed.set()
        self.periods: list[tuple[float, float]] = []
        outer = self

        class Dtu(SimulatedDtu):
            def connection_made(self, transport: Any) -> None:
                self.replies_here = 0
                outer.periods.append((time.time(), 0.0))
                super().connection_made(transport)

            def _send(self, payload: bytes) -> bool:
                sent = super()._send(payload)
                self.replies_here += sent
                if sent and self.replies_here >= outer.answers and self.transport is not None:
                    outer.flaps += 1
                    outer.periods[-1] = (outer.periods[-1][0], time.time())
                    self.transport.close()  # the carrier drops the DTU mid-session
                return sent

            async def run(self) -> None:
                loop = asyncio.get_running_loop()
                while self.running:
                    await outer.allowed.wait()
                    try:
                        await loop.create_connection(lambda: self, self.options.host,
                                                     self.options.port)
                    except OSError:
                        await asyncio.sleep(self.options.reconnect_delay)  # redial
                        continue
                    await self._closed.wait()
                    await asyncio.sleep(self.options.reconnect_delay)

        self.sim = Dtu(imei, list(units), SimOptions("127.0.0.1", port, reconnect_delay=0.05,
                                                     heartbeat_interval=60.0), SimStats())


async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
               hold: Callable[[bytes], Any] | None = None) -> None:
    """Copy bytes one way until either side closes; `hold(chunk)`, if given, is awaited
    before each chunk is passed on (a proxy that stalls the link)."""
    try:
        while data := await src.read(4096):
            if hold is not None:
                await hold(data)
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.close()


class TcpProxy:
    """A TCP proxy on a free loopback port: each connection is copied both ways to the
    backend `_backend()` picks, through the hooks `_to_server` / `_to_client` (which may hold
    a chunk), until either side closes."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _backend(self) -> int:
        raise NotImplementedError

    async def _to_server(self, chunk: bytes) -> None:
        """Awaited before a chunk goes to the backend (a subclass may hold it)."""

    async def _to_client(self, chunk: bytes) -> None:
        """Awaited before a chunk goes back to the client."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                     self._backend())
            except OSError:
                writer.close()
                return
            await asyncio.gather(copy(reader, up_writer, self._to_server),
                                 copy(up_reader, writer, self._to_client))
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class StallingProxy(TcpProxy):
    """One worker's way to PostgreSQL, a TCP proxy that can get stuck, as a half-dead network
    path or a frozen NAT entry does: `hold_at_commit()` lets traffic flow until the worker
    sends its next COMMIT, then passes nothing either way (`held` is set) until `resume()`.
    The transaction stays open on the server, its row locks held, the session idle in
    transaction; the other workers' connections do not go through here."""

    def __init__(self, backend_port: int) -> None:
        super().__init__()
        self.backend_port = backend_port
        self.held = asyncio.Event()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._armed = False

    def _backend(self) -> int:
        return self.backend_port

    def hold_at_commit(self) -> None:
        self._armed = True

    def resume(self) -> None:
        self._armed = False
        self._flowing.set()

    async def _to_server(self, chunk: bytes) -> None:
        if self._armed and b"COMMIT" in chunk.upper():
            self._armed = False
            self._flowing.clear()
            self.held.set()
        await self._flowing.wait()

    async def _to_client(self, chunk: bytes) -> None:
        await self._flowing.wait()

    async def close(self) -> None:
        self.resume()
        await super().close()


class RoundRobinBalancer(TcpProxy):
    """A TCP load balancer in front of the workers' DTU ports, as an nginx `stream` block or
    HAProxy `balance roundrobin` (docs/operations.md): each new connection goes to the next
    backend and bytes are copied both ways until either side closes. `picks` lists the
    backend port of every connection, in order."""

    def __init__(self, backends: list[int]) -> None:
        super().__init__()
        self.backends = list(backends)
        self.picks: list[int] = []

    def _backend(self) -> int:
        backend = self.backends[len(self.picks) % len(self.backends)]
        self.picks.append(backend)
        return backend
