"""GET /pending-refunds a page at a time: following `next` reads the whole queue, oldest first, each once."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from refunds import store
from refunds.service import RefundCommand
from refunds.tables import pending_refunds
from tests.fakes import FakeClock, FakeGateway

QUEUED = 624


def queue_refunds(app: Flask, count: int, clock: FakeClock) -> None:
    """`count` refunds waiting for approval, stored as the service stores them, in one transaction.

    Their times are shuffled against their ids, and three share each second, so that the order (requested_at,
    then id) differs from insertion order and has ties.
    """
    seconds = list(range(count))
    random.Random(5).shuffle(seconds)
    with app.extensions["refund_service"].db.transaction() as conn:
        for i, second in enumerate(seconds):
            at = clock.now + timedelta(seconds=second // 3)
            request_id = store.insert_request(conn, {
                "body_fingerprint": RefundCommand(charge_id="ch_big", amount=15000 + i).fingerprint(),
                "charge_id": "ch_big", "requested_amount": 15000 + i, "amount": 15000 + i, "currency": "usd",
                "reason": "requested_by_customer", "product": f"item {i}", "status": "pending_approval",
                "decision": "needs_approval", "policy_explanation": "over the auto-approve threshold",
                "requested_by": "intake", "attempts": 0, "created_at": at, "updated_at": at,
            })
            store.insert_pending(conn, {"request_id": request_id, "charge_id": "ch_big", "amount": 15000 + i,
                                        "currency": "usd", "reason": "requested_by_customer", "requested_at": at,
                                        "status": "pending"})


def queue_order(app: Flask) -> list[int]:
    with app.extensions["refund_service"].db.transaction() as conn:
        return [row.id for row in conn.execute(
            select(pending_refunds.c.id).where(pending_refunds.c.status == "pending")
            .order_by(pending_refunds.c.requested_at, pending_refunds.c.id))]


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
    times = [item["requested_at"] for page in pages for item in page["pending"]]
    assert times == sorted(times)
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


def test_an_empty_queue_is_one_page_without_next(client: FlaskClient, approver_headers: dict[str, str]) -> None:
    assert client.get("/pending-refunds", headers=approver_headers).get_json() == {
        "pending": [], "count": 0, "next": None}


@pytest.mark.parametrize(
    ("query", "named"),
    [("limit=0", "limit"), ("limit=501", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
     ("limit=1.5", "limit"), ("limit=", "limit"), ("limit=%201", "limit"), ("cursor=abc", "cursor"),
     ("cursor=", "cursor"), ("cursor=12-", "cursor"), ("limit=5&cursor=1-1-1", "cursor")],
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
    response = client.get("/pending-refunds?cursor=99999999999999999-9999999999", headers=approver_headers)
    assert response.get_json() == {"pending": [], "count": 3, "next": None}
