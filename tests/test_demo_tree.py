"""The demo's project tree as every installed plugin leaves it: no project twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hub.core.plugins import PluginManager
from hub.demo import DemoSite, build_demo_config


def _walk(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for project in projects:
        out.append(project)
        out.extend(_walk(project.get("children", [])))
    return out


def test_each_demo_project_appears_once(tmp_path: Path) -> None:
    plugins = PluginManager()
    plugins.load_entrypoints(only=["arcm", "arc_fault", "gsm", "mqtt", "smoke", "modbus",
                                   "notify_sms"])
    demo = DemoSite(tmp_path, 8123)
    for _name, result in plugins.call_each("voltwatch_demo_site", demo=demo):
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    try:
        config = build_demo_config(demo)
    finally:
        for coro, _name in demo._pending:  # simulators never started here
            coro.close()
    nodes = _walk(config["projects"])
    top = [node["name"] for node in config["projects"]]
    assert len(top) == len(set(top)), top
    assert top.count("第一中学") == 1
    ids = {node["id"] for node in nodes}
    assert len(ids) == len(nodes)
    # Every detector hangs on a node of that tree, the arcm and arc-fault ones in the school.
    assert all(device["project"] in ids for device in config["devices"])
    school = {"school-1", "school-1-a", "school-1-b"}
    assert {d["project"] for d in config["devices"] if d["platform"] in ("arcm", "arc_fault")
            and d["link"]["transport"] == "modbus_tcp"} <= school
