"""The `Hub`: the one object that wires the core together and that plugins talk to.

Start is staged so that nothing runs half-configured:

1. plugins are loaded (a broken one is reported and left out),
2. configuration is validated in full (any error: nothing starts),
3. storage opens and migrates, the registries load,
4. the recorder starts (so the first reading of the first plugin is kept),
5. plugins set up, one at a time, a failure named and isolated,
6. the HTTP server starts, and `hub_started` is fired.

Stop runs the other way round and ends with the recorder's final flush, so a reading that
reached the state machine before shutdown is in the database after it.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from .core import config as config_mod
from .core.context import Context
from .core.events import EVENT_HUB_START, EVENT_HUB_STARTED, EVENT_HUB_STOP, EventBus
from .core.leases import LeaseManager, worker_id_for
from .core.links import LinkRegistry
from .core.peers import Peers
from .core.plugins import PluginManager
from .core.registries import DeviceRegistry, EntityRegistry
from .core.services import ServiceRegistry
from .core.states import StateMachine

_LOGGER = logging.getLogger(__name__)


class HubState(enum.Enum):
    NOT_RUNNING = "not_running"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Hub:
    """Holds the core parts. Plugins reach everything through this object."""

    def __init__(
        self,
        config_dir: str | Path,
        config: dict[str, Any] | None = None,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        self.config_dir = Path(config_dir).resolve()
        self.bus = EventBus()
        self.states = StateMachine(self.bus)
        self.services = ServiceRegistry(self.bus)
        self.links = LinkRegistry()
        # device platform -> handler for pushed messages (hub.core.push); filled at start
        self.push_handlers: dict[str, Any] = {}
        self.plugins = plugin_manager or PluginManager()
        self.config: dict[str, Any] = config or {}
        self._config_given = config is not None
        self.storage: Any = None  # hub.storage.Database once started
        self.recorder: Any = None  # hub.storage.recorder.Recorder
        self.http: Any = None  # hub.http.server.HttpServer
        self.alarms: Any = None  # hub.core.alarms.AlarmEngine once started
        # hazards (hub/hazards.py): work orders, patrols, reminders, statistics
        self.workorders: Any = None
        self.patrols: Any = None
        self.reminders: Any = None
        self.statistics: Any = None
        self.report_store: Any = None
        self.auth: Any = None  # hub.auth.AuthManager once storage is open
        self.automations: Any = None  # hub.core.automations.engine.AutomationEngine
        self.notify: Any = None  # hub.core.notify.NotifyManager once started
        # Which worker owns what (hub.core.leases); real leases once a shared database is open.
        self.leases = LeaseManager("local", None, shared=False)
        # Control calls for a device another worker owns run there (hub.core.peers); a
        # plugin sets `peers.transport`.
        self.peers = Peers(self)
        self.services.forwarder = self.peers.forward
        self.devices = DeviceRegistry(self.bus)
        self.entities = EntityRegistry(self.bus)
        self.state = HubState.NOT_RUNNING
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()

    # -- helpers for plugins --------------------------------------------------------------
    @property
    def language(self) -> str:
        return self.config.get("hub", {}).get("language", "zh-CN")

    @property
    def time_zone(self) -> str:
        return self.config.get("hub", {}).get("time_zone", "Asia/Shanghai")

    def create_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a background task that is cancelled at shutdown and logged if it dies."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("Task %s died", task.get_name(), exc_info=task.exception())

    def context(self, user_id: str | None = None) -> Context:
        return Context(user_id=user_id)

    # -- lifecycle ------------------------------------------------------------------------
    async def async_start(self) -> None:
        """Staged start; raises ConfigError before anything runs if the config is invalid.

        The cyclic garbage collector is paused while the hub starts: a start with 100,000
        devices creates millions of long-lived objects (configuration, registry entries,
        states, watches), and every automatic collection walked all of them again (at
        20,000 detectors: 40 s to start with it, 24 s without). It runs again once started,
        after one collection, with what the start made frozen (`gc.freeze`): otherwise the
        first full collection after the start walks them all at once while the hub serves,
        and the loop stands still meanwhile (at 100,000 detectors the first alarm's SMS came
        ~3 s late, bench_alarm_sms). `async_stop` unfreezes them, so a process that runs
        many hubs (the tests) can collect a stopped one.
        """
        paused = gc.isenabled()
        gc.disable()
        try:
            await self._async_start()
        finally:
            if paused:
                gc.collect()  # the start's garbage, once, before the hub serves alarms
                gc.freeze()
                gc.enable()

    async def _async_start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.bus.bind_loop(self.loop)
        self.state = HubState.STARTING

        if not self.plugins.infos and not self.plugins.failures:
            self.plugins.load_entrypoints()
        if not self._config_given:
            self.config = config_mod.load_configuration(self.config_dir, self.plugins)
        else:
            self.config = config_mod.validate_configuration(
                self.config, self.plugins, self.config_dir
            )

        from .storage.database import Database
        from .storage.recorder import Recorder
        from .storage.registry_store import SqlRegistryStore

        self.storage = Database(
            self.config["database"]["url"], self.config_dir,
            idle_in_transaction_timeout=self.config["database"].get("idle_in_transaction_timeout"))
        await self.storage.open()
        store = SqlRegistryStore(self.storage)
        self.devices = DeviceRegistry(self.bus, store)
        self.entities = EntityRegistry(self.bus, store)
        await self.devices.async_load()
        await self.entities.async_load()
        from .storage.lease_store import SqlLeaseStore

        hub_conf = self.config.get("hub", {})
        shared = self.storage.dialect == "postgresql"  # SQLite: one hub, it owns everything
        self.leases = LeaseManager(
            worker_id_for(self.config_dir, hub_conf) if shared else
            str(hub_conf.get("worker_id") or "local"), SqlLeaseStore(self.storage), shared=shared)
        self.peers.timeout = float(hub_conf.get("forward_timeout", self.peers.timeout))
        self.recorder = Recorder(self, self.storage, self.config.get("recorder", {}))
        await self.recorder.async_start()

        await self._sync_config_devices()
        # Before any plugin: a service call is never made without its permission check.
        from .auth import AuthManager

        self.auth = AuthManager(self, self.config.get("auth", {}))
        await self.auth.async_start()
        # After the recorder and the registries, before any plugin: the first condition a
        # plugin fires is caught, and alarms active before a restart are known again.
        from .core.alarms import AlarmEngine
        from .storage.alarm_store import SqlAlarmStore

        self.alarms = AlarmEngine(self, self.config.get("alarms", {}), SqlAlarmStore(self.storage))
        await self.alarms.async_start()
        from .hazards import async_start_hazards

        await async_start_hazards(self)  # work orders, patrols, reminders, statistics
        await self._start_automations()  # subscribes before plugins; acts once they set up
        # After the alarm engine (it routes alarm_raised), before plugins: a plugin's first
        # alarm reaches its subscribers, and queued deliveries resume.
        from .core.notify import NotifyManager
        from .storage.notify_store import SqlNotifyStore

        self.notify = NotifyManager(self, self.config.get("notifications", {}),
                                    self.config.get("notify", []), SqlNotifyStore(self.storage))
        await self.notify.async_start()
        self.links.factories.update(self.plugins.merged_dict("voltwatch_link_factories", hub=self))
        self.push_handlers.update(self.plugins.merged_dict("voltwatch_push_handlers", hub=self))
        self.bus.async_fire(EVENT_HUB_START)
        await self._setup_plugins()
        if self.automations is not None:
            self.automations.async_plugins_ready()  # the services runs call exist now

        http_conf = self.config.get("http", {})
        if http_conf.get("enabled", True):
            from .http.server import HttpServer

            self.http = HttpServer(self, http_conf)
            await self.http.async_start()

        self.state = HubState.RUNNING
        self.bus.async_fire(EVENT_HUB_STARTED)
        _LOGGER.info("Voltwatch hub %s started", self.config.get("hub", {}).get("name", ""))

    async def _start_automations(self) -> None:
        """hub/core/automations: after alarms (alarm triggers) and before plugins (no event a
        plugin fires is missed). See docs/automations.md."""
        from .core.automations.engine import AutomationEngine
        from .storage.automation_store import SqlAutomationStore

        self.automations = AutomationEngine(self, SqlAutomationStore(self.storage))
        await self.automations.async_start(self.config.get("automations") or [])

    async def _sync_config_devices(self) -> None:
        """Devices named in configuration.yaml are upserted; one deleted from it is removed.

        API-created and discovered devices are left alone: the file owns only what it names.
        """
        configured = self.config.get("devices", [])
        # In one batch (one transaction): one by one, 10,000 devices were 10,000
        # transactions before the hub could start.
        await self.devices.async_upsert_many(configured, source="config")
        named = {device["id"] for device in configured}
        for entry in self.devices:
            if entry.source == "config" and entry.id not in named:
                _LOGGER.info("Device %s is no longer in the configuration: removed", entry.id)
                await self.devices.async_remove(entry.id)

    async def _setup_plugins(self) -> None:
        for name, result in self.plugins.call_each(
            "voltwatch_setup", hub=self, config=self.config
        ):
            if asyncio.iscoroutine(result):
                try:
                    await result
                except Exception as err:
                    _LOGGER.exception("Plugin %s failed to set up", name)
                    self.plugins.fail(name, "setup", f"{type(err).__name__}: {err}")

    async def async_stop(self) -> None:
        if self.state in (HubState.STOPPING, HubState.STOPPED):
            await self._stopped.wait()
            return
        self.state = HubState.STOPPING
        self.bus.async_fire(EVENT_HUB_STOP)
        if self.http is not None:
            await self.http.async_stop()
        for name, result in self.plugins.call_each("voltwatch_shutdown", hub=self):
            if asyncio.iscoroutine(result):
                try:
                    await result
                except Exception:
                    _LOGGER.exception("Plugin %s failed to shut down cleanly", name)
        if self.notify is not None:
            await self.notify.async_stop()
        if self.automations is not None:
            await self.automations.async_stop()  # pending timers stay in the database
        await self.links.async_close_all()
        from .hazards import async_stop_hazards

        # Before the blanket cancel below: the reminder and patrol loops wait for a check in
        # progress to commit. Cancelled mid-transaction by `_cancel_tasks`, a loop left its
        # connection holding SQLite's write lock, and the next start failed with "database
        # is locked" (tests/hazards/test_patrol_rounds.py, about one start in five).
        await async_stop_hazards(self)
        await self._cancel_tasks()
        await self.bus.async_drain()
        if self.alarms is not None:
            await self.alarms.async_stop()  # its last writes fire events the recorder keeps
            await self.bus.async_drain()
        if self.recorder is not None:
            await self.recorder.async_stop()  # final flush
        if self.auth is not None:
            await self.auth.async_stop()
        if self.storage is not None:
            await self.storage.close()
        self.state = HubState.STOPPED
        gc.unfreeze()  # what the start froze can be collected again (see async_start)
        self._stopped.set()
        _LOGGER.info("Voltwatch hub stopped")

    async def _cancel_tasks(self, timeout: float = 10.0) -> None:
        """Cancel background tasks; one that swallows its cancellation must not hang the stop.

        (On Python 3.11 a `wait_for` inside a library can eat a cancel that lands together
        with a response; such a task is cancelled again until the timeout, then named.)
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait(list(self._tasks), timeout=min(1.0, deadline - loop.time()))
        for task in list(self._tasks):
            _LOGGER.warning("Task %s did not stop within %.0f s", task.get_name(), timeout)

    async def async_run(self) -> int:
        """Start, serve until SIGINT/SIGTERM, stop. Returns the process exit code."""
        await self.async_start()
        try:
            await wait_for_stop_signal()
        finally:
            await self.async_stop()
        return 0


async def wait_for_stop_signal() -> None:
    """Return on SIGINT or SIGTERM (Ctrl-C, systemd stop), so the caller can stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
            pass
    await stop.wait()
