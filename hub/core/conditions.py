"""Device conditions: the shared vocabulary for alarms, faults and events raised by devices.

Every device plugin (arcm, arc_fault, smoke, gsm) reports what its detector says in the same
shape, so the alarm engine, the recorder, notifications and the web UI never learn a plugin's
register map. A plugin fires `EVENT_DEVICE_CONDITION` on the bus on *transitions* only:

* an alarm or fault is fired once with `active=True` when it is raised and once with
  `active=False` when it clears (one active condition per (device, type), as ThingsBoard does);
* an event (tripped, muted, self_test, ...) is momentary: fired once with `active=True`.

The event data is `Condition.as_dict()` (JSON-friendly). The words users see come from the
table below (CONTRACTS §11) so that "剩余电流过大 550mA" reads the same whichever plugin saw it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

EVENT_DEVICE_CONDITION = "device_condition"

KIND_ALARM = "alarm"
KIND_FAULT = "fault"
KIND_EVENT = "event"
Kind = Literal["alarm", "fault", "event"]
KINDS: tuple[str, ...] = (KIND_ALARM, KIND_FAULT, KIND_EVENT)


@dataclass(frozen=True, slots=True)
class ConditionType:
    """One row of CONTRACTS §11: the type, its kind and its words in both languages."""

    type: str
    kind: str
    zh: str
    en: str


def _build_types() -> dict[str, ConditionType]:
    rows: list[tuple[str, str, str, str]] = [
        ("residual_current_high", KIND_ALARM, "剩余电流过大", "Residual current high"),
        ("over_voltage", KIND_ALARM, "过压", "Over-voltage"),
        ("under_voltage", KIND_ALARM, "欠压", "Under-voltage"),
        ("overload", KIND_ALARM, "过载", "Overload"),
        ("short_circuit", KIND_ALARM, "短路", "Short circuit"),
        ("phase_loss", KIND_ALARM, "缺相", "Phase loss"),
        ("arc_fault", KIND_ALARM, "故障电弧", "Arc fault"),
        ("smoke", KIND_ALARM, "烟雾报警", "Smoke alarm"),
        ("residual_transformer_open", KIND_FAULT, "剩余电流互感器断线", "Residual transformer open"),
        ("residual_transformer_short", KIND_FAULT, "剩余电流互感器短路",
         "Residual transformer shorted"),
        ("communication_lost", KIND_FAULT, "通讯中断", "Communication lost"),
        ("low_battery", KIND_FAULT, "电池欠压", "Low battery"),
        ("tamper", KIND_FAULT, "防拆", "Tamper"),
        ("device_fault", KIND_FAULT, "设备故障", "Device fault"),
        ("tripped", KIND_EVENT, "分闸", "Tripped"),
        ("closed", KIND_EVENT, "合闸", "Closed"),
        ("reset", KIND_EVENT, "复位", "Reset"),
        ("muted", KIND_EVENT, "消音", "Muted"),
        ("self_test", KIND_EVENT, "自检", "Self-test"),
        ("hazard_warning", KIND_EVENT, "隐患预警", "Hazard warning"),
        ("impostor", KIND_EVENT, "疑似冒充", "Suspected impostor"),
        # A DTU's projected monthly traffic exceeds its SIM plan budget (plugin gsm).
        ("data_budget_exceeded", KIND_EVENT, "流量超预算", "Data budget exceeded"),
    ]
    for n in range(1, 5):
        rows.append((f"temperature_high_{n}", KIND_ALARM, f"温度{n}过大", f"Temperature {n} high"))
        rows.append((f"probe_open_{n}", KIND_FAULT, f"温度{n}断线", f"Temperature probe {n} open"))
    return {row[0]: ConditionType(*row) for row in rows}


CONDITION_TYPES: dict[str, ConditionType] = _build_types()

# Decimals shown per unit when the caller does not say: the seed writes "550mA" and "45.0°C".
_UNIT_DECIMALS = {"mA": 0, "°C": 1, "V": 1, "A": 2, "kW": 3, "kWh": 2, "%": 1, "Hz": 2, "MB": 1}


def condition_type(type_: str) -> ConditionType:
    """The row for a type; an unknown type (a third-party plugin's own) gets its name as words."""
    known = CONDITION_TYPES.get(type_)
    if known is not None:
        return known
    words = type_.replace("_", " ")
    return ConditionType(type_, KIND_FAULT, words, words.capitalize())


def format_value(value: float | None, unit: str | None = None,
                 decimals: int | None = None) -> str:
    """`550` mA -> `550mA`, `45` °C -> `45.0°C` (no space, as the seed writes them)."""
    if value is None:
        return ""
    if decimals is None:
        decimals = _UNIT_DECIMALS.get(unit or "")
    if decimals is None:
        text = f"{value:g}" if isinstance(value, float) else str(value)
    else:
        text = f"{float(value):.{decimals}f}"
    return f"{text}{unit or ''}"


def format_message(
    type_: str,
    value: float | None = None,
    unit: str | None = None,
    language: str = "zh-CN",
    detail: str | None = None,
    decimals: int | None = None,
) -> str:
    """The words users see: "剩余电流过大 550mA", "温度4断线", "设备故障：异常码 2".

    `detail` is a short reason in the same language (an exception code, a peer address).
    """
    row = condition_type(type_)
    words = row.en if language.lower().startswith("en") else row.zh
    shown = format_value(value, unit, decimals)
    if shown:
        words = f"{words} {shown}"
    if detail:
        words = f"{words}: {detail}" if language.lower().startswith("en") else f"{words}：{detail}"
    return words


@dataclass(slots=True)
class Condition:
    """The payload of a `device_condition` event (use `as_dict()` as the event data).

    `message` is zh-CN, `message_en` English; consumers pick by the hub's or user's language.
    `value`/`unit` are what the detector measured when the condition changed (None for a
    fault without a measurement). `time` is unix seconds when the device plugin noticed it.
    """

    device_id: str
    type: str
    kind: str
    active: bool
    entity_id: str | None = None
    value: float | int | None = None
    unit: str | None = None
    message: str = ""
    message_en: str = ""
    detail: str | None = None
    detail_en: str | None = None
    time: float = field(default_factory=time.time)
    #: Who saw it ("detector", "hub", "gsm", ...): the alarm engine keeps one record per
    #: (device, type) and clears it only when every source that raised it has cleared.
    #: Empty means the device plugin itself.
    source: str = ""

    @classmethod
    def create(
        cls,
        device_id: str,
        type_: str,
        active: bool = True,
        *,
        entity_id: str | None = None,
        value: float | None = None,
        unit: str | None = None,
        detail: str | None = None,
        detail_en: str | None = None,
        decimals: int | None = None,
        kind: str | None = None,
        timestamp: float | None = None,
        source: str = "",
    ) -> Condition:
        """Build a condition with its kind and both messages filled from the table."""
        row = condition_type(type_)
        return cls(
            device_id=device_id,
            type=type_,
            kind=kind or row.kind,
            active=active,
            entity_id=entity_id,
            value=value,
            unit=unit,
            message=format_message(type_, value, unit, "zh-CN", detail, decimals),
            message_en=format_message(type_, value, unit, "en", detail_en or detail, decimals),
            detail=detail,
            detail_en=detail_en,
            time=time.time() if timestamp is None else timestamp,
            source=source,
        )

    def message_for(self, language: str) -> str:
        return self.message_en if language.lower().startswith("en") else self.message

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "entity_id": self.entity_id,
            "type": self.type,
            "kind": self.kind,
            "active": self.active,
            "value": self.value,
            "unit": self.unit,
            "message": self.message,
            "message_en": self.message_en,
            "detail": self.detail,
            "detail_en": self.detail_en,
            "time": self.time,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Condition:
        return cls(**{key: data.get(key) for key in (
            "device_id", "type", "kind", "active", "entity_id", "value", "unit", "message",
            "message_en", "detail", "detail_en")}, time=data.get("time") or time.time(),
                   source=data.get("source") or "")
