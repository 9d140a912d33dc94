"""The worker posts the daily report to Slack at REPORT_TIME in REPORT_TZ: once per day however many workers
run, each day missed during downtime once, nothing before REPORT_TIME."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from refunds import create_app
from refunds.tables import report_posts
from standins.slack_webhook import SlackStandIn
from tests.conftest import make_settings
from tests.fakes import FakeClock, FakeGateway
from tests.report_history import add_request, at


def _app(database_url: str, slack: SlackStandIn, clock: FakeClock) -> Flask:
    settings = make_settings(database_url, slack_webhook_url=slack.webhook_url, report_time="07:30",
                             report_tz="Europe/Paris")
    app = create_app(settings, gateway=FakeGateway(), clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    return app


@pytest.fixture
def apps(database_url: str, slack: SlackStandIn) -> Iterator[tuple[Flask, Flask, FakeClock]]:
    """Two instances on one database, as two servers would run them, sharing one clock."""
    clock = FakeClock(at("2026-11-26 06:00"))  # 07:00 in Paris
    first, second = _app(database_url, slack, clock), _app(database_url, slack, clock)
    yield first, second, clock
    for app in (first, second):
        app.extensions["refund_service"].db.dispose()


def _run(app: Flask) -> int:
    return int(app.extensions["refund_worker"].run_once())


def _posted_days(app: Flask) -> list[date]:
    with app.extensions["refund_service"].db.read() as conn:
        return list(conn.execute(select(report_posts.c.day).where(report_posts.c.posted_at.is_not(None))
                                 .order_by(report_posts.c.day)).scalars())


def _titles(slack: SlackStandIn) -> list[str]:
    return [m["blocks"][0]["text"]["text"] for m in slack.messages]


def test_nothing_is_posted_before_report_time(apps: tuple[Flask, Flask, FakeClock], slack: SlackStandIn) -> None:
    first, _, clock = apps

    assert _run(first) == 0
    clock.advance(timedelta(minutes=29))  # 07:29 in Paris
    assert _run(first) == 0

    assert slack.attempts == 0
    assert _posted_days(first) == []


def test_two_workers_racing_at_report_time_post_yesterdays_report_once(
        apps: tuple[Flask, Flask, FakeClock], slack: SlackStandIn) -> None:
    first, second, clock = apps
    with first.extensions["refund_service"].db.transaction() as conn:
        add_request(conn, "auto_approved", amount=1500, currency="jpy", created=at("2026-11-25 10:00"),
                    resolved=at("2026-11-25 10:00"))
    clock.advance(timedelta(minutes=30))  # 07:30 in Paris
    start = threading.Barrier(4)
    done: list[int] = []

    def race(app: Flask) -> None:
        start.wait()
        done.append(_run(app))

    threads = [threading.Thread(target=race, args=(app,)) for app in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(done) == [0, 0, 0, 1]
    assert slack.attempts == 1
    assert _titles(slack) == ["Refunds on 2026-11-25 (Europe/Paris)"]
    assert "1 refunded" in slack.messages[0]["text"]
    assert _posted_days(first) == [date(2026, 11, 25)]
    clock.advance(timedelta(hours=12))
    assert _run(first) + _run(second) == 0
    assert slack.attempts == 1


def test_after_downtime_each_missed_day_is_posted_once_oldest_first(
        apps: tuple[Flask, Flask, FakeClock], slack: SlackStandIn) -> None:
    first, second, clock = apps
    clock.advance(timedelta(hours=1))
    assert _run(first) == 1  # the 25th, the first day the schedule ran
    clock.advance(timedelta(days=3, hours=2))  # down until the 29th, 10:00 in Paris

    assert _run(second) + _run(first) == 3

    assert _titles(slack) == [f"Refunds on 2026-11-{d} (Europe/Paris)" for d in (25, 26, 27, 28)]
    assert _posted_days(first) == [date(2026, 11, d) for d in (25, 26, 27, 28)]


def test_catch_up_goes_back_at_most_seven_days(apps: tuple[Flask, Flask, FakeClock], slack: SlackStandIn) -> None:
    first, _, clock = apps
    clock.advance(timedelta(hours=1))
    assert _run(first) == 1
    clock.advance(timedelta(days=20))

    assert _run(first) == 7

    assert _titles(slack)[1:] == [f"Refunds on 2026-12-{d:02} (Europe/Paris)" for d in range(9, 16)]


def test_a_claim_whose_worker_died_is_posted_by_another_after_the_lease(
        apps: tuple[Flask, Flask, FakeClock], slack: SlackStandIn) -> None:
    first, second, clock = apps
    clock.advance(timedelta(hours=1))
    slack.set_down(500)
    assert _run(first) == 0  # claimed; Slack failed, as when the worker dies mid-post
    slack.set_up()
    assert _run(second) == 0  # the claim still holds

    clock.advance(timedelta(minutes=5))
    assert _run(second) == 1

    assert _titles(slack) == ["Refunds on 2026-11-25 (Europe/Paris)"]
    with first.extensions["refund_service"].db.read() as conn:
        row = conn.execute(select(report_posts)).one()
    assert (row.attempts, row.last_error) == (2, None)
