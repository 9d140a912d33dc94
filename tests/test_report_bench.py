"""The report benchmark's seeder writes a history the schema takes and the report reads back in full."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bench.report_seed import History, seed
from refunds.db import Database
from refunds.reports import daily_report, day_window
from refunds.tables import refund_log, refund_requests
from tests.report_history import at


def test_a_seeded_history_is_counted_by_the_report_as_sql_counts_it(database_url: str) -> None:
    end = at("2026-11-27 00:00")
    counts = seed(database_url, History(end=end, requests=600, days=3, waiting=20))
    day = date(2026, 11, 25)
    start, stop = day_window(day, ZoneInfo("UTC"))

    db = Database(database_url)
    with db.read() as conn:
        figures = daily_report(conn, day, ZoneInfo("UTC"), now=end + timedelta(days=1))
        resolved = conn.execute(select(func.count()).select_from(refund_requests).where(
            refund_requests.c.resolved_at >= start, refund_requests.c.resolved_at < stop)).scalar()
        outside = conn.execute(select(func.count()).select_from(refund_log).where(
            refund_log.c.decision == "external", refund_log.c.processed_at >= start,
            refund_log.c.processed_at < stop)).scalar()
    db.dispose()

    assert counts["refund_requests"] == 600
    assert sum(t.count for t in figures.paths.values()) == resolved + outside > 150
    assert figures.paths["external"].count == outside
    assert all(figures.paths[p].count > 0 for p in ("auto_approved", "approved", "rejected", "failed"))
    assert figures.queue.size >= 20
    assert sum(r.charges for r in figures.products) > 0
