"""Who can be notified: users and subscriptions, kept in memory between changes.

Routing an alarm needs every subscription and every user (scope, phone, language). Reading
both tables per alarm cost ~19 ms at 1,000 users, most of the alarm-to-SMS budget in a storm.
They change rarely (an admin edits a user, someone subscribes), so they are read once and
kept until a change: `UserStore.version` and `SqlNotifyStore.subscriptions_version` move on
every write made through them (the users and subscriptions APIs, the CLI in this process,
tests), and a changed version means a fresh read. A write by another process (e.g.
`voltwatch user add` against the same database while the hub runs) is picked up after
`max_age` seconds at the latest.

A write made through this process is also applied to the lists at once (the stores call
`user_written` / `subscription_written`): if the database then stalls and routing falls back
to the lists read last, a duty officer who just subscribed on this hub is still in them. When
the lists were current before that write, they are current after it, and the next alarm does
not wait for a re-read at all.
Measured before this existed: a hub starting 100,000 detectors kept its database busy, the
re-read after a new subscription took over 2 s, and the alarm that followed was routed with
the lists from before it (no SMS).

Scopes are kept too, one per user and per subscription with projects, each with its
expanded set of visible projects: a scope check is then one set lookup. They follow the live
project tree (a `Scope` recomputes its set when the tree's version moves), and a user's own
scope is rebuilt with the users.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from hub.auth.scope import Scope

_LOGGER = logging.getLogger(__name__)


class Directory:
    def __init__(self, hub: Any, store: Any, max_age: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.store = store
        self.max_age = max_age
        self.clock = clock
        self.loads = 0  # how often the tables were read (tests and the bench look)
        self._key: tuple[int, int] | None = None
        self._loaded_at = 0.0
        self._users: list[Any] = []
        self._by_id: dict[str, Any] = {}
        self._subscriptions: list[dict[str, Any]] = []
        self._scopes: dict[Any, Any] = {}
        #: seconds a re-read may take before the lists read last are used (a stalled database)
        self.stale_timeout = 2.0
        #: the same when nothing changed through this hub and only `max_age` ran out: the
        #: lists are as current as this hub knows, so a busy database costs an alarm little
        self.age_timeout = 0.25
        self.stale_reads = 0
        self._reading: asyncio.Task[None] | None = None
        self._listening = False

    def _current_key(self) -> tuple[int, int]:
        users = getattr(getattr(self.hub, "auth", None), "users", None)
        return (int(getattr(users, "version", 0)),
                int(getattr(self.store, "subscriptions_version", 0)))

    def invalidate(self) -> None:
        self._key = None

    def _listen(self) -> None:
        """Hear this process's writes (once; the auth part may come after the directory)."""
        users = getattr(getattr(self.hub, "auth", None), "users", None)
        if users is None or not hasattr(users, "written"):
            return
        self._listening = True
        users.written.append(self.user_written)
        if hasattr(self.store, "subscription_written"):
            self.store.subscription_written.append(self.subscription_written)

    def user_written(self, user: Any) -> None:
        """A user this process created or changed: into the lists read last, at once."""
        if self._key is None:
            return  # nothing read yet: the first read will have it
        users = [u for u in self._users if u.id != user.id]
        users.append(user)
        users.sort(key=lambda u: u.name)
        self._users = users
        self._by_id = {u.id: u for u in users}
        self._scopes.pop(("user", user.id), None)
        version = int(getattr(self.hub.auth.users, "version", 0))
        if self._key[0] == version - 1:  # the lists were current: with this write they still are
            self._key = (version, self._key[1])

    def subscription_written(self, action: str, what: Any) -> None:
        """A subscription this process inserted (`what`: its row) or deleted (its id)."""
        if self._key is None:
            return
        sub_id = what["id"] if action == "insert" else what
        subscriptions = [sub for sub in self._subscriptions if sub["id"] != sub_id]
        if action == "insert":
            subscriptions.append(dict(what))
        self._subscriptions = subscriptions
        self._scopes.pop(("sub", sub_id), None)
        version = int(getattr(self.store, "subscriptions_version", 0))
        if self._key[1] == version - 1:
            self._key = (self._key[0], version)

    async def _fresh(self) -> None:
        if not self._listening:
            self._listen()
        key = self._current_key()
        if key == self._key and self.clock() - self._loaded_at < self.max_age:
            return
        if self._key is None:  # never read: nothing else to go on
            await self._load(key)
            return
        # Read again, but a database that does not answer (a stall) must not hold an alarm's
        # SMS: after `stale_timeout` route with the lists read last; the read goes on and
        # updates them when it answers.
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(
                self._load(key), name="notify directory read")
        # Measured at 100,000 detectors: the periodic re-read on a database busy with the
        # start's backlog held the first alarm's SMS the whole `stale_timeout`.
        wait = self.age_timeout if key == self._key else self.stale_timeout
        done, _ = await asyncio.wait({self._reading}, timeout=wait)
        if self._reading in done and self._reading.exception() is None:
            return
        self.stale_reads += 1
        _LOGGER.warning("Notification recipients: the database did not answer (%s); using "
                        "the users and subscriptions read %.0f s ago",
                        "a read error" if self._reading in done else
                        f"{wait:g} s", self.clock() - self._loaded_at)

    async def _load(self, key: tuple[int, int]) -> None:
        auth = getattr(self.hub, "auth", None)
        users = await auth.users.list() if auth is not None else []
        subscriptions = await self.store.subscriptions()
        # a write during the reads leaves the key stale, so the next call reads again
        self._key = key
        self._loaded_at = self.clock()
        self._users = users
        self._by_id = {u.id: u for u in users}
        self._subscriptions = subscriptions
        self._scopes = {}
        self.loads += 1

    async def users(self) -> list[Any]:
        await self._fresh()
        return self._users

    async def users_by_id(self) -> dict[str, Any]:
        await self._fresh()
        return self._by_id

    async def subscriptions(self) -> list[dict[str, Any]]:
        await self._fresh()
        return self._subscriptions

    def user_scope(self, auth: Any, user: Any) -> Any:
        """`auth.scope_for(user)`, made once per load, its project set expanded once."""
        key = ("user", user.id)
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = auth.scope_for(user)
        scope.allowed()
        return scope

    def projects_scope(self, auth: Any, sub: dict[str, Any]) -> Any:
        """The scope of a subscription's `projects` (roots and their subtrees)."""
        key = ("sub", sub["id"])
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = Scope(auth.tree, sub["projects"])
        scope.allowed()
        return scope
