"""The monthly report as HTML and PDF: one jinja2 template (web/templates/reports/monthly.html)
renders both, so the two formats cannot disagree.

The PDF is the same HTML laid out by WeasyPrint (pango for text, so Chinese needs a CJK font
on the machine: fonts-noto-cjk, installed by scripts/system-deps.sh). It takes a second or
more of CPU for a month, so the API runs it in a worker thread, never on the event loop.
Words come from the web i18n files (`report_*` keys), like the pages' words.
"""

from __future__ import annotations

from typing import Any

from ..core.conditions import CONDITION_TYPES
from ..http.pages import LANGUAGES, template_environment, translations, web_root
from . import charts

KINDS = ("alarm", "fault", "event")


def duration_text(seconds: float | None, lang: str) -> str:
    """A time span as people say it: "2小时5分" / "2 h 5 min"; "—" when there is none."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = (("天", "d"), ("小时", "h"), ("分", "min"), ("秒", "s"))
    parts = [(days, units[0]), (hours, units[1]), (minutes, units[2]), (secs, units[3])]
    shown = [(n, u) for n, u in parts if n][:2] or [(0, units[3])]
    if lang == "zh-CN":
        return "".join(f"{n}{u[0]}" for n, u in shown)
    return " ".join(f"{n} {u[1]}" for n, u in shown)


def _type_word(lang: str) -> Any:
    def word(type_: str) -> str:
        known = CONDITION_TYPES.get(type_)
        if known is None:
            return type_
        return known.zh if lang == "zh-CN" else known.en
    return word


def _charts(report: dict[str, Any], t: Any) -> dict[str, Any]:
    labels = [day["date"][8:] for day in report["daily"]]
    daily = charts.stacked_bars(
        labels, [(kind, t(f"kind_{kind}"), [day[kind] for day in report["daily"]])
                 for kind in KINDS], t("report_chart_daily"))
    out = {"daily": daily}
    for kind, unit in (("residual_current", "mA"), ("temperature", "°C")):
        trend = report["trends"].get(kind)
        if trend and trend["month_max"] is not None:
            out[kind] = charts.lines(
                labels, [(t("report_daily_max"), trend["max"]),
                         (t("report_daily_mean"), trend["mean"])],
                unit, t(f"report_trend_{kind}"))
    return out


def render_html(report: dict[str, Any], lang: str) -> str:
    lang = lang if lang in LANGUAGES else "zh-CN"
    root = web_root()
    words = translations(root)[lang]

    def t(key: str) -> str:
        return words.get(key, key)

    return template_environment(root).get_template("reports/monthly.html").render(
        r=report, lang=lang, t=t, type_word=_type_word(lang), charts=_charts(report, t),
        duration=lambda seconds: duration_text(seconds, lang), kinds=KINDS)


class PdfUnavailable(RuntimeError):
    """WeasyPrint cannot load its system libraries (pango): HTML still works."""


def render_pdf(html: str) -> bytes:
    """PDF bytes of a rendered report (blocking: call it from a worker thread)."""
    try:  # imported late: pango loads only when a PDF is asked for
        from weasyprint import HTML
    except OSError as err:
        raise PdfUnavailable(
            f"PDF needs pango (Debian: libpango-1.0-0 libpangoft2-1.0-0, see "
            f"scripts/system-deps.sh): {err}") from err
    return HTML(string=html).write_pdf()
