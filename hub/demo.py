"""The demo site (`voltwatch demo`, `make run`): the product's face for a newcomer.

Every plugin adds what it can show through the `voltwatch_demo_site` hook: simulators started
in this process, the devices that talk to them, projects to hang them on. The demo then runs a
real Hub against that configuration (SQLite in the data directory), so everything a newcomer
sees is the real path, not a mock-up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class DemoSite:
    """What plugins see in `voltwatch_demo_site(demo)`."""

    def __init__(self, data_dir: Path, http_port: int) -> None:
        self.data_dir = data_dir
        self.http_port = http_port
        self.projects: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self.sections: dict[str, Any] = {}
        self._pending: list[tuple[Coroutine[Any, Any, Any], str]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        #: the demo user's phone and subscription (kinds), set by a notifier plugin
        self.subscriber: tuple[str, list[str]] | None = None

    def free_port(self) -> int:
        """A free loopback TCP port for a simulator."""
        return free_port()

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a simulator coroutine in the demo's event loop until the demo stops."""
        self._pending.append((coro, name))

    def add_project(self, **project: Any) -> None:
        self.projects.append(project)

    def has_project(self, project_id: str) -> bool:
        """Whether the demo tree (the core's DEMO_PROJECTS or a plugin's addition) has this
        id: a plugin hangs its devices on an existing node rather than adding a second
        project of the same name (the demo once showed 第一中学 twice)."""
        return project_id in _project_ids([*DEMO_PROJECTS, *self.projects])

    def add_device(self, **device: Any) -> None:
        self.devices.append(device)

    def set_section(self, key: str, value: Any) -> None:
        """A top-level configuration section (e.g. `gsm: {port: …}`)."""
        self.sections[key] = value

    def subscribe_demo_user(self, phone: str, kinds: list[str] | None = None) -> None:
        """Give the demo user this phone number and subscribe it (to `kinds`, default
        all) once the hub runs, so a demo alarm reaches the plugin's simulated phone."""
        self.subscriber = (phone, list(kinds or []))

    def launch(self) -> None:
        loop = asyncio.get_running_loop()
        for coro, name in self._pending:
            self.tasks.append(loop.create_task(coro, name=name))
        self._pending.clear()

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel the simulators; one that swallows its cancellation is named, not waited on."""
        for task in self.tasks:
            task.cancel()
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            _LOGGER.warning("Demo simulator %s did not stop within %.0f s", task.get_name(), timeout)


# The demo's project tree. Plugins hang their devices on these ids (or add their own).
DEMO_PROJECTS: list[dict[str, Any]] = [
    {"id": "school-1", "name": "第一中学", "lat": 40.77, "lon": 114.88,
     "children": [{"id": "school-1-a", "name": "教学楼A"}, {"id": "school-1-b", "name": "食堂"}]},
    {"id": "hospital-1", "name": "人民医院", "lat": 40.81, "lon": 114.89,
     "children": [{"id": "hospital-1-er", "name": "急诊楼"}]},
    {"id": "market-1", "name": "中心市场", "lat": 40.76, "lon": 114.90},
]


def _project_ids(projects: list[dict[str, Any]]) -> set[str]:
    ids: set[str] = set()
    for project in projects:
        ids.add(project["id"])
        ids |= _project_ids(project.get("children", []))
    return ids


def build_demo_config(demo: DemoSite) -> dict[str, Any]:
    projects = [dict(p) for p in DEMO_PROJECTS]
    known = _project_ids(projects)
    for project in demo.projects:
        if project["id"] not in known:
            projects.append(project)
            known |= _project_ids([project])
    for device in demo.devices:
        if device.get("project") and device["project"] not in known:
            projects.append({"id": device["project"], "name": device["project"]})
            known.add(device["project"])
    return {
        "hub": {"name": "Voltwatch 演示站", "time_zone": "Asia/Shanghai", "language": "zh-CN"},
        "http": {"host": "127.0.0.1", "port": demo.http_port},
        "database": {"url": "sqlite+aiosqlite:///voltwatch.db"},
        "projects": projects,
        "devices": demo.devices,
        **demo.sections,
    }


DEMO_USER = "demo"


async def ensure_demo_user(hub: Any) -> str:
    """The demo's super_admin `demo`, with a fresh random password printed at each start (the
    data directory outlives a run; a password that never changes would be a standing door)."""
    import secrets

    from .auth.users import hash_password

    password = secrets.token_urlsafe(9)
    password_hash = await hash_password(password)
    users = hub.auth.users
    user = await users.get_by_name(DEMO_USER)
    if user is None:
        await users.create(DEMO_USER, "super_admin", password_hash, created_by="demo")
    else:
        await users.update(user.id, password_hash=password_hash, disabled=False,
                           failed_logins=0, locked_until=None, role="super_admin", projects=[])
        await hub.auth.end_user_sessions(user.id)
    return password


async def ensure_demo_subscription(hub: Any, phone: str, kinds: list[str]) -> None:
    """The demo user has `phone` and one subscription (made once; the data dir persists)."""
    notify = getattr(hub, "notify", None)
    user = await hub.auth.users.get_by_name(DEMO_USER)
    if notify is None or user is None:
        return
    if user.phone != phone:
        user = await hub.auth.users.update(user.id, phone=phone)
    if await notify.store.subscriptions([user.id]):
        return
    await notify.store.insert_subscription({
        "user_id": user.id, "projects": [], "kinds": kinds, "min_severity": "info",
        "channels": [], "quiet_start": None, "quiet_end": None, "language": None,
        "enabled": True, "created_at": notify.clock(), "created_by": "demo"})


def _history_hint(config: dict[str, Any], url: str, token: str) -> str:
    """A history query for the first ARCM detector (rollups fill in as the demo runs)."""
    from .core.states import slugify

    for device in config.get("devices", []):
        if device.get("platform") == "arcm":
            entity = f"sensor.{slugify(device['id'])}_residual_current"
            return (f"  history: curl -H 'Authorization: Bearer {token}' "
                    f"'{url}/api/history/{entity}?resolution=5m'\n")
    return ""


async def run_demo(port: int = 8123, data_dir: Path = Path(".voltwatch-demo")) -> int:
    """Start simulators and a real hub on them; serve until Ctrl-C."""
    import yaml

    from .core.config import ConfigError
    from .core.plugins import PluginManager
    from .hub import Hub, wait_for_stop_signal

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    plugins = PluginManager()
    plugins.load_entrypoints()
    demo = DemoSite(data_dir, port)
    for name, result in plugins.call_each("voltwatch_demo_site", demo=demo):
        if asyncio.iscoroutine(result):
            try:
                await result
            except Exception as err:  # noqa: BLE001 - the demo goes on without that plugin's part
                plugins.fail(name, "demo", f"{type(err).__name__}: {err}")
    config = build_demo_config(demo)
    from .core.automations.starter import ensure_starter

    config["automations"] = ensure_starter(data_dir)  # starter set, editable via the API
    (data_dir / "configuration.yaml").write_text(
        "# Written by `voltwatch demo` for reference; the demo builds it anew at every start.\n"
        + yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    demo.launch()
    hub = Hub(data_dir, config=config, plugin_manager=plugins)
    try:
        await hub.async_start()
    except ConfigError as err:
        print(err.report())
        await demo.stop()
        return 1

    from .http.tokens import create_token

    password = await ensure_demo_user(hub)
    if demo.subscriber is not None:
        await ensure_demo_subscription(hub, *demo.subscriber)
    # A system token (no user) for curl and the ?token= link: the demo's own machine.
    token = await create_token(hub.storage, "demo", None)
    url = hub.http.url if hub.http is not None else f"http://127.0.0.1:{port}"
    devices = len(config["devices"])
    sms = (f"  alarms go by SMS to {demo.subscriber[0]} (the demo user) through a simulated "
           "modem\n" if demo.subscriber is not None else "")
    print(
        f"\nVoltwatch demo: {url}\n"
        f"  sign in at {url}/login (demo login): user {DEMO_USER} password {password}\n"
        f"  or open (signs you in with a token): {url}/?token={token}\n"
        f"  {devices} simulated detector(s); data in {data_dir}\n"
        f"{sms}"
        f"  API token: {token}\n"
        f"  try: curl -H 'Authorization: Bearer {token}' {url}/api/states\n"
        f"{_history_hint(config, url, token)}"
        "  Ctrl-C stops it.\n",
        flush=True,
    )
    try:
        await wait_for_stop_signal()
    finally:
        await hub.async_stop()
        await demo.stop()
    return 0
