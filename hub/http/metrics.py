"""`GET /metrics`: the hub's health in Prometheus text format (exposition format 0.0.4).

Written by hand rather than with prometheus_client: the numbers already live in the hub's
objects (bus, state machine, recorder, plugin manager), so a metrics registry would be a
second copy to keep in step. Everything is read at scrape time; nothing here costs anything
between scrapes. The numbers are hub-wide (no per-project labels), so only super_admin and
system tokens may scrape it: Prometheus sends `Authorization: Bearer <token>`
(`authorization: {credentials: …}` in its scrape config).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from typing import Any

from aiohttp import web

from hub import __version__

from .routes import HUB, SERVER, RouteTable

SUPER_ADMIN = "super_admin"  # hub.auth.permissions.SUPER_ADMIN

routes = RouteTable()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")
#: Recorder statistics that only grow (hub/storage/recorder.py `stats()`); the rest are gauges.
RECORDER_COUNTERS = frozenset(
    {
        "rows_written",
        "states_written",
        "events_written",
        "batches",
        "overflow_episodes",
        "spooled",
        "replayed",
        "dropped",
        "commit_errors",
        "rollup_rows_written",
        "purged_raw",
        "purged_events",
        "purged_5m",
        "purged_1h",
        "purged_1d",
        "purge_runs",
        "purge_errors",
    }
)


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsWriter:
    """Collects families; each family is written once with its HELP and TYPE lines."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: list[tuple[dict[str, Any], float]] | float,
    ) -> None:
        if not isinstance(samples, list):
            samples = [({}, samples)]
        self._lines.append(f"# HELP {name} {_escape(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            suffix = f"{{{label_text}}}" if label_text else ""
            self._lines.append(f"{name}{suffix} {_number(float(value))}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def metric_name(text: str) -> str:
    name = _NAME_BAD.sub("_", text)
    return name if not name[:1].isdigit() else f"_{name}"


def render_metrics(hub: Any, server: Any = None) -> str:
    out = MetricsWriter()
    hub_conf = getattr(hub, "config", {}).get("hub", {})
    out.family(
        "voltwatch_info",
        "gauge",
        "Hub version and name",
        [({"version": __version__, "name": hub_conf.get("name", "")}, 1)],
    )
    if server is not None and server.started_at is not None:
        out.family(
            "voltwatch_start_time_seconds",
            "gauge",
            "When the HTTP server started (unix s)",
            server.started_at,
        )
    states = hub.states.all()
    out.family("voltwatch_entities", "gauge", "Entities with a current state", len(states))
    by_domain = Counter(state.domain for state in states)
    out.family(
        "voltwatch_entities_by_domain",
        "gauge",
        "Entities with a current state, by domain",
        [({"domain": domain}, count) for domain, count in sorted(by_domain.items())],
    )
    unavailable = sum(1 for state in states if not state.available)
    out.family(
        "voltwatch_entities_unavailable", "gauge", "Entities in state unavailable", unavailable
    )
    out.family(
        "voltwatch_bus_listener_errors_total",
        "counter",
        "Bus listeners or filters that raised",
        hub.bus.listener_errors,
    )
    plugins = hub.plugins
    out.family("voltwatch_plugins_loaded", "gauge", "Plugins loaded", len(plugins.infos))
    out.family(
        "voltwatch_plugin_failures",
        "gauge",
        "Plugin failures (load, setup, hooks)",
        len(plugins.failures),
    )

    alarms = getattr(hub, "alarms", None)
    if alarms is not None:
        out.family(
            "voltwatch_alarms_active",
            "gauge",
            "Active alarm records by kind (alarm, fault)",
            [({"kind": kind}, count) for kind, count in sorted(alarms.active_counts().items())],
        )
        out.family(
            "voltwatch_alarms_raised_total", "counter", "Alarm records raised", alarms.raised_total
        )
        out.family(
            "voltwatch_alarms_cleared_elsewhere_total", "counter",
            "Clears and updates another worker had already made moot (several workers)",
            getattr(alarms, "cleared_elsewhere", 0),
        )
        out.family(
            "voltwatch_alarms_provisional_total", "counter",
            "Alarm records announced before the database stored them (a stall)",
            getattr(alarms, "provisional_total", 0),
        )
        out.family(
            "voltwatch_alarms_spool_replayed_total", "counter",
            "Spooled alarm records written at start (left by a hub stopped during a stall)",
            getattr(alarms, "spool_replayed", 0),
        )

    recorder = getattr(hub, "recorder", None)
    stats_fn = getattr(recorder, "stats", None)
    if callable(stats_fn):
        stats = stats_fn()
        if isinstance(stats, dict):
            for key, value in sorted(stats.items()):
                if not isinstance(value, int | float):  # None (never yet), text (last_error)
                    continue
                name = f"voltwatch_recorder_{metric_name(str(key))}"
                if key in RECORDER_COUNTERS and not name.endswith("_total"):
                    name += "_total"
                kind = "counter" if name.endswith("_total") else "gauge"
                out.family(name, kind, f"Recorder statistic {key}", float(value))

    notify_metrics = getattr(getattr(hub, "notify", None), "metrics", None)
    if callable(notify_metrics):
        # sent/failed/delivered, pending, and the delivery-record writes a stall deferred
        for key, value in sorted(notify_metrics().items()):
            name = f"voltwatch_{metric_name(str(key))}"
            kind = "counter" if name.endswith("_total") else "gauge"
            out.family(name, kind, f"Notifications: {key}", float(value))

    peers = getattr(hub, "peers", None)
    if peers is not None:  # control calls forwarded to / run for other workers
        for key, value in sorted(peers.stats().items()):
            out.family(f"voltwatch_{key}", "counter", f"Calls between workers: {key}", value)

    for plugin, numbers in plugins.call_each("voltwatch_metrics", hub=hub):
        for key, value in sorted(numbers.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = f"voltwatch_{metric_name(str(key))}"
            kind = "counter" if name.endswith("_total") else "gauge"
            out.family(name, kind, f"{key} (plugin {plugin})", float(value))

    if server is not None:
        out.family(
            "voltwatch_websocket_connections",
            "gauge",
            "Open API websocket connections",
            len(server.websockets),
        )
        out.family(
            "voltwatch_http_responses_total",
            "counter",
            "HTTP responses by status code",
            [({"code": code}, count) for code, count in sorted(server.response_counts.items())],
        )
        limits = getattr(server, "rate_limits", None)
        if limits is not None:
            out.family(
                "voltwatch_http_rate_limited_total",
                "counter",
                "Requests refused with 429 by a per-client rate limit, by bucket",
                [({"bucket": name}, limiter.refused)
                 for name, limiter in sorted(limits.limiters.items())],
            )
    out.family("voltwatch_scrape_timestamp_seconds", "gauge", "Time of this scrape", time.time())
    return out.text()


@routes.get(
    "/metrics",
    "Prometheus metrics",
    description=(
        "Hub info, entities, bus listener errors, plugin failures, recorder statistics, "
        "websocket connections and HTTP responses, in Prometheus text format 0.0.4."
    ),
    scope=SUPER_ADMIN,
    response_content_type="text/plain",
    tags=("meta",),
)
async def metrics(request: web.Request) -> web.StreamResponse:
    text = render_metrics(request.app[HUB], request.app[SERVER])
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})
