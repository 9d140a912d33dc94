"""GET /reports/daily: approvers sign in at /sign-in with their token (a signed, HttpOnly, SameSite=Strict
session cookie, CSRF-protected forms, sign-out) or send it as a bearer token; the page shows the day's
numbers and a 30-day chart; `?format=json` is the CLI's JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.approvers import revoke
from refunds.reports import daily_report
from refunds.reports.page import report_page
from refunds.reports.render import as_json
from refunds.service import utcnow
from tests.conftest import make_settings
from tests.fakes import FakeClock, FakeGateway
from tests.report_history import add_external, add_request, at

SESSION_SECRET = "s" * 40


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    app = create_app(make_settings(database_url, session_secret=SESSION_SECRET, report_tz="Europe/Paris"),
                     gateway=FakeGateway(), clock=FakeClock(at("2026-11-26 09:00")))
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


@pytest.fixture
def token(app: Flask) -> str:
    return add_approver(app.extensions["refund_service"].db, "maria", utcnow())


def seed(app: Flask) -> None:
    with app.extensions["refund_service"].db.transaction() as conn:
        for hour in (8, 9, 10):
            add_request(conn, "auto_approved", amount=1500, currency="jpy", created=at(f"2026-11-25 {hour:02}:00"),
                        resolved=at(f"2026-11-25 {hour:02}:00"))
        add_request(conn, "rejected", amount=9000, currency="usd", created=at("2026-11-25 11:00"),
                    resolved=at("2026-11-25 12:00"), decided_by="maria")
        add_request(conn, "approved", amount=5000, currency="eur", created=at("2026-11-10 11:00"),
                    resolved=at("2026-11-10 12:00"), decided_by="maria")


def csrf_of(client: FlaskClient, path: str = "/sign-in") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: FlaskClient, token: str) -> None:
    answer = client.post("/sign-in", data={"token": token, "csrf_token": csrf_of(client)})
    assert answer.status_code == 303, answer.get_data(as_text=True)


def test_signing_in_with_the_approver_token_sets_a_strict_httponly_session_cookie(app: Flask, token: str) -> None:
    client = app.test_client()
    csrf = csrf_of(client)

    answer = client.post("/sign-in", data={"token": token, "csrf_token": csrf,
                                           "next": "/reports/daily?date=2026-11-25"})

    assert answer.status_code == 303
    assert answer.headers["Location"] == "/reports/daily?date=2026-11-25"
    [cookie] = answer.headers.getlist("Set-Cookie")
    assert cookie.startswith("refund_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert client.get("/reports/daily?date=2026-11-25").status_code == 200


def test_the_session_cookie_is_secure_over_https(app: Flask, token: str) -> None:
    client = app.test_client()
    csrf = csrf_of(client)

    answer = client.post("/sign-in", data={"token": token, "csrf_token": csrf}, base_url="https://localhost")

    assert "; Secure" in answer.headers["Set-Cookie"]


def test_a_wrong_token_is_refused_and_signs_nobody_in(app: Flask, token: str) -> None:
    client = app.test_client()
    csrf = csrf_of(client)

    answer = client.post("/sign-in", data={"token": token + "x", "csrf_token": csrf})

    assert answer.status_code == 401
    assert "Set-Cookie" not in answer.headers
    assert client.get("/reports/daily").status_code == 303


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_sign_in_without_the_pages_csrf_token_is_refused(app: Flask, token: str, csrf: str | None) -> None:
    client = app.test_client()
    csrf_of(client)

    answer = client.post("/sign-in", data={"token": token, **({"csrf_token": csrf} if csrf else {})})

    assert answer.status_code == 403
    assert "Set-Cookie" not in answer.headers
    assert client.get("/reports/daily").status_code == 303


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_sign_out_without_the_pages_csrf_token_is_refused_and_keeps_the_session(
        app: Flask, token: str, csrf: str | None) -> None:
    client = app.test_client()
    sign_in(client, token)

    answer = client.post("/sign-out", data={"csrf_token": csrf} if csrf else {})

    assert answer.status_code == 403
    assert client.get("/reports/daily").status_code == 200


def test_signing_out_ends_the_session(app: Flask, token: str) -> None:
    client = app.test_client()
    sign_in(client, token)

    answer = client.post("/sign-out", data={"csrf_token": csrf_of(client, "/reports/daily")})

    assert answer.status_code == 303 and answer.headers["Location"] == "/sign-in"
    assert client.get("/reports/daily").headers["Location"].startswith("/sign-in")


def test_a_revoked_approvers_session_stops_working(app: Flask, token: str) -> None:
    client = app.test_client()
    sign_in(client, token)
    assert client.get("/reports/daily").status_code == 200

    revoke(app.extensions["refund_service"].db, "maria", utcnow())

    answer = client.get("/reports/daily")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/sign-in")


def test_bearer_token_gets_the_reports_json_as_the_cli_prints_it(app: Flask, token: str) -> None:
    seed(app)

    answer = app.test_client().get("/reports/daily?date=2026-11-25&format=json",
                                   headers={"Authorization": f"Bearer {token}"})

    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers
    service = app.extensions["refund_service"]
    with service.db.read() as conn:
        expected = as_json(daily_report(conn, date(2026, 11, 25), ZoneInfo("Europe/Paris"), now=service.clock()))
    assert answer.get_json() == expected
    assert answer.get_json()["paths"]["auto_approved"]["count"] == 3


def test_a_wrong_bearer_token_is_refused_with_the_error_shape(app: Flask, token: str) -> None:
    answer = app.test_client().get("/reports/daily", headers={"Authorization": "Bearer apr_wrong"})

    assert answer.status_code == 401
    assert answer.get_json()["error"] == "unauthorized"


def test_the_page_shows_the_days_numbers_and_a_30_day_chart_with_the_approval_pages_headers(
        app: Flask, token: str) -> None:
    seed(app)
    client = app.test_client()
    sign_in(client, token)

    answer = client.get("/reports/daily?date=2026-11-25")

    html = answer.get_data(as_text=True)
    assert 'data-figure="paths.auto_approved.count">3<' in html
    assert 'data-figure="paths.rejected.count">1<' in html
    assert len(re.findall(r'<g data-day="', html)) == 30
    assert 'data-day="2026-10-27"' in html and 'data-day="2026-11-25" data-total="4"' in html
    assert 'data-day="2026-11-10" data-total="1"' in html
    assert "<script" not in html
    assert 'name="viewport"' in html
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"


def test_sign_in_leads_only_to_this_sites_report_pages(app: Flask, token: str) -> None:
    client = app.test_client()
    csrf = csrf_of(client)

    answer = client.post("/sign-in", data={"token": token, "csrf_token": csrf, "next": "//evil.example/reports/"})

    assert answer.headers["Location"] == "/reports/daily"


@pytest.mark.parametrize("target", ["//[x", "http://[::1", "//evil]/reports/"])
def test_a_next_that_is_not_a_url_is_ignored_not_a_500(app: Flask, token: str, target: str) -> None:
    client = app.test_client()
    assert client.get("/sign-in", query_string={"next": target}).status_code == 200
    csrf = csrf_of(client)

    answer = client.post("/sign-in", data={"token": token, "csrf_token": csrf, "next": target})

    assert answer.headers["Location"] == "/reports/daily"


@pytest.mark.parametrize("query", ["date=yesterday", "date=20261125", "date=0001-01-01", "date=2026-02-30",
                                   "format=xml"])
def test_a_malformed_date_or_format_is_refused(app: Flask, token: str, query: str) -> None:
    answer = app.test_client().get(f"/reports/daily?{query}", headers={"Authorization": f"Bearer {token}"})

    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_request"


def test_without_session_secret_sign_in_is_off_saying_what_to_set_and_only_the_bearer_opens_the_report(
        database_url: str) -> None:
    app = create_app(make_settings(database_url), gateway=FakeGateway())
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    client = app.test_client()

    assert client.get("/sign-in").status_code == 404
    assert "SESSION_SECRET" in client.get("/sign-in").get_data(as_text=True)
    assert client.post("/sign-in", data={"token": "apr_x"}).status_code == 404
    assert client.get("/reports/daily").status_code == 401
    token = add_approver(app.extensions["refund_service"].db, "maria", utcnow())
    assert client.get("/reports/daily", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    app.extensions["refund_service"].db.dispose()


def test_the_charts_series_counts_each_path_per_day_in_report_tz_refunds_made_elsewhere_included(app: Flask) -> None:
    db = app.extensions["refund_service"].db
    with db.transaction() as conn:
        # 23:30 UTC on the 24th is 00:30 on the 25th in Paris.
        add_request(conn, "approved", amount=100, currency="eur", created=at("2026-11-24 20:00"),
                    resolved=at("2026-11-24 23:30"), decided_by="maria")
        add_request(conn, "expired", amount=100, currency="eur", created=at("2026-10-20 10:00"),
                    resolved=at("2026-10-27 10:00"))
        add_request(conn, "expired", amount=100, currency="eur", created=at("2026-10-20 10:00"),
                    resolved=at("2026-10-26 10:00"))  # 30 days before the 25th: outside the chart
        add_external(conn, amount=300, currency="usd", processed=at("2026-11-25 09:00"), charge_id="ch_e1")
        add_external(conn, amount=300, currency="usd", processed=at("2026-11-25 09:30"), charge_id="ch_e2",
                     status="failed")

    with db.read() as conn:
        page = report_page(conn, date(2026, 11, 25), ZoneInfo("Europe/Paris"), now=at("2026-11-26 09:00"))

    assert [d.day for d in page.series] == [date(2026, 10, 27) + timedelta(days=n) for n in range(30)]
    by_day = {d.day: {p: n for p, n in d.counts.items() if n} for d in page.series}
    assert by_day[date(2026, 11, 25)] == {"approved": 1, "external": 1, "failed": 1}
    assert by_day[date(2026, 10, 27)] == {"expired": 1}
    assert sum(d.total for d in page.series) == 4
    assert page.report.paths["approved"].count == 1
