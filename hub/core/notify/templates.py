"""Message texts from jinja2 templates, in zh-CN and English.

SMS is short and read on a locked phone screen, so the alarm text carries everything needed
to act without opening the app: where (project path, location, device), what (the alarm's
words and value), when (local time), and how to acknowledge (reply 1). Sites override a
template by putting a file of the same name in DIR/notify_templates/.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from ..alarms import KIND_WORDS

TEMPLATE_DIR = Path(__file__).with_name("templates")


def language_of(value: str | None) -> str:
    return "en" if (value or "").lower().startswith("en") else "zh-CN"


class Templates:
    def __init__(self, override_dir: Path | None = None) -> None:
        paths = [str(override_dir)] if override_dir is not None and override_dir.is_dir() else []
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([*paths, str(TEMPLATE_DIR)]),
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            undefined=jinja2.StrictUndefined,
        )

    def render(self, name: str, language: str, **context: Any) -> str:
        template = self.env.get_template(f"{name}.{language_of(language)}.j2")
        return template.render(**context).strip()


def local_time(ts: float, zone: str) -> str:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    return datetime.fromtimestamp(ts, tz).strftime("%m-%d %H:%M:%S")


def iso_to_ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def alarm_context(hub: Any, alarm: dict[str, Any], language: str) -> dict[str, Any]:
    """What the alarm templates see: place, words, time, kind word, ids."""
    english = language_of(language) == "en"
    tree = getattr(getattr(hub, "auth", None), "tree", None)
    path: list[str] = []
    project = alarm.get("project")
    if project and tree is not None:
        for pid in reversed(list(tree.ancestors_or_self(project))):
            path.append(tree.names.get(pid, pid))
    elif project:
        path.append(str(project))
    device_name = alarm.get("device_name")
    if not device_name:
        device = hub.devices.get(alarm.get("device_id")) if hasattr(hub, "devices") else None
        device_name = getattr(device, "name", None) or alarm.get("device_id")
    place = " ".join(p for p in [*path, alarm.get("location"),
                                 device_name] if p)
    words = (alarm.get("message_en") if english else None) or alarm.get("message") or ""
    started = iso_to_ts(alarm.get("started_at")) or 0.0
    kind_word = KIND_WORDS.get(alarm.get("kind") or "alarm", ("报警", "Alarm"))[1 if english else 0]
    return {
        "alarm": alarm,
        "place": place,
        "words": words,
        "time": local_time(started, getattr(hub, "time_zone", "Asia/Shanghai")),
        "kind_word": kind_word,
        "alarm_id": alarm.get("id"),
    }
