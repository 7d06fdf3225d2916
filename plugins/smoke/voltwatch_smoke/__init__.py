"""Voltwatch device plugin `smoke`: smoke detectors that push over MQTT (独立式感烟探测器).

NB-IoT and 4G smoke detectors report through their vendor's cloud or a bridge that republishes
on MQTT in the shape of CONTRACTS §6. This plugin never sees MQTT: the `mqtt` transport plugin
hands it decoded messages through the `voltwatch_push_handlers` hook, and commands go back
through whatever `CommandLink` the device's `link:` names. It is the worked example of
docs/writing-plugins.md, so it stays small and uses only the hooks a detector type needs.

Hooks: device schema `smoke`, the push handler, setup/shutdown (entities, silence watchdog,
services `smoke.mute`, `smoke.self_test`, `smoke.reset`), metrics and the simulator
`voltwatch simulate smoke`. The demo's smoke-1 is added by the mqtt plugin's demo hook (it
owns the demo broker) as soon as this plugin is installed.
"""

from __future__ import annotations

import weakref
from typing import Any

from hub import hookimpl
from hub.core.push import PushMessage
from hub.core.registries import DeviceEntry

from . import simulator
from .detector import DEVICE_SCHEMA, PLATFORM, SmokeDetector, SmokeRuntime

__all__ = ["DEVICE_SCHEMA", "PLATFORM", "SmokeDetector", "SmokeRuntime", "runtime_for"]

_RUNTIMES: weakref.WeakKeyDictionary[Any, SmokeRuntime] = weakref.WeakKeyDictionary()


def runtime_for(hub: Any) -> SmokeRuntime:
    """The plugin's state in `hub`, made on first use: the push handler may be handed a message
    before `voltwatch_setup` ran (the transport connects in its own set-up)."""
    runtime = _RUNTIMES.get(hub)
    if runtime is None:
        runtime = _RUNTIMES[hub] = SmokeRuntime(hub)
    return runtime


@hookimpl
def voltwatch_device_schemas() -> dict[str, Any]:
    return {PLATFORM: DEVICE_SCHEMA}


@hookimpl
def voltwatch_push_handlers(hub: Any) -> dict[str, Any]:
    def handle(device: DeviceEntry, message: PushMessage) -> None:
        runtime_for(hub).handle(device, message)

    return {PLATFORM: handle}


@hookimpl
async def voltwatch_setup(hub: Any) -> None:
    await runtime_for(hub).async_setup()


@hookimpl
async def voltwatch_shutdown(hub: Any) -> None:
    runtime = _RUNTIMES.pop(hub, None)
    if runtime is not None:
        await runtime.async_shutdown()


@hookimpl
def voltwatch_metrics(hub: Any) -> dict[str, float]:
    runtime = _RUNTIMES.get(hub)
    return runtime.stats() if runtime is not None else {}


@hookimpl
def voltwatch_simulators() -> dict[str, Any]:
    return {"smoke": (simulator.add_arguments, simulator.run)}
