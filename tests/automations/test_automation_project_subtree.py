"""The `project` condition covers a project's whole subtree, as a site admin reads it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hub.core.automations.conditions import EvalContext, check

PARENTS = {"school-1": None, "school-1-a": "school-1", "school-1-a-2f": "school-1-a",
           "hospital-1": None}


def lineage(project: str) -> list[str]:
    out = []
    current: str | None = project
    while current is not None:
        out.append(current)
        current = PARENTS.get(current)
    return out


def context(device_project: str | None) -> EvalContext:
    return EvalContext(
        get_state=lambda _entity: None,
        now=0.0,
        variables={"trigger": {"device_id": "arcm-1"}},
        zone=ZoneInfo("Asia/Shanghai"),
        device_project=lambda _device: device_project,
        project_lineage=lineage,
    )


async def test_a_device_in_a_child_project_matches_its_ancestors() -> None:
    conf = {"condition": "project", "project": ["school-1"]}
    assert await check(conf, context("school-1-a-2f"), "c") is True
    assert await check(conf, context("school-1"), "c") is True
    assert await check(conf, context("hospital-1"), "c") is False
    assert await check(conf, context(None), "c") is False  # no project: never in one


async def test_a_child_project_does_not_cover_its_parent() -> None:
    conf = {"condition": "project", "project": ["school-1-a"]}
    assert await check(conf, context("school-1"), "c") is False
    assert await check(conf, context("school-1-a-2f"), "c") is True
