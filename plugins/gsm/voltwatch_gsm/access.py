"""Who may speak for a DTU: the registration policy, the key check and the refusal record.

An IMEI is printed on the DTU's label, so "I am 860000000000001" proves nothing. DTUs accept a
custom registration packet of up to 100 bytes, so a site can put a per-DTU key right after the
id; the hub then compares it in constant time (`hmac.compare_digest`) with the configured one.

Policies (`gsm.auth`), from weakest to strictest:

* `open` (default, CONTRACTS §7 as before): any id may register; an unknown id is kept as
  pending for adoption. A DTU with a configured key must still send it. DTUs without a key are
  reported as `weak` in the API and in /metrics.
* `allowlist`: only ids the hub knows (a device's link names them) may register; a key is
  checked where one is configured.
* `key`: only known ids *with* a configured key, and the key must match.

Every refusal is logged with the peer, the claimed id and the reason, counted by reason for
/metrics, and kept in a short list for the admin (`GET /api/gsm/dtus` -> `refusals`).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from hub.core.states import iso

_LOGGER = logging.getLogger(__name__)

AUTH_OPEN = "open"
AUTH_ALLOWLIST = "allowlist"
AUTH_KEY = "key"
AUTH_POLICIES = (AUTH_OPEN, AUTH_ALLOWLIST, AUTH_KEY)
MAX_KEY_BYTES = 100  # what DTUs accept as a custom registration packet

# Refusal reasons (the /metrics names are gsm_refused_<reason>_total).
REFUSED_UNKNOWN = "unknown"  # id not adopted, policy allowlist or key
REFUSED_NO_KEY_CONFIGURED = "no_key_configured"  # policy key, id has no key
REFUSED_BAD_KEY = "bad_key"  # wrong or missing key
REFUSED_IMPOSTOR = "impostor"  # the old connection still answers the probe
REFUSED_RATE = "connection_rate"  # too many connections from one address
REFUSED_REASONS = (REFUSED_UNKNOWN, REFUSED_NO_KEY_CONFIGURED, REFUSED_BAD_KEY,
                   REFUSED_IMPOSTOR, REFUSED_RATE)
MAX_REMEMBERED = 200


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy says about a claimed id before its key is read."""

    key: bytes | None = None  # the key that must follow the id (None: nothing follows)
    refusal: str | None = None  # a REFUSED_* reason: close without reading further
    message: str = ""


def decide(policy: str, dtu_id: str, known: bool, key: bytes | None) -> Verdict:
    """The policy's answer for `dtu_id` (known = adopted; key = its configured key, if any)."""
    if policy != AUTH_OPEN and not known:
        return Verdict(refusal=REFUSED_UNKNOWN,
                       message=f"id not adopted (gsm.auth: {policy})")
    if policy == AUTH_KEY and key is None:
        return Verdict(refusal=REFUSED_NO_KEY_CONFIGURED,
                       message="no key configured for it (gsm.auth: key)")
    return Verdict(key=key)


def key_matches(received: bytes, expected: bytes) -> bool:
    """Constant time for equal lengths (the expected length is not secret: DTUs send it)."""
    return hmac.compare_digest(received, expected)


class RefusalLog:
    """Counts refusals by reason and keeps the latest few for the admin."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=MAX_REMEMBERED)

    def record(self, peer: str, claimed: str | None, reason: str, message: str,
               log: bool = True) -> None:
        self.counts[reason] += 1
        self.recent.append({"at": iso(time.time()), "peer": peer, "claimed": claimed,
                            "reason": reason, "message": message})
        if log:
                _LOGGER.warning("GSM: refused connection from %s claiming %s: %s (%s)", peer,
                            claimed or "-", message, reason)

    def stats(self) -> dict[str, float]:
        out = {f"gsm_refused_{reason}_total": float(self.counts[reason])
               for reason in REFUSED_REASONS}
        out["gsm_refused_total"] = float(sum(self.counts.values()))
        return out
