"""Hazard analysis: trends forecast to cross the alarm setpoint, and steps against the daily
load profile, each raising a 隐患预警 (hazard warning) event with its evidence.

What it does: for every residual-current and cable-temperature entity, take the daily peaks
(the `max` of the 1-day rollups, hub/storage/rollups.py) over the last `window` days, fit a
least-squares line through them, and when the line rises steadily (r² ≥ `min_r2`, a rise of
at least `min_rise` of the setpoint over the window) and reaches the device's alarm setpoint
(`alarms.thresholds`: residual current 300 mA, temperature 80 °C unless configured) within
`horizon` days, fire a `hazard_warning` device condition (an event record, CONTRACTS §11)
whose message carries the evidence: slope per day, today's fitted peak, the setpoint and the
days left. That is a warning *before* any alarm: an entity already at its setpoint is the
alarm engine's business, not a forecast.

Why daily peaks: an alarm trips on the peak, not the mean, and a day smooths out the load
cycle that would otherwise dominate any shorter trend.

The step check (when no trend fired): each of the last `step_hours` complete hourly means
(1-hour rollups) exceeds the mean of the *same hour of the day* over the previous
`baseline_days` by more than `step_sigma` standard deviations of those hours and by at least
`min_step` of the setpoint. Comparing an hour with the same hour on other days is the
detector's own daily load profile as its baseline: the evening peak of a restaurant's leakage
current is not a step, the same level at 3 a.m. is.

Once warned, an entity is quiet for `repeat_after` (7 days by default). The last warnings are
read back from the alarm records at start (`recent` callable), so a restart does not repeat
them.

The night check (residual current only, when the device has a `_current_a` entity): the
mean leakage of the night hours (`night_hours`, 0–5 h local) rises night after night (the
same fit and thresholds as the trend), while the night load is low (at most
`night_load_ratio` of the day's, 8–20 h) and does not rise with it — leakage the load does
not explain, the classic sign of damp or failing insulation.
Not done yet (issue 11): the monthly report.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import voluptuous as vol

from .conditions import EVENT_DEVICE_CONDITION, Condition
from .statistics import zone_of

_LOGGER = logging.getLogger(__name__)

HAZARD_WARNING = "hazard_warning"
SOURCE = "hazard_analysis"
DAY = 86400.0

_QUANTITY = re.compile(r"^sensor\.[a-z0-9_]+?_(residual_current|temperature(?:_[1-4])?)$")
_FALLBACK_SETPOINT = {"residual_current": 300.0, "temperature": 80.0}
_UNIT = {"residual_current": "mA", "temperature": "°C"}
_WORDS = {"residual_current": ("剩余电流", "residual current"),
          "temperature": ("温度", "temperature")}


def _duration(value: Any) -> float:
    from .config import duration

    return duration(value)


CONFIG_SCHEMA = vol.Schema({
    vol.Optional("enabled", default=True): bool,
    vol.Optional("interval", default=3600.0): vol.All(_duration, vol.Range(min=60)),
    vol.Optional("window", default=14 * DAY): vol.All(_duration, vol.Range(min=3 * DAY)),
    vol.Optional("min_days", default=7): vol.All(int, vol.Range(min=3)),
    vol.Optional("horizon", default=30 * DAY): vol.All(_duration, vol.Range(min=DAY)),
    vol.Optional("min_r2", default=0.6): vol.All(vol.Coerce(float), vol.Range(min=0, max=1)),
    vol.Optional("min_rise", default=0.05): vol.All(vol.Coerce(float), vol.Range(min=0)),
    vol.Optional("repeat_after", default=7 * DAY): _duration,
    # the step check: the last `step_hours` hourly means against the same hours of the day
    # over the previous `baseline_days` (the detector's own daily load profile)
    vol.Optional("baseline_days", default=7): vol.All(int, vol.Range(min=3, max=60)),
    vol.Optional("step_hours", default=3): vol.All(int, vol.Range(min=1, max=24)),
    vol.Optional("step_sigma", default=4.0): vol.All(vol.Coerce(float), vol.Range(min=1)),
    vol.Optional("min_step", default=0.1): vol.All(vol.Coerce(float), vol.Range(min=0)),
    # the night check: residual current rising night after night while the load (the
    # device's `_current_a`) is low at night — leakage that the load does not explain
    vol.Optional("night_hours", default=[0, 5]): vol.All(
        [vol.All(int, vol.Range(min=0, max=24))], vol.Length(min=2, max=2)),
    vol.Optional("night_load_ratio", default=0.3): vol.All(vol.Coerce(float),
                                                           vol.Range(min=0, max=1)),
})

#: (day start, daily peak) pairs of one entity, oldest first
DailyPeaks = Callable[[str, float, float], Awaitable[Sequence[tuple[float, float]]]]
#: (hour start, hourly mean) pairs of one entity, oldest first
HourlyMeans = Callable[[str, float, float], Awaitable[Sequence[tuple[float, float]]]]
#: entity ids warned about since a time (from the persisted event records)
RecentWarnings = Callable[[float], Awaitable[set[str]]]


@dataclass(frozen=True, slots=True)
class Trend:
    """The evidence of one forecast."""

    slope: float  # unit per day
    fitted: float  # today's fitted peak
    r2: float
    days: int  # days of data used
    days_to_cross: float


@dataclass(frozen=True, slots=True)
class NightLeak:
    """The evidence of leakage rising at night while the load is low."""

    slope: float  # unit per night
    fitted: float  # last night's fitted mean
    nights: int
    night_load: float  # A
    day_load: float  # A


@dataclass(frozen=True, slots=True)
class Step:
    """The evidence of a step against the daily load profile."""

    rise: float  # mean excess over the baseline of the same hours
    baseline: float  # mean baseline of those hours
    now: float  # mean of the last hours
    hours: int


def fit_trend(points: Sequence[tuple[float, float]]) -> tuple[float, float, float] | None:
    """Least squares through (day, peak): slope per day, the fitted last value, r²."""
    n = len(points)
    if n < 2:
        return None
    xs = [(t - points[0][0]) / DAY for t, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return slope, intercept + slope * xs[-1], r2


class HazardAnalyzer:
    """Runs the trend forecast every `interval`; `analyse()` is one pass (tests call it)."""

    def __init__(self, hub: Any, config: dict[str, Any] | None, peaks: DailyPeaks,
                 recent: RecentWarnings, hourly: HourlyMeans | None = None) -> None:
        self.hub = hub
        self.config = CONFIG_SCHEMA(dict(config or {}))
        self.peaks = peaks
        self.recent = recent
        self.hourly = hourly
        self.zone = zone_of(getattr(hub, "time_zone", None))
        self._warned: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.runs = 0
        self.warnings = 0

    async def async_start(self) -> None:
        if not self.config["enabled"]:
            return
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hazard analysis")

    async def async_stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config["interval"]):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.analyse()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed pass must not end the analysis
                _LOGGER.exception("Hazard analysis pass failed; trying again next interval")

    def _setpoint(self, device_id: str | None, quantity: str) -> float:
        alarms = getattr(self.hub, "alarms", None)
        if alarms is not None and device_id:
            value = alarms.thresholds_for(device_id).get(quantity, {}).get("alarm")
            if value is not None:
                return float(value)
        return _FALLBACK_SETPOINT[quantity]

    def _device_of(self, entity_id: str) -> str | None:
        entry = self.hub.entities.get(entity_id) if getattr(self.hub, "entities", None) else None
        if entry is not None and entry.device_id:
            return str(entry.device_id)
        state = self.hub.states.get(entity_id)
        device = state.attributes.get("device_id") if state is not None else None
        return str(device) if device else None

    def forecast(self, points: Sequence[tuple[float, float]], setpoint: float) -> Trend | None:
        """A Trend when the peaks rise steadily towards the setpoint within the horizon."""
        cfg = self.config
        if len(points) < cfg["min_days"]:
            return None
        fitted = fit_trend(points)
        if fitted is None:
            return None
        slope, today, r2 = fitted
        if slope <= 0 or r2 < cfg["min_r2"] or today >= setpoint or points[-1][1] >= setpoint:
            return None
        if slope * (len(points) - 1) < cfg["min_rise"] * setpoint:
            return None
        days_to_cross = (setpoint - today) / slope
        if days_to_cross > cfg["horizon"] / DAY:
            return None
        return Trend(slope, today, r2, len(points), days_to_cross)

    def step(self, hours: Sequence[tuple[float, float]], now: float,
             setpoint: float) -> Step | None:
        """A Step when each of the last complete hours exceeds its hour-of-day baseline."""
        cfg = self.config
        count = cfg["step_hours"]
        last = (now // 3600) * 3600 - 3600  # the last complete hour
        recent = hours[-count:]
        if len(recent) < count or [b for b, _ in recent] != [
                last - 3600 * k for k in range(count - 1, -1, -1)]:
            return None
        if max(m for _, m in recent) >= setpoint:
            return None  # at the setpoint: the alarm engine's business
        pool: dict[int, list[float]] = {}
        for bucket, mean in hours[:-count]:
            pool.setdefault(datetime.fromtimestamp(bucket, self.zone).hour, []).append(mean)
        rises, bases = [], []
        for bucket, mean in recent:
            same = pool.get(datetime.fromtimestamp(bucket, self.zone).hour, [])
            if len(same) < 3:
                return None
            base = statistics.fmean(same)
            limit = max(cfg["step_sigma"] * statistics.pstdev(same), cfg["min_step"] * setpoint)
            if mean - base <= limit:
                return None
            rises.append(mean - base)
            bases.append(base)
        return Step(statistics.fmean(rises), statistics.fmean(bases),
                    statistics.fmean(m for _, m in recent), count)

    def night_leak(self, leak: Sequence[tuple[float, float]], load: Sequence[tuple[float, float]],
                   setpoint: float) -> NightLeak | None:
        """A NightLeak when night-time leakage rises steadily while the night load stays low."""
        cfg = self.config
        first, stop = cfg["night_hours"]
        zone = self.zone

        def by_night(series: Sequence[tuple[float, float]]) -> tuple[dict[Any, list[float]],
                                                                      list[float]]:
            nights: dict[Any, list[float]] = {}
            days: list[float] = []
            for bucket, mean in series:
                local = datetime.fromtimestamp(bucket, zone)
                if first <= local.hour < stop:
                    nights.setdefault(local.date(), []).append(mean)
                elif 8 <= local.hour < 20:
                    days.append(mean)
            return nights, days

        leak_nights, _ = by_night(leak)
        load_nights, load_days = by_night(load)
        dates = sorted(set(leak_nights) & set(load_nights))
        if len(dates) < cfg["min_days"] or not load_days:
            return None
        points = [(datetime(d.year, d.month, d.day, tzinfo=zone).timestamp(),
                   statistics.fmean(leak_nights[d])) for d in dates]
        fitted = fit_trend(points)
        if fitted is None:
            return None
        slope, today, r2 = fitted
        if slope <= 0 or r2 < cfg["min_r2"] or today >= setpoint:
            return None
        if slope * (len(points) - 1) < cfg["min_rise"] * setpoint:
            return None
        night_load = statistics.fmean(v for d in dates for v in load_nights[d])
        day_load = statistics.fmean(load_days)
        if night_load > cfg["night_load_ratio"] * day_load:
            return None  # the night is not quiet: the load may explain the leakage
        load_fit = fit_trend([(t, statistics.fmean(load_nights[d]))
                              for (t, _), d in zip(points, dates, strict=True)])
        if load_fit is not None and load_fit[0] * (len(points) - 1) > 0.1 * max(night_load, 1e-9):
            return None  # the night load rises with it
        return NightLeak(slope, today, len(points), night_load, day_load)

    async def analyse(self, now: float | None = None) -> list[Condition]:
        """One pass over every watched entity; the warnings fired."""
        now = time.time() if now is None else now
        cfg = self.config
        since = now - cfg["repeat_after"]
        if self.runs == 0:
            for entity_id in await self.recent(since):
                self._warned.setdefault(entity_id, now)
        self.runs += 1
        fired: list[Condition] = []
        for state in list(self.hub.states.all("sensor")):
            match = _QUANTITY.match(state.entity_id)
            if match is None:
                continue
            entity_id = state.entity_id
            if self._warned.get(entity_id, -1e18) > since:
                continue
            quantity = "temperature" if match.group(1).startswith("temperature") else \
                "residual_current"
            device_id = self._device_of(entity_id)
            if device_id is None:
                continue
            setpoint = self._setpoint(device_id, quantity)
            points = await self.peaks(entity_id, now - cfg["window"], now)
            trend = self.forecast(points, setpoint)
            found: Trend | Step | NightLeak | None = trend
            if found is None and self.hourly is not None:
                since = (now // 3600) * 3600 - (cfg["baseline_days"] + 1) * DAY
                hours = await self.hourly(entity_id, since, (now // 3600) * 3600)
                found = self.step(hours, now, setpoint)
            if found is None and self.hourly is not None and quantity == "residual_current":
                load_id = entity_id.removesuffix("_residual_current") + "_current_a"
                if self.hub.states.get(load_id) is not None:
                    since, until = now - cfg["window"], (now // 3600) * 3600
                    found = self.night_leak(await self.hourly(entity_id, since, until),
                                            await self.hourly(load_id, since, until), setpoint)
            if found is None:
                continue
            condition = self._condition(device_id, entity_id, quantity, setpoint, found, now)
            self._warned[entity_id] = now
            self.warnings += 1
            fired.append(condition)
            self.hub.bus.async_fire(EVENT_DEVICE_CONDITION, condition.as_dict())
        return fired

    @staticmethod
    def _condition(device_id: str, entity_id: str, quantity: str, setpoint: float,
                   found: Trend | Step | NightLeak, now: float) -> Condition:
        unit = _UNIT[quantity]
        zh_word, en_word = _WORDS[quantity]
        if isinstance(found, NightLeak):
            detail = (f"夜间低负载时段（负载约{found.night_load:.1f}A，白天约{found.day_load:.1f}A）"
                      f"{zh_word}近{found.nights}夜持续上升 {found.slope:+.1f}{unit}/夜"
                      f"（现约{found.fitted:.1f}{unit}）")
            detail_en = (f"{en_word} at night, with the load low (about {found.night_load:.1f}A "
                         f"against {found.day_load:.1f}A by day), rising {found.slope:+.1f}{unit} "
                         f"a night over {found.nights} nights (now about {found.fitted:.1f}{unit})")
            return Condition.create(device_id, HAZARD_WARNING, True, entity_id=entity_id,
                                    value=round(found.fitted, 1), unit=unit, detail=detail,
                                    detail_en=detail_en, timestamp=now, source=SOURCE)
        if isinstance(found, Step):
            detail = (f"{zh_word}近{found.hours}小时较同时段基线突升 {found.rise:+.1f}{unit}"
                      f"（基线约{found.baseline:.1f}{unit}，现约{found.now:.1f}{unit}）")
            detail_en = (f"{en_word} stepped up {found.rise:+.1f}{unit} over the last "
                         f"{found.hours} hours against the same hours' baseline (baseline "
                         f"about {found.baseline:.1f}{unit}, now about {found.now:.1f}{unit})")
            return Condition.create(device_id, HAZARD_WARNING, True, entity_id=entity_id,
                                    value=round(found.now, 1), unit=unit, detail=detail,
                                    detail_en=detail_en, timestamp=now, source=SOURCE)
        trend = found
        days = max(1, round(trend.days_to_cross))
        detail = (f"{zh_word}日峰值近{trend.days}天持续上升 {trend.slope:+.1f}{unit}/天"
                  f"（当前约{trend.fitted:.1f}{unit}，R²={trend.r2:.2f}），"
                  f"预计约{days}天后达到报警设定值{setpoint:g}{unit}")
        detail_en = (f"daily peak {en_word} rising {trend.slope:+.1f}{unit}/day over "
                     f"{trend.days} days (now about {trend.fitted:.1f}{unit}, R²={trend.r2:.2f}); "
                     f"expected to reach the alarm setpoint {setpoint:g}{unit} in about {days} days")
        return Condition.create(device_id, HAZARD_WARNING, True, entity_id=entity_id,
                                value=round(trend.fitted, 1), unit=unit, detail=detail,
                                detail_en=detail_en, timestamp=now, source=SOURCE)
