"""The background worker: Slack delivery from the outbox, with retries and per-request order."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from refunds.tables import outbox
from tests.conftest import run_worker
from tests.fakes import FakeClock, FakeNotifier


def test_slack_down_loses_nothing_and_delivers_in_order_once_it_answers(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str],
    notifier: FakeNotifier, clock: FakeClock,
) -> None:
    notifier.down = True
    pending_id = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 9000},
                             headers=intake_headers).get_json()["pending_id"]
    approved = client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers)
    assert approved.status_code == 200  # a failing Slack never fails a refund
    for _ in range(3):
        clock.advance(timedelta(minutes=10))
        run_worker(app)
    assert notifier.sent == []

    notifier.down = False
    clock.advance(timedelta(minutes=10))
    run_worker(app)
    assert notifier.kinds() == ["needs_approval", "approved"]
    with app.extensions["refund_service"].db.transaction() as conn:
        messages = list(conn.execute(select(outbox).order_by(outbox.c.id)))
    assert all(m.delivered_at is not None for m in messages)
    assert messages[0].attempts >= 4


def test_a_failed_delivery_waits_for_its_backoff(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], notifier: FakeNotifier,
    clock: FakeClock,
) -> None:
    notifier.down = True
    client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100}, headers=intake_headers)
    run_worker(app)
    notifier.down = False
    run_worker(app)  # not due yet: backoff
    assert notifier.sent == []
    clock.advance(timedelta(seconds=5))
    run_worker(app)
    assert notifier.kinds() == ["auto_approved"]


def test_messages_are_delivered_once(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], notifier: FakeNotifier
) -> None:
    client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100}, headers=intake_headers)
    run_worker(app)
    run_worker(app)
    assert notifier.kinds() == ["auto_approved"]


def test_claiming_messages_finds_each_requests_earlier_ones_through_an_index(app: Flask) -> None:
    """With thousands of messages waiting (a Slack outage), a claim must not read every waiting message once per
    candidate: it did, and took 5 s with 8,000 waiting, inside a write transaction. SQLite's plan shows how."""
    from refunds import store

    db = app.extensions["refund_service"].db
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner chooses by table size; the same migration makes the index there")
    with db.read() as conn:
        compiled = store._DUE_MESSAGES.compile(conn)
        plan = " | ".join(str(row[-1]) for row in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}", tuple(None for _ in compiled.positiontup or ())))
    assert "ix_outbox_request_id" in plan, plan
