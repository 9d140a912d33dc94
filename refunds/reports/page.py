"""What the report page shows: one day's report and, for its chart, how many requests ended on each
path on each of the 30 days up to it. Read from the database in one read transaction; no Flask."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, select

from ..tables import UTCDateTime, refund_log, refund_requests
from .daily import daily_report, day_window
from .model import PATHS, DailyReport, external_path, request_path

__all__ = ["CHART_DAYS", "DayCounts", "ReportPage", "report_page"]

CHART_DAYS = 30

_START = bindparam("start", type_=UTCDateTime())
_END = bindparam("end", type_=UTCDateTime())
_r, _l = refund_requests, refund_log
# Only the columns the chart needs, served by the indexes on resolved_at and processed_at (migration 0005).
_RESOLVED = select(_r.c.resolved_at, _r.c.status, _r.c.decision).where(_r.c.resolved_at >= _START,
                                                                      _r.c.resolved_at < _END)
_EXTERNAL = select(_l.c.processed_at, _l.c.status).where(_l.c.decision == "external", _l.c.processed_at >= _START,
                                                         _l.c.processed_at < _END)


@dataclass(frozen=True)
class DayCounts:
    """How many requests (and refunds made elsewhere) ended on each of `PATHS` on `day`."""

    day: date
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ReportPage:
    """`report` of one day, and `series`: the `CHART_DAYS` days ending with it, oldest first."""

    report: DailyReport
    series: list[DayCounts]


def report_page(conn: Connection, day: date, tz: ZoneInfo, *, now: datetime, days: int = CHART_DAYS) -> ReportPage:
    """The page's data for calendar day `day` in `tz`, as the database holds it at `now`. Read-only: run it
    in `Database.read()`. Raises only what the database raises."""
    first = day - timedelta(days=days - 1)
    window = {"start": day_window(first, tz)[0], "end": day_window(day, tz)[1]}
    counts = {first + timedelta(days=n): dict.fromkeys(PATHS, 0) for n in range(days)}
    for resolved_at, status, decision in conn.execute(_RESOLVED, window):
        _count(counts, resolved_at.astimezone(tz).date(), request_path(status, decision))
    for processed_at, status in conn.execute(_EXTERNAL, window):
        _count(counts, processed_at.astimezone(tz).date(), external_path(status))
    return ReportPage(report=daily_report(conn, day, tz, now=now),
                      series=[DayCounts(d, c) for d, c in counts.items()])


def _count(counts: dict[date, dict[str, int]], day: date, path: str) -> None:
    # A status outside PATHS (a new one) still counts, under its own name.
    per_path = counts[day]
    per_path[path] = per_path.get(path, 0) + 1
