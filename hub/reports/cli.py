"""`voltwatch report monthly --project ID --month YYYY-MM -o FILE`: the monthly report
without a running hub, straight from the configured database.

The same code as GET /api/reports/monthly builds and renders it; the format follows the
output file's suffix (.pdf, else HTML). A project that neither the configuration nor any
device names is refused, so a typo does not print a report of zeros.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


async def monthly_cli(config_dir: Path, projects: list[str], month: str | None,
                      output: Path, lang: str | None, top: int) -> int:
    from hub.core.statistics import Statistics
    from hub.http.workorders_api import project_subtree
    from hub.offline import open_configured
    from hub.storage.report_store import SqlReportStore
    from hub.storage.statistics_store import SqlStatisticsStore

    from .monthly import build_monthly, project_names
    from .render import PdfUnavailable, render_html, render_pdf

    async with open_configured(config_dir) as opened:
        if opened is None:
            return 1
        config, db = opened
        hub = SimpleNamespace(config=config,
                              time_zone=config.get("hub", {}).get("time_zone", "Asia/Shanghai"))
        hub.statistics = Statistics(hub, SqlStatisticsStore(db))
        if month is None:
            year, number = hub.statistics.current_month()
        else:
            match = _MONTH.match(month.strip())
            if not match or not 1 <= int(match.group(2)) <= 12:
                print(f"--month: expected YYYY-MM (2026-11), got {month!r}", file=sys.stderr)
                return 2
            year, number = int(match.group(1)), int(match.group(2))
        known = set(project_names(config.get("projects"))) | {
            d.get("project") for d in config.get("devices") or [] if d.get("project")}
        unknown = [p for p in projects if p not in known]
        if unknown:
            print(f"--project: no project {', '.join(unknown)} in the configuration",
                  file=sys.stderr)
            return 2
        scope = project_subtree(hub, projects) if projects else None
        report = await build_monthly(hub, SqlReportStore(db), year, number, scope, projects,
                                     top)
    html = render_html(report, lang or config.get("hub", {}).get("language", "zh-CN"))
    if output.suffix.lower() == ".pdf":
        try:
            output.write_bytes(render_pdf(html))
        except PdfUnavailable as err:
            print(str(err), file=sys.stderr)
            return 1
    else:
        output.write_text(html, encoding="utf-8")
    print(f"{output} ({report['month']}, {report['totals']['total']} records)")
    return 0
