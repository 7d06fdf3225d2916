"""Charts of the monthly report as inline SVG, drawn on the server.

The same markup goes into the HTML page and the PDF (WeasyPrint renders SVG itself), so a
report needs no JavaScript and looks the same in a browser, a mail attachment or on paper.
Text in the charts is escaped; sizes are in CSS pixels of the A4 page's content box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 680, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 12, 36
KIND_COLOURS = {"alarm": "#d9363e", "fault": "#e8a33d", "event": "#4a7bd0"}
LINE_COLOURS = ("#d9363e", "#4a7bd0")


def _nice_max(value: float) -> float:
    """A round top for the y axis (1, 2, 5 × 10^n) at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:g}" if value < 1000 else f"{value:,.0f}"


def _frame(top: float, labels: Sequence[str], unit: str) -> list[str]:
    """Axes, four horizontal grid lines with their values, and every few day labels."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = []
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
                     f'stroke="#ddd" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end" '
                     f'font-size="9" fill="#555">{_number(top * i / 4)}</text>')
    if unit:
        parts.append(f'<text x="{LEFT - 4}" y="{TOP - 2}" text-anchor="end" font-size="9" '
                     f'fill="#555">{escape(unit)}</text>')
    step = plot_w / max(len(labels), 1)
    every = max(1, math.ceil(len(labels) / 16))
    for i, label in enumerate(labels):
        if i % every == 0:
            x = LEFT + step * (i + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 12}" text-anchor="middle" '
                         f'font-size="9" fill="#555">{escape(label)}</text>')
    return parts


def _legend(items: Sequence[tuple[str, str]]) -> list[str]:
    parts, x = [], LEFT
    for colour, name in items:
        parts.append(f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="8" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT - 7}" font-size="9" fill="#333">'
                     f'{escape(name)}</text>')
        x += 24 + 9 * len(name)
    return parts


def _svg(parts: list[str], title: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title>{"".join(parts)}</svg>')


def stacked_bars(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[int]]],
                 title: str) -> Markup:
    """One bar per day, stacked by series (key, name, values); colours by key."""
    totals = [sum(values[i] for _, _, values in series) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(labels), 1)
    parts = _frame(top, labels, "")
    for i in range(len(labels)):
        base = 0.0
        for key, _, values in series:
            if values[i]:
                h = plot_h * values[i] / top
                y = TOP + plot_h - base - h
                parts.append(f'<rect x="{LEFT + step * i + step * 0.15:.1f}" y="{y:.1f}" '
                             f'width="{step * 0.7:.1f}" height="{h:.1f}" '
                             f'fill="{KIND_COLOURS.get(key, "#888")}"/>')
                base += h
    parts += _legend([(KIND_COLOURS.get(key, "#888"), name) for key, name, _ in series])
    return _svg(parts, title)


def lines(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
          unit: str, title: str) -> Markup:
    """One polyline per series (name, values); None is a gap (a day without readings)."""
    finite = [v for _, values in series for v in values if v is not None]
    top = _nice_max(max(finite, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(labels), 1)
    parts = _frame(top, labels, unit)
    for (_, values), colour in zip(series, LINE_COLOURS, strict=False):
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            x, y = LEFT + step * (i + 0.5), TOP + plot_h - plot_h * max(value, 0.0) / top
            runs[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.8" fill="{colour}"/>')
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" '
                             f'stroke="{colour}" stroke-width="1.5"/>')
    parts += _legend([(colour, name) for (name, _), colour
                      in zip(series, LINE_COLOURS, strict=False)])
    return _svg(parts, title)
