"""Routing reads users and subscriptions from memory, and a change through the users or
subscriptions API (or the stores) is seen by the very next alarm. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from hub.http.tokens import create_token

from .helpers import alarm, drained, settled, start, user


async def _alarm_to(hub: Any, pager: Any, type_: str) -> list[str]:
    """Raise one alarm; the recipients it reached."""
    before = len(pager.sent)
    await alarm(hub, type_=type_)
    await settled(hub)
    await drained(hub)
    return sorted(m.recipient for m in pager.sent[before:])


async def test_cached_between_changes_and_fresh_after_each(tmp_path: Path, db_url: str
                                                           ) -> None:
    hub, pager, _ = await start(tmp_path, db_url, http={"port": 0})
    directory = hub.notify.directory
    try:
        duty = await user(hub, "duty", "user", ["school-1-a"], "+8613800000001")
        assert await _alarm_to(hub, pager, "over_voltage") == ["+8613800000001"]
        loads = directory.loads
        assert await _alarm_to(hub, pager, "under_voltage") == ["+8613800000001"]
        assert directory.loads == loads  # nothing changed: no read

        token = await create_token(hub.storage, "admin")
        async with aiohttp.ClientSession(base_url=hub.http.url, headers={
                "Authorization": f"Bearer {token}"}) as http:
            async with http.post("/api/users", json={
                    "name": "night", "role": "user", "password": "correct horse battery",
                    "projects": ["school-1"], "phone": "+8613800000002"}) as resp:
                assert resp.status == 201, await resp.text()
                night = await resp.json()
            async with http.post("/api/subscriptions",
                                 json={"user_id": night["id"]}) as resp:
                assert resp.status == 201, await resp.text()
                sub = await resp.json()
            assert await _alarm_to(hub, pager, "overload") == ["+8613800000001",
                                                               "+8613800000002"]
            # a new phone number, through the users API
            async with http.patch(f"/api/users/{duty.id}",
                                  json={"phone": "+8613800000009"}) as resp:
                assert resp.status == 200, await resp.text()
            assert await _alarm_to(hub, pager, "phase_loss") == ["+8613800000002",
                                                                 "+8613800000009"]
            async with http.delete(f"/api/subscriptions/{sub['id']}") as resp:
                assert resp.status == 200
            assert await _alarm_to(hub, pager, "short_circuit") == ["+8613800000009"]
            # a user disabled: gone from routing at once
            async with http.patch(f"/api/users/{duty.id}", json={"disabled": True}) as resp:
                assert resp.status == 200
            assert await _alarm_to(hub, pager, "temperature_high_1") == []
        # Every change went through this hub, so it was put into the lists as it was written:
        # routing followed each one without reading the tables again.
        assert directory.loads == loads
    finally:
        await hub.async_stop()


async def test_a_write_from_elsewhere_is_seen_after_max_age(tmp_path: Path, db_url: str
                                                            ) -> None:
    hub, pager, _ = await start(tmp_path, db_url)
    directory = hub.notify.directory
    now = [0.0]
    directory.clock = lambda: now[0]
    directory.invalidate()  # the next read is timed by the test's clock
    try:
        await user(hub, "duty", "user", ["school-1-a"], "+8613800000001")
        assert await _alarm_to(hub, pager, "over_voltage") == ["+8613800000001"]
        # another process (the CLI) changes the phone: this hub's stores did not see it
        from hub.storage.schema import users

        async with hub.storage.engine.begin() as conn:
            await conn.execute(users.update().values(phone="+8613800000007"))
        now[0] = directory.max_age - 1
        assert await _alarm_to(hub, pager, "under_voltage") == ["+8613800000001"]
        now[0] = directory.max_age + 1
        assert await _alarm_to(hub, pager, "overload") == ["+8613800000007"]
    finally:
        await hub.async_stop()


async def test_scope_changes_reach_routing_at_once(tmp_path: Path, db_url: str) -> None:
    hub, pager, _ = await start(tmp_path, db_url)
    try:
        duty = await user(hub, "duty", "user", ["school-1"], "+8613800000001", False)
        await hub.notify.store.insert_subscription({
            "user_id": duty.id, "projects": ["school-1"], "kinds": [], "min_severity": "info",
            "channels": [], "quiet_start": None, "quiet_end": None, "language": None,
            "enabled": True, "created_at": 0.0, "created_by": "t"})
        assert await _alarm_to(hub, pager, "over_voltage") == ["+8613800000001"]
        # moved to the hospital: the school's alarms stop at once
        await hub.auth.users.update(duty.id, projects=["hospital-1"])
        assert await _alarm_to(hub, pager, "under_voltage") == []
        await hub.auth.users.update(duty.id, projects=["org-1"])
        assert await _alarm_to(hub, pager, "overload") == ["+8613800000001"]
        # a project added to the tree below the subscription's project is covered too
        hub.auth.tree.add("school-1-b", "school-1")
        assert hub.notify.directory.projects_scope(
            hub.auth, (await hub.notify.store.subscriptions())[0]).can_see("school-1-b")
    finally:
        await hub.async_stop()
