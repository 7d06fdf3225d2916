"""Who may do what to work orders, patrol rounds and statistics (docs/security.md), where the
answer depends on more than role and scope: the assignee moving their own order, the same rule
through the `workorder.*` services, a patrol round completed by its assignee, and statistics
counted over the caller's projects only (a scope with no project counts nothing, not all).

The hub, tree and users are the auth tests' (tests/auth/conftest.py):

    org-1 ── school-1 ── school-1-a      arcm-1 (school-1-a), arcm-2 (school-1)
          └─ hospital-1                  arcm-3 (hospital-1)
    market-1                             arcm-m (market-1)

`root` super_admin, `centre` platform_admin (school-1, hospital-1), `principal` project_admin
(school-1), `duty` user (school-1-a).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub.storage.patrol_store import PatrolQuery
from tests.auth.conftest import INSIDE, OUTSIDE, Env, make_env

from .conftest import tiny_png


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """The auth tests' hub: project tree, devices in it, one signed-up user per role."""
    instance = await make_env(tmp_path)
    try:
        yield instance
    finally:
        for client in instance.clients:
            await client.close()
        await instance.hub.async_stop()


def _photo() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("photo", tiny_png(), filename="现场.png", content_type="image/png")
    return form


async def _order(env: Env, device: str = INSIDE, assignee: str | None = "duty",
                 alarm_id: int | None = None) -> int:
    if alarm_id is not None:
        order, _ = await env.hub.workorders.async_create(alarm_id=alarm_id, assignee=assignee)
    else:
        order, _ = await env.hub.workorders.async_create(title="更换漏电保护器",
                                                         device_id=device, assignee=assignee)
    return int(order["id"])


async def test_assignee_moves_their_own_order_and_nothing_more(env: Env) -> None:
    alarm_id = await env.alarm(INSIDE)
    order_id = await _order(env, alarm_id=alarm_id)
    duty = await env.signed_in("user")
    path = f"/api/workorders/{order_id}"

    status, body = await duty.call("PATCH", path, json={"status": "accepted", "note": "马上到"})
    assert status == 200 and body["status"] == "accepted", body
    # what stays the supervisor's: reassigning, the due time, cancelling
    for change, reason in (({"assignee": "李师傅"}, "reassign"),
                           ({"due_at": 4_000_000_000}, "due time"),
                           ({"status": "closed", "note": "不修了"}, "accepted → closed")):
        status, body = await duty.call("PATCH", path, json=change)
        assert status == 403 and reason in body["error"], (change, body)
    # a transition the lifecycle refuses keeps its 409 and reason, whoever asks
    status, body = await duty.call("PATCH", path, json={"status": "verified"})
    assert status == 409 and "cannot go from accepted to verified" in body["error"]
    status, body = await duty.call("POST", f"{path}/comments", json={"text": "需要备件"})
    assert status == 201 and body["user"] == "duty"
    status, body = await duty.call("POST", f"{path}/photos", data=_photo())
    assert status == 201 and body["uploaded_by"] == "duty"
    status, body = await duty.call("PATCH", path, json={"status": "repaired", "note": "已更换"})
    assert status == 200 and body["status"] == "repaired"
    # repairing marks the alarm handled, in the assignee's name
    alarm = (await env.hub.alarms.store.get_many([alarm_id]))[0]
    assert alarm["handled_at"] is not None and alarm["handled_by"] == "duty"
    status, body = await duty.call("PATCH", path, json={"status": "verified"})
    assert status == 403 and "repaired → verified needs a project_admin" in body["error"]
    admin = await env.signed_in("project_admin")
    status, body = await admin.call("PATCH", path, json={"status": "verified"})
    assert status == 200 and body["status"] == "verified"

    history = [(e["user"], e["action"], e["to_status"])
               for e in (await admin.call("GET", path))[1]["history"]]
    assert ("duty", "transition", "accepted") in history
    assert ("duty", "transition", "repaired") in history
    assert ("principal", "transition", "verified") in history

    updates = await env.audit(action_prefixes=["workorder.update"])
    assert [(e["actor"], e["detail"]["to_status"]) for e in updates] == [
        ("principal", "verified"), ("duty", "repaired"), ("duty", "accepted")]
    assert updates[1]["detail"]["as_assignee"] is True
    assert updates[1]["project"] == "school-1-a" and updates[1]["target"] == str(order_id)
    assert {e["action"] for e in await env.audit(action_prefixes=["workorder"])} == {
        "workorder.update", "workorder.comment", "workorder.photo"}
    denied = await env.audit(action_prefixes=["access.denied"], actors=["duty"])
    assert len(denied) == 4


async def test_assignee_may_hand_back_and_the_next_one_takes_over(env: Env) -> None:
    order_id = await _order(env)
    duty = await env.signed_in("user")
    path = f"/api/workorders/{order_id}"
    assert (await duty.call("PATCH", path, json={"status": "accepted"}))[0] == 200
    status, body = await duty.call("PATCH", path, json={"status": "dispatched",
                                                        "note": "缺少工具"})
    assert status == 200 and body["status"] == "dispatched" and body["assignee"] == "duty"
    admin = await env.signed_in("project_admin")
    status, body = await admin.call("PATCH", path, json={"assignee": "李师傅"})
    assert status == 200 and body["assignee"] == "李师傅"
    # no longer theirs: not even a comment
    status, body = await duty.call("PATCH", path, json={"status": "accepted"})
    assert status == 403 and "assigned to 李师傅" in body["error"]
    assert (await duty.call("POST", f"{path}/comments", json={"text": "x"}))[0] == 403
    # but still visible: a user reads the work orders of its projects
    status, body = await duty.call("GET", path)
    assert status == 200 and body["assignee"] == "李师傅"


async def test_someone_else_in_scope_may_read_but_not_move_an_order(env: Env) -> None:
    order_id = await _order(env, assignee="李师傅")
    duty = await env.signed_in("user")
    status, body = await duty.call("PATCH", f"/api/workorders/{order_id}",
                                   json={"status": "accepted"})
    assert status == 403
    assert body["error"] == (f"Work order {order_id} is assigned to 李师傅: only its assignee "
                             "or a project_admin or above may change it")
    assert (await duty.call("GET", f"/api/workorders/{order_id}"))[0] == 200
    assert (await env.hub.workorders.async_get(order_id))["status"] == "dispatched"


async def test_assignment_outside_the_scope_gives_no_access(env: Env) -> None:
    order_id = await _order(env, device=OUTSIDE)  # assigned to duty, but in market-1
    duty = await env.signed_in("user")
    for method, path, body in (("GET", f"/api/workorders/{order_id}", None),
                               ("PATCH", f"/api/workorders/{order_id}", {"status": "accepted"}),
                               ("GET", f"/api/workorders/{order_id}/photos", None)):
        status, answer = await duty.call(method, path, json=body)
        assert status == 403 and "outside the scope of duty" in answer["error"], (path, answer)
    status, listed = await duty.call("GET", "/api/workorders?assignee=duty")
    assert status == 200 and order_id not in {o["id"] for o in listed}
    assert (await duty.call("GET", "/api/workorders/999999"))[0] == 404  # not a 403


async def test_workorder_services_follow_the_same_rules(env: Env) -> None:
    outside_alarm = await env.alarm(OUTSIDE)
    inside_alarm = await env.alarm(INSIDE)
    duty = await env.signed_in("user")
    admin = await env.signed_in("project_admin")
    create = "/api/services/workorder/create"
    update = "/api/services/workorder/update"

    status, body = await duty.call("POST", create, json={"alarm_id": inside_alarm})
    assert status == 403 and "may not call workorder.create" in body["error"]
    status, body = await admin.call("POST", create, json={"alarm_id": outside_alarm})
    assert status == 403 and f"Alarm {outside_alarm} is outside the scope" in body["error"]
    status, body = await admin.call("POST", create, json={"title": "无项目"})
    assert status == 403 and "must name a device, alarm or project" in body["error"]
    status, body = await admin.call("POST", create,
                                    json={"alarm_id": inside_alarm, "assignee": "duty"})
    assert status == 200, body
    order_id = body["response"]["id"]
    assert body["response"]["created_by"] == "principal"

    status, body = await duty.call("POST", update, json={"id": order_id, "status": "accepted"})
    assert status == 200 and body["response"]["status"] == "accepted", body
    status, body = await duty.call("POST", update,
                                   json={"id": order_id, "status": "closed", "note": "x"})
    assert status == 403 and "needs a project_admin" in body["error"]
    outside_order = await _order(env, device=OUTSIDE, assignee="principal")
    status, body = await admin.call("POST", update,
                                    json={"id": outside_order, "status": "accepted"})
    assert status == 403 and f"Work order {outside_order} is outside the scope" in body["error"]
    assert (await env.hub.workorders.async_get(outside_order))["status"] == "dispatched"
    entries = await env.audit(action_prefixes=["service.workorder"])
    assert [(e["actor"], e["result"]) for e in entries] == [
        ("principal", "denied"), ("duty", "denied"), ("duty", "ok"), ("principal", "ok"),
        ("principal", "denied"), ("principal", "denied"), ("duty", "denied")]


async def test_patrol_round_is_completed_by_its_assignee(env: Env) -> None:
    template = await env.hub.patrols.async_create_template({
        "name": "教学楼A 配电室", "project": "school-1-a", "period": "daily",
        "items": ["柜门关闭", {"name": "漏电保护器", "device_id": INSIDE}], "assignee": "duty"})
    rounds = await env.hub.patrols.store.instances(PatrolQuery(template_id=template["id"]))
    round_id = rounds[0]["id"]
    results = {"results": [{"item": "柜门关闭", "ok": True},
                           {"item": "漏电保护器", "ok": False, "note": "试跳不动作"}]}
    duty = await env.signed_in("user")
    # a user may not plan rounds nor hand them to someone else
    status, _ = await duty.call("PATCH", f"/api/patrols/{round_id}", json={"assignee": "duty2"})
    assert status == 403
    status, body = await duty.call("POST", f"/api/patrols/{round_id}/complete", json=results)
    assert status == 200, body
    assert body["completed_by"] == "duty" and body["failed_count"] == 1
    # the failed item opened a work order in the round's project, visible to the completer
    [order] = body["workorders"]
    assert order["project"] == "school-1-a" and order["device_id"] == INSIDE
    assert (await duty.call("GET", f"/api/workorders/{order['id']}"))[0] == 200
    [entry] = await env.audit(action_prefixes=["patrol.complete"])
    assert entry["actor"] == "duty" and entry["project"] == "school-1-a"
    assert entry["detail"]["workorders"] == [order["id"]]


async def test_user_completes_no_round_given_to_someone_else(env: Env) -> None:
    template = await env.hub.patrols.async_create_template({
        "name": "巡检", "project": "school-1-a", "period": "daily", "items": ["柜门关闭"],
        "assignee": "李师傅"})
    [row] = await env.hub.patrols.store.instances(PatrolQuery(template_id=template["id"]))
    duty = await env.signed_in("user")
    status, body = await duty.call("POST", f"/api/patrols/{row['id']}/complete",
                                   json={"results": [{"item": 0, "ok": True}]})
    assert status == 403 and "assigned to 李师傅" in body["error"]
    assert (await env.hub.patrols.store.instance(row["id"]))["status"] == "pending"


async def _statistics(client: Any, query: str = "") -> dict[str, Any]:
    status, body = await client.call("GET", f"/api/statistics{query}")
    assert status == 200, body
    return body


async def test_statistics_count_only_the_callers_projects(env: Env) -> None:
    for device, type_ in ((INSIDE, "residual_current_high"), (INSIDE, "over_voltage"),
                          ("arcm-2", "residual_current_high"), ("arcm-3", "overload"),
                          (OUTSIDE, "residual_current_high"), (OUTSIDE, "overload")):
        await env.alarm(device, type_)
    await _order(env, device=INSIDE)
    await _order(env, device=OUTSIDE)

    everything = await _statistics(await env.signed_in("super_admin"))
    assert everything["totals"]["total"] == 6 and everything["workorders"]["created"] == 2

    duty = await _statistics(await env.signed_in("user"))
    assert duty["totals"]["total"] == 2
    assert [row["project"] for row in duty["by_project"]] == ["school-1-a"]
    assert {row["device_id"] for row in duty["by_device"]} == {INSIDE}
    assert duty["workorders"]["created"] == 1 and duty["workorders"]["open_now"] == 1

    principal = await _statistics(await env.signed_in("project_admin"))
    assert principal["totals"]["total"] == 3
    assert {row["project"] for row in principal["by_project"]} == {"school-1-a", "school-1"}
    centre = await env.signed_in("platform_admin")
    assert (await _statistics(centre))["totals"]["total"] == 4
    hospital = await _statistics(centre, "?project=hospital-1")
    assert hospital["totals"]["total"] == 1 and hospital["project"] == "hospital-1"

    status, body = await (await env.signed_in("user")).call(
        "GET", "/api/statistics?project=school-1")
    assert status == 403 and body["error"] == "Project school-1 is outside the scope of duty"
    [denied] = await env.audit(action_prefixes=["access.denied"], actors=["duty"])
    assert denied["detail"]["path"] == "/api/statistics"


async def test_a_scope_without_projects_counts_and_lists_nothing(env: Env) -> None:
    """A token narrowed to nothing of its user's is not "no filter": it sees no row."""
    await env.alarm(INSIDE)
    await _order(env, device=INSIDE)
    client = await env.bearer("user", scope=["market-1"])  # outside duty's scope: cut away
    body = await _statistics(client)
    assert body["totals"]["total"] == 0 and body["by_project"] == []
    assert body["workorders"]["created"] == 0 and body["workorders"]["open_now"] == 0
    for path in ("/api/workorders", "/api/patrols", "/api/patrols/templates"):
        status, listed = await client.call("GET", path)
        assert status == 200 and listed == [], (path, listed)


async def test_workorder_events_reach_websockets_of_their_scope_only(env: Env) -> None:
    from hub.core.events import Event

    duty = env.hub.auth.principal_for(env.users["user"])
    inside = await _order(env, device=INSIDE)
    outside = await _order(env, device=OUTSIDE)
    for order_id, visible in ((inside, True), (outside, False)):
        shown = env.hub.workorders.shown(await env.hub.workorders.async_get(order_id))
        event = Event("workorder_created", {"workorder": shown, "project": shown["project"]})
        assert env.hub.auth.event_visible(duty, event) is visible
