"""The daily report's figures on a seeded history, on SQLite and PostgreSQL (issue 10)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from refunds.db import Database
from refunds.reports import DailyReport, daily_report, day_window
from refunds.reports.render import as_json, csv_rows, table
from tests.report_history import add_charge, add_charges, add_external, add_pending, add_request, at

UTC_ZONE = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")
LATER = at("2026-12-31 00:00")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


def report(db: Database, day: str, tz: ZoneInfo = UTC_ZONE, now: datetime = LATER) -> DailyReport:
    with db.read() as conn:
        return daily_report(conn, date.fromisoformat(day), tz, now=now)


def test_an_empty_day_reports_zero_of_everything(db: Database) -> None:
    empty = report(db, "2026-11-26")

    assert [(path, t.count, t.amounts) for path, t in empty.paths.items()] == [
        (path, 0, {}) for path in ("auto_approved", "approved", "rejected", "expired", "failed", "external")]
    assert all(d.count == 0 and d.median is None for d in empty.resolution.values())
    assert empty.resolution_buckets == {"under_1_minute": 0, "under_1_hour": 0, "under_1_day": 0, "longer": 0}
    assert (empty.products, empty.reasons, empty.agents, empty.approvers, empty.failures) == ([], {}, {}, {}, [])
    assert (empty.fees.kept, empty.fees.charges, empty.queue.size, empty.queue.oldest_age_seconds) == ({}, 0, 0, None)
    assert empty.hours == 24
    assert "Refunds processed" in table(empty)
    assert as_json(empty)["paths"]["approved"] == {"count": 0, "unknown_amount": 0, "amounts": []}


def test_each_currency_is_totalled_apart_per_path_and_shown_with_its_own_decimals(db: Database) -> None:
    day = "2026-11-26 "
    with db.transaction() as conn:
        add_request(conn, "auto_approved", amount=2500, currency="usd", created=at(day + "10:00"),
                    resolved=at(day + "10:00:02"), charge_amount=2500)
        add_request(conn, "auto_approved", amount=1000, currency="usd", created=at(day + "11:00"),
                    resolved=at(day + "11:00:01"), charge_amount=4000)
        add_request(conn, "auto_approved", amount=1500, currency="jpy", created=at(day + "12:00"),
                    resolved=at(day + "12:00:01"), charge_amount=1500)
        add_request(conn, "approved", amount=12345, currency="kwd", created=at(day + "08:00"),
                    resolved=at(day + "09:00"), decided_by="maria")
        add_request(conn, "rejected", amount=20000, currency="eur", created=at(day + "08:00"),
                    resolved=at(day + "13:00"), decided_by="li")
        add_request(conn, "failed", amount=None, currency=None, created=at(day + "14:00"),
                    resolved=at(day + "14:00:01"), error_code="charge_not_found")
        # Resolved the day before and the day after: not this day's.
        add_request(conn, "auto_approved", amount=999, currency="usd", created=at("2026-11-25 23:59"),
                    resolved=at("2026-11-25 23:59:59"))
        add_request(conn, "auto_approved", amount=999, currency="usd", created=at(day + "23:59"),
                    resolved=at("2026-11-27 00:00"))

    figures = report(db, "2026-11-26")

    paths = figures.paths
    assert (paths["auto_approved"].count, paths["auto_approved"].amounts) == (3, {"usd": 3500, "jpy": 1500})
    assert (paths["approved"].count, paths["approved"].amounts) == (1, {"kwd": 12345})
    assert (paths["rejected"].count, paths["rejected"].amounts) == (1, {"eur": 20000})
    assert (paths["failed"].count, paths["failed"].amounts, paths["failed"].unknown_amount) == (1, {}, 1)
    kinds = figures.refund_kinds
    assert (kinds["full"].count, kinds["full"].amounts) == (2, {"usd": 2500, "jpy": 1500})
    assert (kinds["partial"].count, kinds["unknown"].count) == (1, 1)
    assert [(f.request_id is not None, f.reason) for f in figures.failures] == [(True, "charge_not_found")]
    text = table(figures)
    assert "1,500 JPY, 35.00 USD" in text
    assert "12.345 KWD" in text
    assert "200.00 EUR" in text
    amounts = as_json(figures)["paths"]["auto_approved"]["amounts"]
    assert amounts == [{"amount": 1500, "currency": "jpy", "display": "1,500 JPY"},
                       {"amount": 3500, "currency": "usd", "display": "35.00 USD"}]


def test_time_to_resolution_per_path_with_buckets_and_the_approval_wait(db: Database) -> None:
    day = "2026-11-26 "
    with db.transaction() as conn:
        for seconds in (1, 2, 3, 4, 5, 6, 7, 8, 9, 100):  # auto-approved: one slow one
            add_request(conn, "auto_approved", amount=100, currency="usd", created=at(day + "10:00"),
                        resolved=at(day + "10:00") + timedelta(seconds=seconds))
        add_request(conn, "approved", amount=9000, currency="usd", created=at(day + "08:00"),
                    queued=at(day + "08:00:30"), resolved=at(day + "10:00"), decided_by="maria")
        add_request(conn, "approved", amount=9000, currency="usd", created=at("2026-11-24 08:00"),
                    queued=at("2026-11-24 08:00"), resolved=at(day + "08:00"), decided_by="li")
        add_request(conn, "expired", amount=9000, currency="usd", created=at("2026-11-23 08:00"),
                    resolved=at(day + "08:00"))

    figures = report(db, "2026-11-26")

    auto = figures.resolution["auto_approved"]
    assert (auto.count, auto.average, auto.median, auto.p90) == (10, 14.5, 5.5, 9)
    approved = figures.resolution["approved"]
    assert (approved.count, approved.median, approved.p90) == (2, (7200 + 172800) / 2, 172800)
    assert figures.resolution["expired"].median == 3 * 86400
    assert figures.resolution_buckets == {"under_1_minute": 9, "under_1_hour": 1, "under_1_day": 1, "longer": 2}
    wait = figures.approval_wait
    assert (wait.count, wait.average) == (2, (7170 + 172800) / 2)
    assert "90th percentile 9 s" in table(figures)


@pytest.mark.parametrize(("day", "hours", "start", "end"), [
    ("2026-03-29", 23, "2026-03-28 23:00", "2026-03-29 22:00"),  # clocks go forward in Paris
    ("2026-10-25", 25, "2026-10-24 22:00", "2026-10-25 23:00"),  # clocks go back
])
def test_a_day_spanning_a_daylight_saving_change_runs_from_local_midnight_to_local_midnight(
    db: Database, day: str, hours: int, start: str, end: str
) -> None:
    with db.transaction() as conn:
        for when, amount in ((at(start) - timedelta(seconds=1), 1),  # the day before
                             (at(start), 10), (at(end) - timedelta(seconds=1), 100),
                             (at(end), 1000)):  # the day after
            add_request(conn, "auto_approved", amount=amount, currency="eur", created=when, resolved=when)

    figures = report(db, day, PARIS)

    assert (figures.start, figures.end, figures.hours) == (at(start), at(end), hours)
    assert day_window(date.fromisoformat(day), PARIS) == (at(start), at(end))
    assert figures.paths["auto_approved"].amounts == {"eur": 110}
    assert f"{hours} hours" in table(figures)


def test_refunds_made_outside_the_service_count_apart_with_their_charges_product_and_fee(db: Database) -> None:
    day = "2026-11-26 "
    with db.transaction() as conn:
        add_charge(conn, "ch_dash", created=at(day + "09:00"), amount=5000, product="kettle", fee=175,
                   fee_currency="usd")
        add_charges(conn, 19, product="kettle", created=at(day + "00:00"))
        add_external(conn, amount=5000, currency="usd", processed=at(day + "15:00"), charge_id="ch_dash",
                     reason="duplicate")
        add_external(conn, amount=700, currency="jpy", processed=at(day + "16:00"), charge_id="ch_unknown")
        add_external(conn, amount=300, currency="usd", processed=at(day + "17:00"), charge_id="ch_dash2",
                     status="failed", failure_reason="expired_or_canceled_card")

    figures = report(db, "2026-11-26")

    external = figures.paths["external"]
    assert (external.count, external.amounts) == (2, {"usd": 5000, "jpy": 700})
    assert (figures.paths["failed"].count, [f.reason for f in figures.failures]) == (1, ["expired_or_canceled_card"])
    assert [f.refund_id is not None and f.request_id is None for f in figures.failures] == [True]
    assert (figures.refund_kinds["full"].count, figures.refund_kinds["unknown"].count) == (1, 1)
    kettle = next(r for r in figures.products if r.product == "kettle")
    assert (kettle.refunded_charges, kettle.charges, kettle.rate, kettle.too_few_charges) == (1, 20, 0.05, False)
    assert (figures.fees.kept, figures.fees.charges, figures.fees.unknown) == ({"usd": 175}, 2, 1)
    assert figures.reasons["duplicate"].count == 1
    assert figures.agents == {}  # nobody asked the service for these
    assert figures.resolution["auto_approved"].count == 0  # no request, no time to resolution


def test_a_product_with_no_charges_has_no_rate_and_a_product_with_few_is_flagged(db: Database) -> None:
    day = "2026-11-26 "
    with db.transaction() as conn:
        add_request(conn, "auto_approved", amount=100, currency="usd", product="mug", created=at(day + "10:00"),
                    resolved=at(day + "10:00"))
        add_request(conn, "auto_approved", amount=100, currency="usd", product="lamp", created=at(day + "10:00"),
                    resolved=at(day + "10:00"))
        add_charges(conn, 3, product="lamp", created=at(day + "01:00"))
        add_charges(conn, 50, product="kettle", created=at(day + "01:00"))
        add_charges(conn, 5, product="kettle", created=at("2026-11-25 01:00"))  # another day's charges
    products = report(db, "2026-11-26").products

    rates = {r.product: (r.refunded_charges, r.charges, r.rate, r.too_few_charges) for r in products}

    assert rates == {"mug": (1, 0, None, True), "lamp": (1, 3, 1 / 3, True), "kettle": (0, 50, 0.0, False)}


def test_by_reason_agent_and_approver_with_both_approvers_of_a_two_person_approval(db: Database) -> None:
    day = "2026-11-26 "
    with db.transaction() as conn:
        add_request(conn, "approved", amount=50000, currency="usd", created=at(day + "08:00"),
                    resolved=at(day + "09:00"), decided_by="maria, li", requested_by="tom", reason="fraudulent")
        add_request(conn, "rejected", amount=7000, currency="usd", created=at(day + "08:00"),
                    resolved=at(day + "09:00"), decided_by="li", requested_by="tom")
        add_request(conn, "auto_approved", amount=100, currency="jpy", created=at(day + "08:00"),
                    resolved=at(day + "08:00"), requested_by="ana")

    figures = report(db, "2026-11-26")

    assert {k: (t.count, t.amounts) for k, t in figures.approvers.items()} == {
        "li": (2, {"usd": 57000}), "maria": (1, {"usd": 50000})}
    assert list(figures.agents) == ["tom", "ana"]
    assert figures.agents["tom"].amounts == {"usd": 57000}
    assert {k: t.count for k, t in figures.reasons.items()} == {"requested_by_customer": 2, "fraudulent": 1}


def test_the_queue_is_the_queue_at_the_end_of_the_day_or_now(db: Database) -> None:
    with db.transaction() as conn:
        add_pending(conn, amount=9000, currency="usd", requested=at("2026-11-25 12:00"))  # still waiting
        add_pending(conn, amount=9000, currency="usd", requested=at("2026-11-24 00:00"),
                    decided=at("2026-11-27 09:00"))  # waiting at the day's end, decided later
        add_pending(conn, amount=9000, currency="usd", requested=at("2026-11-24 00:00"),
                    decided=at("2026-11-26 09:00"))  # decided during the day
        add_pending(conn, amount=9000, currency="usd", requested=at("2026-11-27 01:00"))  # came later

    at_end = report(db, "2026-11-26").queue
    at_now = report(db, "2026-11-26", now=at("2026-11-26 12:00")).queue

    assert (at_end.as_of, at_end.size, at_end.oldest_age_seconds) == (at("2026-11-27 00:00"), 2, 3 * 86400)
    assert (at_now.as_of, at_now.size, at_now.oldest_age_seconds) == (at("2026-11-26 12:00"), 2, 2.5 * 86400)


def test_csv_rows_carry_every_figure_with_its_currency(db: Database) -> None:
    with db.transaction() as conn:
        add_request(conn, "auto_approved", amount=1500, currency="jpy", created=at("2026-11-26 10:00"),
                    resolved=at("2026-11-26 10:00:30"), product="mug")

    rows = list(csv_rows(report(db, "2026-11-26")))

    assert ("2026-11-26", "UTC", "paths", "auto_approved", "amount", "jpy", 1500) in rows
    assert ("2026-11-26", "UTC", "paths", "auto_approved", "count", "", 1) in rows
    assert ("2026-11-26", "UTC", "resolution", "auto_approved", "median_seconds", "", 30.0) in rows
    assert ("2026-11-26", "UTC", "products", "mug", "charges", "", 0) in rows
    assert all(len(row) == 7 for row in rows)


@pytest.mark.parametrize(("zone", "first", "hours"), [
    ("America/Santiago", "2026-09-04", [24, 24, 23, 24]),  # midnight of 6 September does not exist there
    ("America/Santiago", "2026-04-03", [24, 25, 24, 24]),  # clocks go back at midnight of 5 April
    ("Australia/Lord_Howe", "2026-04-03", [24, 24, 24.5, 24]),  # a half-hour change, on 5 April
])
def test_days_follow_each_other_without_gap_or_overlap_even_where_midnight_moves(
    zone: str, first: str, hours: list[float]
) -> None:
    days = [date.fromisoformat(first) + timedelta(days=n) for n in range(4)]
    windows = [day_window(day, ZoneInfo(zone)) for day in days]

    assert [(end - start).total_seconds() / 3600 for start, end in windows] == hours
    assert all(windows[n][1] == windows[n + 1][0] for n in range(3))
