"""GET /pending-refunds a page at a time: following `next` reads the whole queue, oldest first, each once."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, select

from refunds import store
from refunds.errors import StripeUnavailable
from refunds.service import RefundCommand
from refunds.tables import pending_refunds
from tests.fakes import FakeClock, FakeGateway

QUEUED = 624


def queue_refunds(app: Flask, count: int, clock: FakeClock) -> None:
    """`count` refunds waiting for approval, stored as the service stores them, in one transaction.

    Their request times are shuffled against their ids, and three share each second: the queue's order (the
    order they were queued, by pending id) is not the order of `requested_at`.
    """
    seconds = list(range(count))
    random.Random(5).shuffle(seconds)
    with app.extensions["refund_service"].db.transaction() as conn:
        for i, second in enumerate(seconds):
            queue_one(conn, i, clock.now + timedelta(seconds=second // 3))


def queue_one(conn: Connection, i: int, at: datetime) -> int:
    """One refund waiting for approval, stored as the service stores it; its pending id."""
    request_id = store.insert_request(conn, {
        "body_fingerprint": RefundCommand(charge_id="ch_big", amount=15000 + i).fingerprint(),
        "charge_id": "ch_big", "requested_amount": 15000 + i, "amount": 15000 + i, "currency": "usd",
        "reason": "requested_by_customer", "product": f"item {i}", "status": "pending_approval",
        "decision": "needs_approval", "policy_explanation": "over the auto-approve threshold",
        "requested_by": "intake", "attempts": 0, "created_at": at, "updated_at": at,
    })
    return store.insert_pending(conn, {"request_id": request_id, "charge_id": "ch_big", "amount": 15000 + i,
                                       "currency": "usd", "reason": "requested_by_customer", "requested_at": at,
                                       "status": "pending"})


def queue_order(app: Flask) -> list[int]:
    with app.extensions["refund_service"].db.transaction() as conn:
        return [row.id for row in conn.execute(
            select(pending_refunds.c.id).where(pending_refunds.c.status == "pending")
            .order_by(pending_refunds.c.id))]


def walk(client: FlaskClient, headers: dict[str, str], first: str) -> list[dict[str, Any]]:
    pages = []
    link: str | None = first
    while link is not None:
        response = client.get(link, headers=headers)
        assert response.status_code == 200, response.get_json()
        pages.append(response.get_json())
        link = pages[-1]["next"]
        assert len(pages) <= QUEUED, "the pages never end"
    return pages


@pytest.mark.parametrize(("first", "page_size"), [("/pending-refunds", 100), ("/pending-refunds?limit=500", 500),
                                                  ("/pending-refunds?limit=37", 37)])
def test_following_next_returns_every_pending_refund_once_oldest_first(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], clock: FakeClock, first: str, page_size: int
) -> None:
    queue_refunds(app, QUEUED, clock)
    expected = queue_order(app)
    assert len(expected) == QUEUED

    pages = walk(client, approver_headers, first)

    seen = [item["pending_id"] for page in pages for item in page["pending"]]
    assert seen == expected  # all 624, each once, in the queue's order
    assert [len(page["pending"]) for page in pages[:-1]] == [page_size] * (len(pages) - 1)
    assert 0 < len(pages[-1]["pending"]) <= page_size
    assert {page["count"] for page in pages} == {QUEUED}  # the whole queue, on every page
    assert pages[-1]["next"] is None
    assert seen == sorted(seen)  # queued first, listed first
    item = pages[0]["pending"][0]
    assert set(item) == {"pending_id", "request_id", "charge_id", "amount", "currency", "display", "reason",
                         "requested_at", "product", "customer_email", "ticket_id", "note", "policy_explanation"}


def test_refunds_decided_or_queued_between_pages_never_make_a_page_skip_or_repeat_one(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], clock: FakeClock, gateway: FakeGateway,
    intake_headers: dict[str, str],
) -> None:
    queue_refunds(app, 250, clock)
    expected = queue_order(app)
    first = client.get("/pending-refunds", headers=approver_headers).get_json()
    # Between the pages: one already listed and one not yet listed are decided, and a new one is queued.
    for pending_id in (expected[10], expected[150]):
        assert client.post("/reject-refund", json={"pending_id": pending_id},
                           headers=approver_headers).status_code == 200
    clock.advance(timedelta(days=1))
    newest = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    assert newest.status_code == 202

    rest = walk(client, approver_headers, first["next"])

    seen = [item["pending_id"] for item in first["pending"]] + [
        item["pending_id"] for page in rest for item in page["pending"]]
    assert seen == [p for p in expected if p != expected[150]] + [newest.get_json()["pending_id"]]
    assert rest[-1]["count"] == 250 - 2 + 1


def test_a_request_made_early_but_queued_after_a_client_passed_the_first_page_is_on_a_later_page(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], clock: FakeClock, gateway: FakeGateway,
    intake_headers: dict[str, str],
) -> None:
    # Stripe is down when the first request arrives: it is kept, and assessed (queued) only when retried.
    gateway.fail_lookups.append(StripeUnavailable("Stripe could not be reached or is busy; try again shortly."))
    early = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 15_000}, headers=intake_headers)
    assert early.get_json()["status"] == "processing"
    later = []
    for amount in (12_000, 12_001, 12_002):
        clock.advance(timedelta(seconds=30))
        asked = client.post("/refund-request", json={"charge_id": "ch_big", "amount": amount}, headers=intake_headers)
        later.append(asked.get_json()["pending_id"])
    first = client.get("/pending-refunds?limit=2", headers=approver_headers).get_json()
    assert [item["pending_id"] for item in first["pending"]] == later[:2]

    clock.advance(app.extensions["refund_service"].execution_lease)
    assert app.extensions["refund_service"].retry_due() == 1  # assessed now: queued behind the first page
    with app.extensions["refund_service"].db.transaction() as conn:
        queued_late = conn.execute(select(pending_refunds.c.id).where(
            pending_refunds.c.request_id == early.get_json()["request_id"])).scalar_one()

    rest = walk(client, approver_headers, first["next"])

    seen = [item["pending_id"] for item in first["pending"]] + [
        item["pending_id"] for page in rest for item in page["pending"]]
    assert seen == [*later, queued_late]  # nothing skipped, nothing repeated
    early_item = rest[-1]["pending"][-1]
    assert early_item["request_id"] == early.get_json()["request_id"]
    assert early_item["requested_at"] < first["pending"][0]["requested_at"]  # still says when it was asked for
    assert rest[-1]["count"] == 4


def test_a_refund_queued_while_another_is_uncommitted_waits_so_pending_ids_become_visible_in_order(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], clock: FakeClock
) -> None:
    # Without this, PostgreSQL could commit pending id 2 before id 1: a page read in between lists 2, and 1
    # then sits behind the reader's cursor. Queueing transactions take ids and commit one at a time instead.
    db = app.extensions["refund_service"].db
    second: list[int] = []
    with db.transaction() as conn:
        first_id = queue_one(conn, 1, clock.now)
        other = threading.Thread(target=lambda: second.append(_queue_in_own_transaction(db, clock.now)))
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive(), "a second refund was queued while the first was not committed"
        if db.engine.dialect.name == "postgresql":  # SQLite's transactions (BEGIN IMMEDIATE) all wait here
            assert client.get("/pending-refunds", headers=approver_headers).get_json()["pending"] == []
    other.join(timeout=10)
    assert second and second[0] > first_id
    listed = client.get("/pending-refunds", headers=approver_headers).get_json()["pending"]
    assert [item["pending_id"] for item in listed] == [first_id, second[0]]


def _queue_in_own_transaction(db: Any, at: datetime) -> int:
    with db.transaction() as conn:
        return queue_one(conn, 2, at)


def test_an_empty_queue_is_one_page_without_next(client: FlaskClient, approver_headers: dict[str, str]) -> None:
    assert client.get("/pending-refunds", headers=approver_headers).get_json() == {
        "pending": [], "count": 0, "next": None}


@pytest.mark.parametrize(
    ("query", "named"),
    [("limit=0", "limit"), ("limit=501", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
     ("limit=1.5", "limit"), ("limit=", "limit"), ("limit=%201", "limit"), ("cursor=abc", "cursor"),
     ("cursor=", "cursor"), ("cursor=12-", "cursor"), ("limit=5&cursor=1-1-1", "cursor"), ("cursor=-1", "cursor"),
     ("cursor=12345678901", "cursor")],
)
def test_a_malformed_limit_or_cursor_is_refused_naming_it(
    client: FlaskClient, approver_headers: dict[str, str], query: str, named: str
) -> None:
    response = client.get(f"/pending-refunds?{query}", headers=approver_headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert response.get_json()["message"].startswith(f"{named}: ")


def test_a_cursor_past_the_end_is_an_empty_last_page(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], clock: FakeClock
) -> None:
    queue_refunds(app, 3, clock)
    response = client.get("/pending-refunds?cursor=9999999999", headers=approver_headers)
    assert response.get_json() == {"pending": [], "count": 3, "next": None}
