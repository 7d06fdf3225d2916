"""How far behind real time this hub handles its telemetry: a probe it sends itself.

When a hub cannot keep up with its share of the telemetry (more messages per second than its
CPU handles), the backlog waits at the broker in the hub's session queue. Nothing in a reading
says how long it waited there (device clocks are not to be trusted), so the bulk connection
publishes a small probe to a topic only it subscribes to, once a second, at QoS 1: the probe
joins the same queue behind the backlog, and the time it takes to come back is the intake lag.

Two users:
* the silence watchdog of a push-device plugin adds the lag to its limit (`MqttLink.intake_lag`,
  hub/core/push.py): a detector whose reports wait in the hub's own queue is not silent, and
  ten thousand false `communication_lost` alarms would only push the hub further behind;
* operators: `voltwatch_mqtt_intake_lag_seconds` on /metrics (docs/operations.md says what to
  alert on), and a warning in the log while the hub is more than `WARN_AFTER` seconds behind.

While the bulk connection is down the probes in flight are forgotten and the lag reads 0: a
hub that hears nothing at all is not "behind", and its detectors going silent is the truth.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable

#: Seconds between two probes (each is one ~20-byte QoS 1 message through the broker).
PROBE_INTERVAL = 1.0
#: Probes waiting for their return; beyond this the oldest ones are given up (counted lost).
MAX_OUTSTANDING = 600
#: A measurement this old no longer describes the present (probes stopped coming back).
FRESH_FOR = 5 * PROBE_INTERVAL
#: Seconds behind at which the hub logs a warning (throttled by the caller).
WARN_AFTER = 10.0


class IntakeLag:
    """Outstanding probes (sequence -> monotonic send time) and the last measured lag."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._outstanding: OrderedDict[int, float] = OrderedDict()
        self._seq = 0
        # Probes of an earlier process with the same client id may still be queued for the
        # session: this process's probes carry its own mark, and only those are measured.
        self._mark = os.urandom(4).hex()
        self.measured = 0.0  # seconds, the round trip of the last probe that came back
        self._measured_at: float | None = None
        self.sent = 0
        self.returned = 0
        self.lost = 0
        self.max_seen = 0.0

    # -- the connection tells ----------------------------------------------------------------
    def next_probe(self) -> bytes:
        """The payload of the next probe (`<mark>:<sequence>`), noted as outstanding."""
        self._seq += 1
        self._outstanding[self._seq] = self._clock()
        self.sent += 1
        while len(self._outstanding) > MAX_OUTSTANDING:
            self._outstanding.popitem(last=False)
            self.lost += 1
        return f"{self._mark}:{self._seq}".encode()

    def returned_probe(self, payload: bytes | bytearray) -> None:
        """A probe came back: everything sent before it is through the queue too."""
        mark, _, number = bytes(payload).decode("ascii", "replace").partition(":")
        if mark != self._mark or not number.isdigit():
            return  # an earlier process's probe, or not a probe: the lag is unchanged
        seq = int(number)
        sent_at = self._outstanding.get(seq)
        if sent_at is None:
            return  # given up already (MAX_OUTSTANDING)
        while self._outstanding:
            first, _ = self._outstanding.popitem(last=False)
            if first == seq:
                break
        now = self._clock()
        self.measured = now - sent_at
        self._measured_at = now
        self.returned += 1
        self.max_seen = max(self.max_seen, self.measured)

    def disconnected(self) -> None:
        """Probes in flight may come back after the reconnect or never: stop waiting."""
        self._outstanding.clear()

    # -- the answer ------------------------------------------------------------------------
    def seconds(self) -> float:
        """Seconds the hub is behind now: at least the age of the oldest probe not back yet."""
        now = self._clock()
        lag = 0.0
        if self._measured_at is not None and now - self._measured_at <= FRESH_FOR:
            lag = self.measured
        if self._outstanding:
            lag = max(lag, now - next(iter(self._outstanding.values())))
        return lag

    def stats(self) -> dict[str, float]:
        return {"intake_lag_seconds": round(self.seconds(), 3),
                "intake_lag_max_seconds": round(self.max_seen, 3),
                "lag_probes_sent": self.sent, "lag_probes_returned": self.returned,
                "lag_probes_lost": self.lost}
