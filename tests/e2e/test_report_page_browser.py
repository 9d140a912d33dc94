"""The report page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright) signs in
through the page, reads the day's numbers and the 30-day chart, fits a phone's width, and signs out.

The app runs under a real HTTP server (werkzeug's) on loopback, in this process. Skipped, saying why, when
Playwright or Chromium is missing (`.ci/run` installs Chromium when it can).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from werkzeug.serving import make_server

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.reports import daily_report
from refunds.service import utcnow
from tests.conftest import make_settings
from tests.fakes import FakeClock, FakeGateway
from tests.report_history import add_request, at

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DAY = date(2026, 11, 25)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)",
                allow_module_level=True)


@pytest.fixture
def served(tmp_path: Any) -> Iterator[tuple[str, Flask, str]]:
    """The app with a seeded history, served on a free loopback port: its base URL, the app, an approver token."""
    app = create_app(make_settings(f"sqlite:///{tmp_path}/refunds.db", session_secret="s" * 40,
                                   report_tz="Europe/Paris"),
                     gateway=FakeGateway(), clock=FakeClock(at("2026-11-26 09:00")))
    db = app.extensions["refund_service"].db
    with db.transaction() as conn:
        for hour in (8, 9, 10):
            add_request(conn, "auto_approved", amount=1500, currency="jpy", created=at(f"2026-11-25 {hour:02}:00"),
                        resolved=at(f"2026-11-25 {hour:02}:00"))
        add_request(conn, "approved", amount=5000, currency="eur", created=at("2026-11-25 11:00"),
                    resolved=at("2026-11-25 13:00"), decided_by="maria", queued=at("2026-11-25 11:00"))
        add_request(conn, "rejected", amount=9000, currency="usd", created=at("2026-11-25 11:00"),
                    resolved=at("2026-11-25 12:00"), decided_by="maria")
        add_request(conn, "failed", amount=700, currency="usd", created=at("2026-11-02 11:00"),
                    resolved=at("2026-11-02 11:00"), error_code="charge_disputed")
    token = add_approver(db, "maria", utcnow())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app, token
    server.shutdown()
    thread.join(5)
    db.dispose()


@pytest.fixture
def browser() -> Iterator[Any]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=[*args, "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def test_an_approver_signs_in_reads_the_days_numbers_and_chart_on_a_phone_and_signs_out(
        served: tuple[str, Flask, str], browser: Any) -> None:
    base, app, token = served
    with app.extensions["refund_service"].db.read() as conn:
        expected = daily_report(conn, DAY, ZoneInfo("Europe/Paris"), now=at("2026-11-26 09:00"))
    page = browser.new_page(viewport={"width": 375, "height": 740}, is_mobile=True)

    page.goto(f"{base}/reports/daily?date={DAY.isoformat()}")
    assert page.url.startswith(f"{base}/sign-in")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/reports/daily?date={DAY.isoformat()}")

    figures = {el.get_attribute("data-figure"): el.inner_text()
               for el in page.query_selector_all("[data-figure]")}
    for path, tally in expected.paths.items():
        assert figures[f"paths.{path}.count"] == str(tally.count), path
    assert figures["paths.auto_approved.count"] == "3"
    assert figures["queue.size"] == str(expected.queue.size)
    assert figures["failures.count"] == str(len(expected.failures))
    bars = page.query_selector_all("svg[data-chart] g[data-day]")
    assert len(bars) == 30
    totals = {bar.get_attribute("data-day"): bar.get_attribute("data-total") for bar in bars}
    assert totals["2026-11-25"] == "5" and totals["2026-11-02"] == "1" and totals["2026-10-27"] == "0"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    page.click("text=Sign out")
    page.wait_for_url(f"{base}/sign-in")
    page.goto(f"{base}/reports/daily?date={DAY.isoformat()}")
    assert page.url.startswith(f"{base}/sign-in")
