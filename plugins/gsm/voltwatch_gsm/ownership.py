"""One owning worker per DTU when several workers share one PostgreSQL (issue 12).

A DTU's socket reaches the one worker a TCP load balancer picked. That worker records itself as
the DTU's owner in the shared database (`hub.leases`, lease `gsm.dtu.<id>`) and renews the lease
every third of `gsm.owner_lease` while the socket is open and the DTU talks. Every other worker
reads the live leases on the same beat and:

* does not poll the DTU's detectors (its link raises `LinkElsewhere`, which pollers skip), so it
  never raises `communication_lost` for them, and shows them as connected to the owner;
* treats the DTU as alive while the owner's lease is live: its own silence timer only starts
  counting once no worker owns the DTU (then `heartbeat_timeout` later every worker raises the
  fault, and the alarm table's unique index folds them into one record);
* answers a control call (`arcm.trip`, `set_parameter`, ...) with a failure naming the owner.

A DTU that dials in to another worker moves its ownership there at once (the newest socket
wins: the DTU itself gave up the old one); the old owner learns it at its next renewal and
closes its stale socket. A worker that stops releases its leases; a killed one's run out.

On SQLite `hub.leases.shared` is False: nothing is written and this hub owns every DTU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Dtu, GsmServer

_LOGGER = logging.getLogger(__name__)

LEASE_PREFIX = "gsm.dtu."


def lease_name(dtu_id: str) -> str:
    return f"{LEASE_PREFIX}{dtu_id}"


class DtuOwnership:
    """This worker's view of who owns which DTU, refreshed from the shared database."""

    def __init__(self, server: GsmServer) -> None:
        self.server = server
        self.hub = server.hub
        #: DTU id -> (owning worker, local monotonic time its lease runs out), other workers only
        self.remote: dict[str, tuple[str, float]] = {}
        #: DTU ids this worker holds a lease for
        self.held: set[str] = set()
        self.claiming: set[str] = set()  # first claims in flight
        self.syncs = 0  # completed refreshes (tests wait on this instead of on a clock)
        self.failures = 0  # refreshes or claims the database refused
        self.moved_away = 0  # DTUs another worker took over from this one
        self.taken_over = 0  # DTUs this worker took over from another

    @property
    def shared(self) -> bool:
        return bool(self.hub.leases.shared)

    @property
    def worker_id(self) -> str:
        return str(self.hub.leases.worker_id)

    @property
    def ttl(self) -> float:
        return self.server.settings.owner_lease

    # -- queries ----------------------------------------------------------------------------
    def owner_elsewhere(self, dtu_id: str) -> str | None:
        """The other worker that owns this DTU now, or None (this worker, or nobody)."""
        found = self.remote.get(dtu_id)
        if found is None:
            return None
        dtu = self.server.dtus.get(dtu_id)
        if dtu is not None and dtu.connected:
            return None  # the socket is here: until the lease says otherwise, we drive it
        owner, until = found
        return owner if time.monotonic() < until else None

    def owner_of(self, dtu_id: str) -> str | None:
        """The worker that drives this DTU (this one's id when the socket is here)."""
        dtu = self.server.dtus.get(dtu_id)
        if dtu is not None and dtu.connected:
            return self.worker_id
        return self.owner_elsewhere(dtu_id)

    # -- events from the server ---------------------------------------------------------------
    def attached(self, dtu: Dtu) -> None:
        """A socket for this DTU registered here: claim it (take it over from any other)."""
        if self.shared and dtu.known:
            self.server._spawn(self._claim(dtu), f"gsm claim {dtu.id}")

    def dropped(self, dtu: Dtu) -> None:
        """The socket closed: give the lease up, so the DTU's new worker need not wait."""
        if self.shared and dtu.id in self.held:
            self.held.discard(dtu.id)
            self.server._spawn(self._release([dtu.id]), f"gsm release {dtu.id}")

    async def _claim(self, dtu: Dtu) -> None:
        self.claiming.add(dtu.id)
        try:
            await self._claim_now(dtu)
        finally:
            self.claiming.discard(dtu.id)

    async def _claim_now(self, dtu: Dtu) -> None:
        conn = dtu.connection
        try:
            owned, previous = await self.hub.leases.claim(
                lease_name(dtu.id), self.ttl, take_over=True, info={"peer": dtu.peer})
        except Exception as err:  # noqa: BLE001 - the database may be away: the next refresh tries
            self.failures += 1
            _LOGGER.warning("GSM: cannot record this worker as owner of DTU %s: %s", dtu.id, err)
            return
        if not owned:
            return
        if conn is None or dtu.connection is not conn or conn.closed:
            # The socket went while we claimed: give it back at once.
            await self._release([dtu.id])
            return
        self.held.add(dtu.id)
        self.remote.pop(dtu.id, None)
        if previous is not None:
            self.taken_over += 1
            _LOGGER.info("GSM: DTU %s moved here from worker %s", dtu.id, previous)
        self.server.ownership_changed(dtu)

    async def _release(self, ids: list[str]) -> None:
        try:
            await self.hub.leases.release([lease_name(i) for i in ids])
        except Exception as err:  # noqa: BLE001 - it runs out by itself
            self.failures += 1
            _LOGGER.warning("GSM: releasing DTU ownership failed (it runs out by itself): %s",
                            err)

    # -- the beat -----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - a database hiccup: try on the next beat
                self.failures += 1
                _LOGGER.warning("GSM: refreshing DTU ownership failed: %s", err)
            await asyncio.sleep(self.ttl / 3)

    async def refresh(self) -> None:
        """Renew what this worker drives; learn what the others drive."""
        server = self.server
        ours = {dtu.id for dtu in server.dtus.values()
                if dtu.known and dtu.connected and not dtu.communication_lost}
        for dtu_id in list(self.held - ours):  # silent or gone: let it run out elsewhere
            self.held.discard(dtu_id)
            await self._release([dtu_id])
        ours -= self.claiming  # their first claim is in flight
        renewed = await self.hub.leases.renew([lease_name(i) for i in ours & self.held],
                                              self.ttl)
        for dtu_id in sorted(ours):
            if lease_name(dtu_id) in renewed:
                continue
            if dtu_id in self.held:  # held, not renewed: another worker took it over
                self._moved_away(server.dtus[dtu_id])
                continue
            # Never claimed (the first claim failed): our socket is the DTU's newest.
            await self._claim(server.dtus[dtu_id])
        started = time.monotonic()
        live = await self.hub.leases.live(LEASE_PREFIX)
        remote: dict[str, tuple[str, float]] = {}
        for name, lease in live.items():
            owner = lease["owner"]
            if owner == self.worker_id:
                continue
            remote[name[len(LEASE_PREFIX):]] = (owner, started + float(lease["expires_in"]))
        before = self.remote
        self.remote = remote
        for dtu_id in set(before) | set(remote):
            if dtu_id in server.known_ids:
                dtu = server.dtu(dtu_id)
                if dtu_id in remote:
                    dtu.seen_elsewhere()
                if before.get(dtu_id, ("",))[0] != remote.get(dtu_id, ("",))[0]:
                    server.ownership_changed(dtu)
        self.syncs += 1
        server.notify()

    def _moved_away(self, dtu: Dtu) -> None:
        """Another worker took the DTU over (it dialled in there): drop our stale socket."""
        self.held.discard(dtu.id)
        self.moved_away += 1
        conn = dtu.connection
        _LOGGER.warning("GSM: DTU %s is now owned by another worker; closing the old connection "
                        "from %s", dtu.id, conn.peer if conn is not None else "?")
        if conn is not None:
            conn.close()

    async def release_all(self) -> None:
        """At shutdown: the DTUs will dial in to another worker, which need not wait."""
        if self.shared and self.held:
            ids, self.held = sorted(self.held), set()
            await self._release(ids)

    def stats(self) -> dict[str, float]:
        return {
            "gsm_dtus_owned_elsewhere": float(sum(
                1 for dtu_id in self.remote if self.owner_elsewhere(dtu_id) is not None)),
            "gsm_owner_failures_total": float(self.failures),
            "gsm_owner_moved_away_total": float(self.moved_away),
            "gsm_owner_taken_over_total": float(self.taken_over),
        }
