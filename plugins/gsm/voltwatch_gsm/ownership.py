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
    from .server import Dtu, DtuConnection, GsmServer

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
        self.claiming: set[str] = set()  # first claims queued or in flight
        self._to_claim: dict[str, DtuConnection | None] = {}
        self._to_release: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self.syncs = 0  # completed refreshes (tests wait on this instead of on a clock)
        self.failures = 0  # refreshes or claims the database refused
        self.moved_away = 0  # DTUs another worker took over from this one
        self.taken_over = 0  # DTUs this worker took over from another

    @property
    def shared(self) -> bool:
        leases = getattr(self.hub, "leases", None)  # a stand-in hub in a test may have none
        return bool(leases is not None and leases.shared)

    @property
    def worker_id(self) -> str:
        leases = getattr(self.hub, "leases", None)
        return str(leases.worker_id) if leases is not None else "local"

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
            self._to_claim[dtu.id] = dtu.connection
            self.claiming.add(dtu.id)
            self._kick()

    def dropped(self, dtu: Dtu) -> None:
        """The socket closed: give the lease up, so the DTU's new worker need not wait."""
        if self.shared and dtu.id in self.held:
            self.held.discard(dtu.id)
            self._to_release.add(dtu.id)
            self._kick()

    def _kick(self) -> None:
        """One writer task at a time: a worker restart brings thousands of DTUs at once, and
        a transaction each would exhaust the database pool; they go in batches instead."""
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(),
                                                                  name="gsm ownership writes")
            self.server._tasks.add(self._writer)
            self._writer.add_done_callback(self.server._task_done)

    async def _write(self) -> None:
        while self._to_release or self._to_claim:
            if self._to_release:
                ids, self._to_release = sorted(self._to_release), set()
                await self._release(ids)
            if self._to_claim:
                batch, self._to_claim = self._to_claim, {}
                try:
                    await self._claim_batch(batch)
                finally:
                    self.claiming -= set(batch) - set(self._to_claim)

    async def _claim_batch(self, batch: dict[str, DtuConnection | None]) -> None:
        names = {lease_name(dtu_id): {"peer": conn.peer if conn is not None else None}
                 for dtu_id, conn in batch.items()}
        try:
            owned, previous = await self.hub.leases.claim_many(names, self.ttl, take_over=True)
        except Exception as err:  # noqa: BLE001 - the database may be away: the next refresh tries
            self.failures += 1
            _LOGGER.warning("GSM: cannot record this worker as owner of %d DTU(s) (%s): %s",
                            len(batch), ", ".join(sorted(batch)[:5]), err)
            return
        give_back: list[str] = []
        for dtu_id, conn in batch.items():
            name = lease_name(dtu_id)
            if name not in owned:
                continue
            dtu = self.server.dtus.get(dtu_id)
            if dtu is None or conn is None or dtu.connection is not conn or conn.closed:
                give_back.append(dtu_id)  # the socket went while we claimed
                continue
            self.held.add(dtu_id)
            self.remote.pop(dtu_id, None)
            if name in previous:
                self.taken_over += 1
                _LOGGER.info("GSM: DTU %s moved here from worker %s", dtu_id, previous[name])
            self.server.ownership_changed(dtu)
        if give_back:
            await self._release(give_back)

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
        stale = sorted(self.held - ours)  # silent or gone: free for another worker
        if stale:
            self.held -= set(stale)
            await self._release(stale)
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
            self.attached(server.dtus[dtu_id])
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
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()  # a claim in flight may still commit: released below all the same
            await asyncio.gather(writer, return_exceptions=True)
        ids = sorted(self.held | self.claiming | set(self._to_claim))
        self.held, self.claiming, self._to_claim = set(), set(), {}
        if self.shared and ids:
            await self._release(ids)

    def stats(self) -> dict[str, float]:
        return {
            "gsm_dtus_owned_elsewhere": float(sum(
                1 for dtu_id in self.remote if self.owner_elsewhere(dtu_id) is not None)),
            "gsm_owner_failures_total": float(self.failures),
            "gsm_owner_moved_away_total": float(self.moved_away),
            "gsm_owner_taken_over_total": float(self.taken_over),
        }
