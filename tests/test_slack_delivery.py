"""Outbox delivery to a Slack that enforces its limits: long text is cut to fit, a message Slack
refuses as invalid (400) is parked dead after one attempt, and rate limits, outages and a broken
webhook (403/404/410) are waited out."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.notifier import TITLES
from refunds.service import utcnow
from refunds.tables import outbox
from standins.slack_webhook import SlackStandIn
from tests.conftest import make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway
from tests.test_refund_request import rows


@pytest.fixture
def app(database_url: str, gateway: FakeGateway, clock: FakeClock, slack: SlackStandIn) -> Iterator[Flask]:
    app = create_app(make_settings(database_url, slack_webhook_url=slack.webhook_url), gateway=gateway, clock=clock)
    app.config["TESTING"] = True
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


@pytest.fixture
def approver(app: Flask) -> dict[str, str]:
    token = add_approver(app.extensions["refund_service"].db, "maria", utcnow())
    return {"Authorization": f"Bearer {token}"}


def ask_for_approval(client: FlaskClient, intake_headers: dict[str, str]) -> int:
    """A 120.00 USD refund that waits for an approver."""
    queued = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    assert queued.status_code == 202
    return int(queued.get_json()["pending_id"])


def outbox_rows(app: Flask) -> list[Any]:
    return sorted(rows(app, outbox), key=lambda row: row.id)


def test_a_rejection_note_of_2000_lt_reaches_slack_cut_to_its_limits(
    app: Flask, slack: SlackStandIn, intake_headers: dict[str, str], approver: dict[str, str]
) -> None:
    client = app.test_client()
    pending_id = ask_for_approval(client, intake_headers)
    rejected = client.post("/reject-refund", json={"pending_id": pending_id, "note": "<" * 2000}, headers=approver)
    assert rejected.status_code == 200

    run_worker(app)

    assert slack.refusals == []
    _, rejection = slack.wait_for(2)
    assert rejection["text"].startswith(":no_entry_sign: Refund rejected")
    [context] = [b for b in rejection["blocks"] if b["type"] == "context"]
    note = context["elements"][-1]["text"]
    assert len(note) <= 3000 and note.endswith("…")
    assert note[:-1] == "&lt;" * ((3000 - 1) // 4)  # cut between entities, never inside one
    assert all(row.delivered_at is not None and row.dead_at is None for row in outbox_rows(app))


def test_a_message_slack_refuses_is_parked_dead_after_one_attempt_and_later_ones_are_still_delivered(
    app: Flask, slack: SlackStandIn, intake_headers: dict[str, str], approver: dict[str, str], clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = app.test_client()
    pending_id = ask_for_approval(client, intake_headers)
    slack.fail_next(1, status=400)  # Slack: "invalid_payload"

    with caplog.at_level(logging.INFO):
        run_worker(app)
    [dead] = outbox_rows(app)
    assert dead.kind == "needs_approval" and dead.dead_at is not None and dead.delivered_at is None
    assert dead.attempts == 1 and dead.last_error == "Slack answered 400: invalid_payload"
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "parked dead" in logged.getMessage() and "invalid_payload" in logged.getMessage()
    assert slack.webhook_url not in caplog.text and "/services/" not in caplog.text

    # The request goes on: its next message is not held back behind the dead one.
    assert client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver).status_code == 200
    run_worker(app)
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        run_worker(app)

    [delivered] = slack.messages
    assert delivered["text"].startswith(TITLES["approved"])
    assert slack.attempts == 2  # the dead message was never sent again
    dead, approved = outbox_rows(app)
    assert (dead.attempts, dead.delivered_at) == (1, None)
    assert approved.kind == "approved" and approved.delivered_at is not None and approved.dead_at is None


def test_a_rate_limited_message_waits_as_long_as_slack_says_and_is_then_delivered(
    app: Flask, slack: SlackStandIn, intake_headers: dict[str, str], clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ask_for_approval(app.test_client(), intake_headers)
    slack.fail_next(1, status=429, retry_after=120)
    with caplog.at_level(logging.INFO):
        run_worker(app)
    # Slack's back-pressure, not a fault: a warning, no error for ops to chase.
    assert [r.levelno for r in caplog.records if "not delivered" in r.getMessage()] == [logging.WARNING]

    clock.advance(timedelta(seconds=60))  # past our own backoff, not past Slack's Retry-After
    run_worker(app)
    assert (slack.messages, slack.attempts) == ([], 1)

    clock.advance(timedelta(seconds=61))
    run_worker(app)
    assert len(slack.messages) == 1
    [row] = outbox_rows(app)
    assert row.delivered_at is not None and row.dead_at is None and row.attempts == 2


@pytest.mark.parametrize("status", [500, 503, 408])
def test_outages_and_timeouts_are_retried_until_delivered_never_parked(
    app: Flask, slack: SlackStandIn, intake_headers: dict[str, str], clock: FakeClock, status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ask_for_approval(app.test_client(), intake_headers)
    slack.fail_next(3, status=status)
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            run_worker(app)
            clock.advance(timedelta(minutes=5))

    assert [r.levelno for r in caplog.records if "not delivered" in r.getMessage()] == [logging.ERROR] * 3

    assert len(slack.messages) == 1
    [row] = outbox_rows(app)
    assert row.delivered_at is not None and row.dead_at is None and row.attempts == 4


@pytest.mark.parametrize(("status", "error"), [(404, "no_service"), (403, "invalid_token"),
                                               (410, "channel_is_archived")])
def test_a_broken_webhook_keeps_every_message_until_it_is_fixed_then_delivers_them_in_order(
    app: Flask, slack: SlackStandIn, intake_headers: dict[str, str], approver: dict[str, str], clock: FakeClock,
    caplog: pytest.LogCaptureFixture, status: int, error: str,
) -> None:
    client = app.test_client()
    first, second = ask_for_approval(client, intake_headers), ask_for_approval(client, intake_headers)
    assert client.post("/approve-refund", json={"pending_id": first}, headers=approver).status_code == 200
    assert client.post("/reject-refund", json={"pending_id": second, "note": "no"}, headers=approver).status_code == 200
    slack.set_down(status, error)  # the webhook was revoked, removed or its channel archived

    with caplog.at_level(logging.INFO):
        for _ in range(6):  # half an hour of attempts
            run_worker(app)
            clock.advance(timedelta(minutes=5))
    assert slack.messages == [] and slack.attempts == 2 * 6  # both requests' first messages, every time
    assert all(row.dead_at is None and row.delivered_at is None for row in outbox_rows(app))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 * 6 and all(f"Slack answered {status}: {error}" in line for line in errors)
    assert slack.webhook_url not in caplog.text and "/services/" not in caplog.text

    slack.set_up()  # an operator fixed SLACK_WEBHOOK_URL
    clock.advance(timedelta(minutes=5))
    run_worker(app)

    received = [next(kind for kind, title in TITLES.items() if message["text"].startswith(title))
                for message in slack.messages]
    assert received == ["needs_approval", "needs_approval", "approved", "rejected"]
    assert all(row.delivered_at is not None and row.dead_at is None for row in outbox_rows(app))
    assert [row.kind for row in outbox_rows(app)] == ["needs_approval", "needs_approval", "approved", "rejected"]
