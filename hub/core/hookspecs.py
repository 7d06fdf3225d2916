"""Every hook a Voltwatch plugin can implement, in one module (as Datasette does).

Each hook is documented in docs/writing-plugins.md; tests/core/test_hookspecs_documented.py fails
when one is not. Hooks are called by the core only; a plugin never calls another plugin's hook.

Hooks that do I/O return a coroutine (or None); the core awaits it. pluggy itself is
synchronous, so the core collects the results and awaits them one plugin at a time, isolating
failures: a plugin that raises is reported by name and the rest of the hub goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    import voluptuous as vol

    from hub.demo import DemoSite
    from hub.fleet import FleetMember
    from hub.hub import Hub

PROJECT = "voltwatch"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def voltwatch_config_schema() -> dict[str, vol.Schema] | None:
    """Top-level sections of configuration.yaml this plugin owns, e.g. `{"gsm": GSM_SCHEMA}`.

    The core assembles its own schema with every plugin's before validating; an unknown
    top-level key is an error that names the file and line.
    """


@hookspec
def voltwatch_device_schemas() -> dict[str, vol.Schema] | None:
    """Device platforms this plugin provides: `{"arcm": schema}`.

    The schema validates one entry of `devices:` after the core's common keys (id, name,
    platform, project, area, location, link) have been checked; it may add defaults.
    """


@hookspec
def voltwatch_link_schemas() -> dict[str, vol.Schema] | None:
    """Transports this plugin provides for a device's `link:`: `{"modbus_tcp": schema}`."""


@hookspec
def voltwatch_link_factories(hub: Hub) -> dict[str, Callable[[dict[str, Any]], Any]] | None:
    """Factories that open a link for a device's validated `link:` mapping, by transport name.

    Device plugins obtain links through `hub.links.acquire(link_config)`, so a detector plugin
    works unchanged over Modbus TCP, a serial line or a GSM DTU.
    """


@hookspec
def voltwatch_push_handlers(hub: Hub) -> dict[str, Callable[..., Any]] | None:
    """Handlers for pushed messages by device platform: `{"smoke": handle}`.

    A push transport (mqtt) calls `handle(device, message)` (a `hub.core.push.PushMessage`;
    a coroutine or a plain callback) for every telemetry, event, status or ack message of a
    device of that platform. Collected once at start, like link factories.
    """


@hookspec
def voltwatch_setup(hub: Hub, config: dict[str, Any]) -> Awaitable[None] | None:
    """Start the plugin with the whole validated configuration.

    Register services, create entities, start pollers. Called once, after storage, registries
    and the recorder are up and before the HTTP server starts. Raise to report a failure: the
    hub logs it with the plugin's name and starts without it.
    """


@hookspec
def voltwatch_shutdown(hub: Hub) -> Awaitable[None] | None:
    """Stop pollers and close connections. Called before the recorder's final flush."""


@hookspec
def voltwatch_http_routes(hub: Hub) -> list[Any] | None:
    """Extra aiohttp route definitions (`web.get(...)`, ...) for the plugin's API or panel.

    Routes under `/api/` require a bearer token like the core's. Every route appears in the
    OpenAPI document: its summary is the first line of the handler's docstring. Return
    `hub.http.routes.Route` objects instead to give request schemas and response descriptions.
    """


@hookspec
def voltwatch_metrics(hub: Hub) -> dict[str, float] | None:
    """Numbers for `/metrics`, read at scrape time: `{"gsm_frames_total": 1234, ...}`.

    Names are prefixed with `voltwatch_`; a name ending in `_total` is a counter, any other a
    gauge. Keep label-free totals here (per-device detail belongs in the plugin's API route:
    thousands of label sets per metric make a scrape expensive).
    """


@hookspec
def voltwatch_simulators() -> dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                                               Callable[[argparse.Namespace], Awaitable[None]]]] | None:
    """Device simulators for `voltwatch simulate NAME`: `{name: (add_arguments, run)}`.

    `add_arguments` fills the sub-command's argparse parser; `run(args)` is a coroutine that
    serves until cancelled.
    """


@hookspec
def voltwatch_fleet_members() -> dict[str, FleetMember] | None:
    """Device kinds for the load generator `voltwatch simulate fleet`: `{name: FleetMember}`.

    A member adds its own options, lists the configuration entries of the devices it will
    simulate, and runs them (many per connection where its protocol allows) until cancelled,
    raising alarms on the devices the shared `FleetPlan` names.
    """


@hookspec
def voltwatch_demo_site(demo: DemoSite) -> Awaitable[None] | None:
    """Contribute to the demo site (`voltwatch demo`, `make run`).

    Start simulators with `demo.start(coroutine)`, add devices with `demo.add_device(...)`,
    projects with `demo.add_project(...)`. Called before the demo hub is configured.
    """


@hookspec
def voltwatch_notifiers() -> dict[str, tuple[vol.Schema | dict[Any, Any],
                                             Callable[[Hub, dict[str, Any]], Any]]] | None:
    """Notifier platforms this plugin provides: `{"sms": (schema, factory)}`.

    `schema` validates one entry of `notify:` after the core's common keys (platform, name,
    fallback, retries, retry_backoff, timeout); `factory(hub, config)` returns a
    `hub.core.notify.Notifier` for that entry. The core owns queues, retries, failover,
    delivery records, subscriptions and escalation; a notifier only sends one message.
    """
