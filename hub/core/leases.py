"""Leases: which of several workers owns a resource only one of them can drive (issue 12).

Some things reach exactly one worker: a GSM DTU's TCP socket lands on whichever worker the load
balancer picked. Every worker sharing the PostgreSQL database must agree on that worker, and a
dead worker's claim must run out. `hub.leases` is that agreement: a worker claims a named lease
for a few seconds and renews it while it holds the resource; others read the live leases to
learn who owns what. The store (hub/storage/lease_store.py, table `leases`) keeps one row per
name, and the database's clock decides expiry.

On SQLite (one hub, no other worker can exist) `shared` is False and nothing is written: every
claim succeeds and no lease of another worker is ever seen, so single-hub installs behave as
before.

The worker id is `hub.worker_id` from configuration.yaml, else one generated once and kept in
`<config dir>/.worker_id` (`vw-<hub name slug>-<8 hex>`), the way the MQTT client id is made.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from .states import slugify

_LOGGER = logging.getLogger(__name__)

WORKER_ID_FILE = ".worker_id"


class LeaseStore(Protocol):
    async def claim(self, name: str, owner: str, ttl: float, *, take_over: bool = False,
                    info: dict[str, Any] | None = None) -> tuple[bool, str | None]: ...

    async def claim_many(self, names: dict[str, dict[str, Any] | None], owner: str, ttl: float,
                         *, take_over: bool = False) -> tuple[set[str], dict[str, str]]: ...

    async def renew(self, names: Iterable[str], owner: str, ttl: float) -> set[str]: ...

    async def release(self, names: Iterable[str], owner: str) -> int: ...

    async def live(self, prefix: str) -> dict[str, dict[str, Any]]: ...


def worker_id_for(config_dir: Path, hub_config: dict[str, Any]) -> str:
    """The configured `hub.worker_id`, else the generated one kept in the config dir."""
    configured = hub_config.get("worker_id")
    if configured:
        return str(configured)
    path = Path(config_dir) / WORKER_ID_FILE
    try:
        found = path.read_text(encoding="utf-8").strip()
    except OSError:
        found = ""
    if found:
        return found
    slug = slugify(str(hub_config.get("name") or "hub")).replace("_", "-")[:24] or "hub"
    made = f"vw-{slug}-{secrets.token_hex(4)}"
    try:
        path.write_text(made + "\n", encoding="utf-8")
    except OSError as err:  # a read-only config dir: the id lives as long as the process
        _LOGGER.warning("Cannot keep the worker id in %s (%s); using %s for this run",
                        path, err, made)
    return made


class LeaseManager:
    """`hub.leases`: claims in the name of this worker (`worker_id`)."""

    def __init__(self, worker_id: str, store: LeaseStore | None, shared: bool) -> None:
        self.worker_id = worker_id
        self.store = store
        #: True when other workers may share the database (PostgreSQL): leases are real.
        self.shared = shared and store is not None

    async def claim(self, name: str, ttl: float, *, take_over: bool = False,
                    info: dict[str, Any] | None = None) -> tuple[bool, str | None]:
        """Own `name` for `ttl` seconds: (owned, previous live owner if another worker)."""
        if not self.shared:
            return True, None
        assert self.store is not None
        owned, previous = await self.store.claim(name, self.worker_id, ttl,
                                                 take_over=take_over, info=info)
        return owned, previous if previous != self.worker_id else None

    async def claim_many(self, names: dict[str, dict[str, Any] | None], ttl: float, *,
                         take_over: bool = False) -> tuple[set[str], dict[str, str]]:
        """`claim` for several names (name -> info) in one transaction: (owned names,
        previous live owner per name, other workers only)."""
        if not self.shared:
            return set(names), {}
        assert self.store is not None
        owned, previous = await self.store.claim_many(names, self.worker_id, ttl,
                                                      take_over=take_over)
        return owned, {name: who for name, who in previous.items() if who != self.worker_id}

    async def renew(self, names: Iterable[str], ttl: float) -> set[str]:
        """The names this worker still holds after extending them (lost ones are missing)."""
        if not self.shared:
            return set(names)
        assert self.store is not None
        return await self.store.renew(names, self.worker_id, ttl)

    async def release(self, names: Iterable[str]) -> None:
        if not self.shared:
            return
        assert self.store is not None
        await self.store.release(names, self.worker_id)

    async def live(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Live leases under `prefix`, every worker's (this one's included)."""
        if not self.shared:
            return {}
        assert self.store is not None
        return await self.store.live(prefix)
