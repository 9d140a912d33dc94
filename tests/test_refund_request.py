"""POST /refund-request: the support tool's side of the API."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from refunds.errors import StripeRefused, StripeUnavailable
from refunds.tables import outbox, pending_refunds, refund_log, refund_requests
from tests.conftest import run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier


def rows(app: Flask, table: Any) -> list[Any]:
    with app.extensions["refund_service"].db.transaction() as conn:
        return list(conn.execute(select(table).order_by(*table.primary_key.columns)))


def post(client: FlaskClient, headers: dict[str, str], body: Any, **extra: str) -> Any:
    return client.post("/refund-request", json=body, headers={**headers, **extra})


def test_small_refund_is_executed_on_stripe_at_once_and_logged(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier
) -> None:
    response = post(client, intake_headers, {"charge_id": "ch_small", "amount": 2500, "product": "mug"})

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "auto_approved"
    assert [r.refund_id for r in gateway.refunds] == [body["refund_id"]]
    assert gateway.refunds[0].amount == 2500
    [log_row] = rows(app, refund_log)
    assert (log_row.refund_id, log_row.charge_id, log_row.amount, log_row.currency, log_row.status) == (
        body["refund_id"], "ch_small", 2500, "usd", "succeeded")
    assert log_row.decision == "auto_approved"
    assert log_row.product == "mug"
    [stored] = rows(app, refund_requests)
    assert gateway.calls[0].metadata == {"refund_request_id": str(body["request_id"]), "source": "refund-service",
                                         "refund_key": stored.stripe_idempotency_key,
                                         "trace_id": response.headers["X-Request-Id"]}
    assert notifier.sent == []  # Slack is never in the request path
    run_worker(app)
    assert notifier.kinds() == ["auto_approved"]


def test_large_refund_waits_for_approval_and_stripe_sees_nothing(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier
) -> None:
    response = post(client, intake_headers, {"charge_id": "ch_big", "amount": 15000, "customer_email": "a@b.co"})

    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "pending_approval"
    assert gateway.calls == []
    [pending] = rows(app, pending_refunds)
    assert (pending.id, pending.charge_id, pending.amount, pending.currency, pending.status) == (
        body["pending_id"], "ch_big", 15000, "usd", "pending")
    assert rows(app, refund_log) == []
    run_worker(app)
    [(kind, facts)] = notifier.sent
    assert kind == "needs_approval"
    assert facts["customer_email"] == "a@b.co"
    assert facts["pending_id"] == body["pending_id"]


def test_absent_amount_means_all_that_remains_refundable(
    client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    gateway.charges["ch_small"].amount_refunded = 1000
    response = post(client, intake_headers, {"charge_id": "ch_small"})
    assert response.status_code == 200
    assert gateway.refunds[0].amount == 2000


def test_refund_by_payment_intent_uses_its_charge(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    response = post(client, intake_headers, {"payment_intent_id": "pi_big", "amount": 100})
    assert response.status_code == 200
    assert gateway.calls[0].payment_intent_id == "pi_big"
    assert rows(app, refund_log)[0].charge_id == "ch_big"


def test_zero_decimal_currency_amounts_are_whole_units(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    response = post(client, intake_headers, {"charge_id": "ch_jpy", "amount": 6000})
    assert response.status_code == 202
    assert rows(app, pending_refunds)[0].currency == "jpy"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"amount": 100}, "exactly one of charge_id or payment_intent_id"),
        ({"charge_id": "ch_small", "payment_intent_id": "pi_big"}, "exactly one of charge_id or payment_intent_id"),
        ({"charge_id": "ch_small", "amount": 0}, "amount"),
        ({"charge_id": "ch_small", "amount": -5}, "amount"),
        ({"charge_id": "ch_small", "amount": 10.5}, "amount"),
        ({"charge_id": "ch_small", "amount": "100"}, "amount"),
        ({"charge_id": "ch_small", "amount": True}, "amount"),
        ({"charge_id": "ch_small", "amount": None}, "amount"),
        ({"charge_id": "ch_small", "reason": "because"}, "reason"),
        ({"charge_id": "ch_small", "refund_everything": True}, "refund_everything"),
        ({"charge_id": "re_123"}, "charge_id"),
        ({"charge_id": 123}, "charge_id"),
        ({"charge_id": "ch_small", "customer_email": "not-an-email"}, "customer_email"),
        ([{"charge_id": "ch_small"}], "JSON object"),
        ("ch_small", "JSON object"),
    ],
)
def test_invalid_body_is_refused_naming_the_field_and_nothing_happens(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, body: Any, named: str
) -> None:
    response = post(client, intake_headers, body)
    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] in {"invalid_request", "invalid_json"}
    assert named in error["message"]
    assert gateway.calls == []
    assert rows(app, refund_requests) == []


def test_body_that_is_not_json_gets_a_json_error(client: FlaskClient, intake_headers: dict[str, str]) -> None:
    response = client.post("/refund-request", data=b"{not json", headers=intake_headers,
                           content_type="application/json")
    assert response.status_code == 400
    # Not "must be a JSON object" any more: a syntax error says what and where (issue 7).
    assert response.get_json() == {"error": "invalid_json", "message": "The request body is not valid JSON: "
                                   "Expecting property name enclosed in double quotes at line 1 column 2."}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-wrong-token", "Basic abc", "Bearer "])
def test_missing_or_wrong_intake_token_is_refused_before_anything_happens(
    app: Flask, client: FlaskClient, gateway: FakeGateway, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = post(client, headers, {"charge_id": "ch_small", "amount": 100})
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert gateway.calls == []
    assert rows(app, refund_requests) == []


@pytest.mark.parametrize(
    ("setup", "body", "status", "code"),
    [
        (None, {"charge_id": "ch_nope", "amount": 100}, 404, "charge_not_found"),
        ("refunded", {"charge_id": "ch_small"}, 409, "charge_already_refunded"),
        (None, {"charge_id": "ch_small", "amount": 3001}, 409, "amount_exceeds_refundable"),
        ("disputed", {"charge_id": "ch_small", "amount": 100}, 409, "charge_disputed"),
    ],
)
def test_what_stripe_would_refuse_is_refused_before_calling_it(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway,
    setup: str | None, body: dict[str, Any], status: int, code: str,
) -> None:
    if setup == "refunded":
        gateway.charges["ch_small"].amount_refunded = 3000
    if setup == "disputed":
        gateway.charges["ch_small"].disputed = True
    response = post(client, intake_headers, body)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert gateway.calls == []
    [request_row] = rows(app, refund_requests)  # kept, with the reason, for the audit trail
    assert (request_row.status, request_row.error_code) == ("failed", code)
    assert rows(app, pending_refunds) == []


def test_stripe_down_while_reading_the_charge_answers_processing_and_nothing_is_lost(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier,
    clock: FakeClock,
) -> None:
    gateway.fail_lookups.append(StripeUnavailable("Stripe could not be reached or is busy; try again shortly."))
    response = post(client, intake_headers, {"charge_id": "ch_small", "amount": 100})
    assert response.status_code == 202
    assert response.get_json() == {"status": "processing", "request_id": 1}
    assert rows(app, refund_requests)[0].status == "received"
    assert gateway.calls == []

    clock.advance(app.extensions["refund_service"].execution_lease)
    run_worker(app)
    assert len(gateway.refunds) == 1
    assert rows(app, refund_requests)[0].status == "succeeded"
    assert notifier.kinds() == ["auto_approved"]


def test_stripe_refusing_the_refund_marks_the_request_failed_and_tells_slack(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier
) -> None:
    gateway.fail_next.append(StripeRefused("Charge ch_small has been charged back.", code="charge_disputed"))
    response = post(client, intake_headers, {"charge_id": "ch_small", "amount": 100})
    assert response.status_code == 409
    assert response.get_json()["error"] == "charge_disputed"
    [request_row] = rows(app, refund_requests)
    assert (request_row.status, request_row.error_code) == ("failed", "charge_disputed")
    assert len(gateway.calls) == 1
    run_worker(app)
    assert notifier.kinds() == ["failed"]


def test_stripe_down_while_refunding_answers_processing_and_the_worker_finishes_with_the_same_key(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier,
    clock: FakeClock,
) -> None:
    gateway.fail_next.append(StripeUnavailable("Stripe could not be reached or is busy; try again shortly."))
    response = post(client, intake_headers, {"charge_id": "ch_small", "amount": 100})
    assert response.status_code == 202
    assert response.get_json()["status"] == "processing"

    clock.advance(app.extensions["refund_service"].execution_lease)
    run_worker(app)

    assert len(gateway.refunds) == 1
    assert len({call.idempotency_key for call in gateway.calls}) == 1
    assert rows(app, refund_requests)[0].status == "succeeded"
    assert notifier.kinds() == ["auto_approved"]


def test_same_idempotency_key_returns_the_first_answer_and_refunds_once(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    body = {"charge_id": "ch_small", "amount": 700}
    first = post(client, intake_headers, body, **{"Idempotency-Key": "ticket-42"})
    second = post(client, intake_headers, body, **{"Idempotency-Key": "ticket-42"})
    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()
    assert len(gateway.refunds) == 1
    assert len(rows(app, refund_requests)) == 1


def test_same_idempotency_key_with_another_body_is_refused(
    client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    post(client, intake_headers, {"charge_id": "ch_small", "amount": 700}, **{"Idempotency-Key": "k1"})
    response = post(client, intake_headers, {"charge_id": "ch_small", "amount": 800}, **{"Idempotency-Key": "k1"})
    assert response.status_code == 422
    assert response.get_json()["error"] == "idempotency_mismatch"
    assert len(gateway.refunds) == 1


def test_stripe_idempotency_key_is_derived_from_the_request_not_random(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    response = post(client, intake_headers, {"charge_id": "ch_small", "amount": 100})
    request_id = response.get_json()["request_id"]
    [stored] = rows(app, refund_requests)
    assert stored.stripe_idempotency_key.startswith(f"refund-request-{request_id}-")
    assert gateway.calls[0].idempotency_key == stored.stripe_idempotency_key


def test_every_outbox_message_commits_with_its_state_change(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    post(client, intake_headers, {"charge_id": "ch_big", "amount": 15000})
    post(client, intake_headers, {"charge_id": "ch_small", "amount": 100})
    assert [m.kind for m in rows(app, outbox)] == ["needs_approval", "auto_approved"]
