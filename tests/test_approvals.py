"""The approval queue: approve, reject, list, and read one request's history."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds.approvers import add as add_approver
from refunds.approvers import revoke
from refunds.service import utcnow
from refunds.tables import pending_refunds, refund_log, refund_requests
from tests.conftest import run_worker
from tests.fakes import FakeGateway, FakeNotifier
from tests.test_refund_request import rows


@pytest.fixture
def pending_id(client: FlaskClient, intake_headers: dict[str, str]) -> int:
    response = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000, "ticket_id": "T-9"},
                           headers=intake_headers)
    assert response.status_code == 202
    return int(response.get_json()["pending_id"])


def test_approval_executes_the_refund_and_the_log_says_who_approved(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], pending_id: int,
    gateway: FakeGateway, notifier: FakeNotifier,
) -> None:
    response = client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["approved_by"]) == ("approved", "maria")
    assert [r.refund_id for r in gateway.refunds] == [body["refund_id"]]
    assert gateway.refunds[0].amount == 12000
    [log_row] = rows(app, refund_log)
    assert (log_row.refund_id, log_row.approved_by, log_row.decision) == (body["refund_id"], "maria", "approved")
    [pending] = rows(app, pending_refunds)
    assert (pending.status, pending.decided_by) == ("approved", "maria")
    assert pending.decided_at is not None
    run_worker(app)
    assert notifier.kinds() == ["needs_approval", "approved"]
    assert notifier.sent[1][1]["actor"] == "maria"


def test_a_second_approval_never_refunds_twice(
    client: FlaskClient, approver_headers: dict[str, str], pending_id: int, gateway: FakeGateway
) -> None:
    client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers)
    again = client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers)
    assert again.status_code == 409
    assert again.get_json()["error"] == "not_pending"
    assert "already approved" in again.get_json()["message"]
    assert len(gateway.refunds) == 1


def test_twenty_concurrent_approvals_make_one_refund(
    app: Flask, approver_headers: dict[str, str], pending_id: int, gateway: FakeGateway
) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def approve() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.post("/approve-refund", json={"pending_id": pending_id},
                                    headers=approver_headers).status_code)

    threads = [threading.Thread(target=approve) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [409] * 19
    assert len(gateway.refunds) == 1
    assert len(rows(app, refund_log)) == 1


def test_rejection_keeps_the_note_and_nothing_reaches_stripe(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], pending_id: int,
    gateway: FakeGateway, notifier: FakeNotifier,
) -> None:
    response = client.post("/reject-refund", json={"pending_id": pending_id, "note": "used for 3 months"},
                           headers=approver_headers)
    assert response.status_code == 200
    assert response.get_json()["status"] == "rejected"
    then = client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers)
    assert then.status_code == 409
    assert gateway.calls == []
    [pending] = rows(app, pending_refunds)
    assert (pending.status, pending.decision_note) == ("rejected", "used for 3 months")
    assert rows(app, refund_requests)[0].status == "rejected"
    run_worker(app)
    assert notifier.kinds() == ["needs_approval", "rejected"]
    assert notifier.sent[1][1]["note"] == "used for 3 months"


def test_approving_an_unknown_pending_id_is_not_found(
    client: FlaskClient, approver_headers: dict[str, str], gateway: FakeGateway
) -> None:
    response = client.post("/approve-refund", json={"pending_id": 999}, headers=approver_headers)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert gateway.calls == []


def test_approval_that_stripe_refuses_fails_the_request(
    app: Flask, client: FlaskClient, approver_headers: dict[str, str], pending_id: int, gateway: FakeGateway
) -> None:
    gateway.charges["ch_big"].amount_refunded = 19000  # refunded elsewhere meanwhile
    response = client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers)
    assert response.status_code == 409
    assert response.get_json()["error"] == "amount_too_large"
    assert rows(app, refund_requests)[0].status == "failed"
    assert gateway.refunds == []


@pytest.mark.parametrize("who", ["nobody", "wrong", "intake", "revoked"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("post", "/approve-refund", {"pending_id": 1}), ("post", "/reject-refund", {"pending_id": 1}),
     ("get", "/pending-refunds", None), ("get", "/refunds/1", None)],
)
def test_approver_endpoints_refuse_anyone_without_an_active_approver_token(
    app: Flask, client: FlaskClient, pending_id: int, gateway: FakeGateway, intake_headers: dict[str, str],
    who: str, method: str, path: str, body: Any,
) -> None:
    db = app.extensions["refund_service"].db
    headers = {
        "nobody": {},
        "wrong": {"Authorization": "Bearer apr_not-a-real-token"},
        "intake": intake_headers,
        "revoked": {"Authorization": f"Bearer {add_approver(db, 'gone', utcnow())}"},
    }[who]
    if who == "revoked":
        revoke(db, "gone", utcnow())
    response = getattr(client, method)(path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert gateway.calls == []
    assert rows(app, pending_refunds)[0].status == "pending"


def test_pending_queue_lists_oldest_first_with_currency(
    client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str], pending_id: int
) -> None:
    client.post("/refund-request", json={"charge_id": "ch_jpy", "amount": 9000}, headers=intake_headers)
    response = client.get("/pending-refunds", headers=approver_headers)
    assert response.status_code == 200
    queue = response.get_json()["pending"]
    assert [(p["amount"], p["currency"], p["display"]) for p in queue] == [
        (12000, "usd", "120.00 USD"), (9000, "jpy", "9,000 JPY")]
    assert queue[0]["pending_id"] == pending_id
    assert queue[0]["ticket_id"] == "T-9"
    assert "over the auto-approve threshold" in queue[0]["policy_explanation"]


def test_history_shows_each_step_and_who_took_it(
    client: FlaskClient, approver_headers: dict[str, str], pending_id: int
) -> None:
    approved = client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers).get_json()
    response = client.get(f"/refunds/{approved['request_id']}", headers=approver_headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "succeeded"
    assert body["stripe_refund_id"] == approved["refund_id"]
    assert [(h["action"], h["actor"]) for h in body["history"]] == [
        ("requested", "intake"), ("needs_approval", "policy"), ("approved", "maria"),
        ("refunded", "stripe")]
    assert body["approval"]["decided_by"] == "maria"
    assert body["refunds"][0]["refund_id"] == approved["refund_id"]
    assert body["created_at"].endswith("Z")


def test_history_of_an_unknown_request_is_not_found(client: FlaskClient, approver_headers: dict[str, str]) -> None:
    response = client.get("/refunds/12345", headers=approver_headers)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
