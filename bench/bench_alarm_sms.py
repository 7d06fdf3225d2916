"""Alarm-to-SMS latency under fleet load (issue 12, item 4): p50/p99 from a smoke alarm's
MQTT publish to the modem receiving AT+CMGS, per offered telemetry rate, and the highest
*sustained* rate: p99 within 1 s (our promise, docs/benchmarks.md) while the hub keeps up with
the readings (its intake lag, `voltwatch_mqtt_intake_lag_seconds`, within 10 s at the end of
the rate, and at least 95 % of the published readings handled over the rate). Since alarms have their own MQTT connection they stay fast on a hub far behind its
readings, so the latency alone no longer says whether a rate is sustainable.

What runs, each its own process except the modem:
* a private Mosquitto and a fresh PostgreSQL database (as bench_fleet);
* `voltwatch run` with `ALARM_SMS_DEVICES` fleet detectors plus `ALARM_SMS_ALARMS` alarm
  detectors per rate (mqtt + smoke + notify_sms plugins), the `sms` notifier on a pty whose
  other end is the modem simulator (voltwatch_notify_sms.simulator) in a thread of this
  process, a user with a phone and a subscription to the fleet's alarms (REST API);
* for each rate R: `voltwatch simulate fleet` with the same detectors at an interval of
  DEVICES / R seconds (so R msg/s, spread evenly), a warm-up, then the alarms: one detector at
  a time publishes `smoke_alarm` (CONTRACTS §6) and the clock runs until the simulator sees
  the next AT+CMGS. One alarm at a time: the latency of one alarm, not the modem's queue.

Rate 0 (no fleet running) is measured first in the same run: it is the baseline each loaded
p99 is compared with (ratio = loaded / idle). Timestamps are `time.time()` in two processes on
one machine.

`ALARM_SMS_DEVICES` (default 10000), `ALARM_SMS_RATES` (msg/s, comma-separated, default
333,1000,2000,3333), `ALARM_SMS_ALARMS` (alarms per rate, default 20),
`ALARM_SMS_WARMUP` (seconds of load before the alarms, default 15), `ALARM_SMS_WORK` (a
directory to keep: hub.log, the broker's log). An SMS missing after 60 s stops the sweep: the
load stops and the bench says whether it came later (LATE) or never (LOST).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fleet import (
    HubProcess,
    bench_database,
    start_fleet,
    start_hub,
    stop_fleet,
)
from common import Result
from voltwatch_mqtt.fleet import devices as fleet_devices
from voltwatch_mqtt.testing import MosquittoBroker
from voltwatch_notify_sms.simulator import ModemSimulator

from hub.fleet import write_devices

DEVICES = int(os.environ.get("ALARM_SMS_DEVICES", "10000"))
RATES = [float(r) for r in os.environ.get("ALARM_SMS_RATES", "333,1000,2000,3333").split(",")]
ALARMS = int(os.environ.get("ALARM_SMS_ALARMS", "20"))
WARMUP = float(os.environ.get("ALARM_SMS_WARMUP", "15"))
PHONE = "+8613800138000"
QUIET_INTERVAL = 3600.0  # the fleet's configured reporting interval (see `_run`)
PROMISE_MS = 1000.0
KEPT_UP_S = 10.0  # readings this far behind at the end of a rate: the hub did not keep up
KEPT_UP_SHARE = 0.95  # nor did it if it handled less than this share of what was published


class TimedModem(ModemSimulator):
    """The simulator, noting the wall-clock time of every AT+CMGS it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.cmgs_at: list[float] = []

    def _command(self, line: str) -> None:
        if line.upper().startswith("AT+CMGS="):
            self.cmgs_at.append(time.time())
        super()._command(line)


class Side:
    """An event loop in a thread: the modem simulator and the alarm publisher live there, so
    they answer while this thread waits on the hub."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def write_config_devices(path: Path, alarm_ids: list[str], interval: float) -> None:
    import argparse

    fleet = fleet_devices(argparse.Namespace(devices=DEVICES, mqtt_id="fleet-smoke-1",
                                             interval=interval, project="fleet"))
    alarms = fleet_devices(argparse.Namespace(devices=len(alarm_ids), mqtt_id=alarm_ids[0],
                                              interval=interval, project="fleet"))
    write_devices(path, fleet + alarms)


def subscribe(hub: HubProcess) -> None:
    user = hub.api("POST", "/api/users", {"name": "duty", "role": "user",
                                          "password": "bench-duty-1", "projects": ["fleet"],
                                          "phone": PHONE, "language": "en"})
    assert isinstance(user, dict)
    hub.api("POST", "/api/subscriptions", {"user_id": user["id"], "projects": ["fleet"],
                                           "kinds": ["alarm"]})


def alarm_latencies(side: Side, modem: TimedModem, broker: MosquittoBroker,
                    device_ids: list[str]) -> list[float]:
    """Milliseconds from each alarm's publish to the next AT+CMGS, one alarm at a time."""
    import aiomqtt

    async def publish(device_id: str) -> float:
        async with aiomqtt.Client(broker.host, broker.port,
                                  identifier=f"bench-alarm-{os.getpid()}") as client:
            sent = time.time()
            await client.publish(f"voltwatch/dev/{device_id}/event", json.dumps(
                {"ts": round(sent, 3), "event": "smoke_alarm", "state": "active"}), qos=1)
            return sent

    latencies = []
    for device_id in device_ids:
        before = len(modem.sent)
        sent = side.call(publish(device_id))
        if not wait_sms(modem, before, 60):  # a bound on a lost SMS, not a measurement
            raise NoSms(device_id, sent, before)
        first = next(at for at in modem.cmgs_at if at >= sent)
        latencies.append(1000 * (first - sent))
    return latencies


class NoSms(RuntimeError):
    """An alarm's SMS did not come within 60 s under load (late or lost: `late_or_lost`)."""

    def __init__(self, device_id: str, sent: float, before: int) -> None:
        super().__init__(f"no SMS for the alarm of {device_id} within 60 s")
        self.device_id, self.sent, self.before = device_id, sent, before


def wait_sms(modem: TimedModem, before: int, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while len(modem.sent) <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def late_or_lost(hub: HubProcess, modem: TimedModem, missing: NoSms, limit: float = 300) -> str:
    """With the load stopped, does the missing SMS still come (late) or never (lost)?"""
    events = hub.metrics().get("voltwatch_mqtt_messages_event_total", 0)
    if wait_sms(modem, missing.before, limit):
        first = next(at for at in modem.cmgs_at if at >= missing.sent)
        return (f"LATE: the SMS came {first - missing.sent:.0f} s after the alarm "
                f"(hub had counted {events:.0f} events at the 60 s mark)")
    events = hub.metrics().get("voltwatch_mqtt_messages_event_total", 0)
    return (f"LOST: no SMS {limit + 60:.0f} s after the alarm; the hub counted {events:.0f} "
            f"events in all")


def run() -> list[Result]:
    keep = os.environ.get("ALARM_SMS_WORK")  # a directory to keep (hub.log, broker log)
    with bench_database() as database_url, tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return _run(work, database_url)


def _run(work: Path, database_url: str) -> list[Result]:
    rates = [0.0, *RATES]
    alarm_ids = [f"alarm-smoke-{n}" for n in range(1, ALARMS * len(rates) + 1)]
    devices_file = work / "fleet.yaml"
    # The fleet is silent during the idle baseline and between rates: with its real interval
    # as the reporting interval, 10,000 silence alarms (and their clearing) would run through
    # the measurement. The bench measures one alarm's way to the SMS, so the watchdog waits
    # longer than the run (tests/test_smoke_hub.py covers the watchdog under lag).
    write_config_devices(devices_file, alarm_ids, QUIET_INTERVAL)
    side = Side()
    modem = TimedModem()
    port = side.call(_open(modem))
    # As docs/operations.md configures a production broker: a consumer that lags (a hub
    # draining its start-up backlog) gets its messages queued, not dropped at 1,000.
    # `log_type notice` names it when the broker starts dropping a lagging session's messages.
    broker = MosquittoBroker(work / "broker", extra=[
        "max_queued_messages 100000", "set_tcp_nodelay true", "log_type error",
        "log_type warning", "log_type notice", "log_type information"])
    broker.start()
    per_rate: dict[float, list[float]] = {}
    behind: dict[float, float] = {}  # rate -> seconds the readings were behind at its end
    kept: dict[float, float] = {}  # rate -> handled / published over the rate
    try:
        hub = start_hub(broker, work, devices_file, database_url, extra_config=f"""
            notify:
              - {{platform: sms, name: sms, modem: {{port: "{port}", baudrate: 115200}},
                  retries: 1, retry_backoff: 0.01, command_timeout: 2.0, send_timeout: 5.0}}
            notifications: {{rate_limit: {{max: 1000, window: 1}}}}
        """, plugins="mqtt,smoke,notify_sms")
        try:
            print(f"  {DEVICES + len(alarm_ids)} devices: hub started in {hub.startup:.1f} s",
                  file=sys.stderr, flush=True)
            subscribe(hub)
            for index, rate in enumerate(rates):
                ids = alarm_ids[index * ALARMS:(index + 1) * ALARMS]
                fleet = start_fleet(broker, DEVICES, DEVICES / rate) if rate else None
                # Offered and handled over the whole rate (warm-up and alarms): the window of
                # the alarms alone is a few seconds, too short to say what the hub keeps up with.
                count0, t0 = hub.telemetry(), time.monotonic()
                published = 0
                try:
                    if fleet is not None:
                        time.sleep(WARMUP)  # the load is steady before the first alarm
                    try:
                        per_rate[rate] = alarm_latencies(side, modem, broker, ids)
                    except NoSms as err:
                        # The hub fell behind this rate: an alarm's SMS did not come within
                        # 60 s. That rate (and every higher one) misses the promise; stop
                        # here, after finding out whether the SMS was late or lost.
                        if fleet is not None:
                            stop_fleet(fleet)
                            fleet = None
                        print(f"  {rate:,.0f} msg/s offered: {err}; "
                              f"{late_or_lost(hub, modem, err)}", file=sys.stderr, flush=True)
                        dropped = [line for line in broker.log_tail(100000).splitlines()
                                   if "dropped" in line]
                        print(f"  broker log: {len(dropped)} 'dropped' lines "
                              f"{dropped[:3]}", file=sys.stderr, flush=True)
                        per_rate[rate] = [float("inf")]
                        break
                    behind[rate] = hub.metrics().get("voltwatch_mqtt_intake_lag_seconds", 0.0)
                    handled = (hub.telemetry() - count0) / (time.monotonic() - t0)
                finally:
                    if fleet is not None:
                        published = stop_fleet(fleet).get("mqtt_messages", 0)
                offered = published / (time.monotonic() - t0)
                kept[rate] = handled / offered if offered else 1.0
                lat = per_rate[rate]
                print(f"  {rate:,.0f} msg/s asked ({offered:,.0f} published, {handled:,.0f} "
                      f"handled, readings {behind[rate]:.1f} s behind at the end): alarm to SMS "
                      f"p50 {percentile(lat, 0.5):.0f} ms, p99 {percentile(lat, 0.99):.0f} ms, "
                      f"max {max(lat):.0f} ms over {len(lat)} alarms",
                      file=sys.stderr, flush=True)
        finally:
            hub.stop()
    finally:
        broker.stop()
        side.call(_close(modem))
        side.close()
    idle_p50 = percentile(per_rate[0.0], 0.5)
    idle_p99 = percentile(per_rate[0.0], 0.99)
    results = [Result(f"alarm to SMS idle ({ALARMS} alarms): p99", idle_p99, "ms", None, "",
                      f"<= {PROMISE_MS:.0f} ms", idle_p99 <= PROMISE_MS)]
    best = 0.0
    for rate in RATES:
        if rate not in per_rate:
            continue  # not run: a lower rate already lost an alarm's SMS
        p50, p99 = percentile(per_rate[rate], 0.5), percentile(per_rate[rate], 0.99)
        label = f"alarm to SMS @{rate:,.0f} msg/s ({DEVICES // 1000}k devices, {ALARMS} alarms)"
        results.append(Result(f"{label}: p50", p50, "ms", idle_p50, "idle p50", "-"))
        results.append(Result(f"{label}: p99", p99, "ms", idle_p99, "idle p99",
                              f"<= {PROMISE_MS:.0f} ms", p99 <= PROMISE_MS))
        lag = behind.get(rate, float("inf"))
        results.append(Result(f"readings behind @{rate:,.0f} msg/s (intake lag at the end)", lag,
                              "s", None, "", f"<= {KEPT_UP_S:.0f} s", lag <= KEPT_UP_S))
        share = kept.get(rate, 0.0)
        results.append(Result(f"readings handled / published @{rate:,.0f} msg/s", 100 * share,
                              "%", None, "", f">= {100 * KEPT_UP_SHARE:.0f} %",
                              share >= KEPT_UP_SHARE))
        # Sustained: the alarms are on time AND the hub keeps up with the readings (a hub
        # whose backlog grows without end has its readings dropped by the broker at last).
        if p99 <= PROMISE_MS and lag <= KEPT_UP_S and share >= KEPT_UP_SHARE:
            best = max(best, rate)
    results.append(Result("alarm to SMS: highest sustained rate (p99 <= 1 s, readings kept up)",
                          best, "msg/s", None, "", ">= 3,333 msg/s (100k devices @30 s)",
                          best >= 3333))
    return results


async def _open(modem: TimedModem) -> str:
    return modem.open()


async def _close(modem: TimedModem) -> None:
    modem.close()


if __name__ == "__main__":
    for result in run():
        print(result.row())
