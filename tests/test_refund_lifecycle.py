"""What happens to a refund at Stripe after we made it: webhooks (deduplicated, in any order) and polling."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds.lifecycle import moves_forward
from refunds.tables import charge_ledger, refund_log, refund_requests
from tests.conftest import WEBHOOK_SECRET, run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier
from tests.stripe_events import refund_event, signed
from tests.test_refund_request import rows


def deliver(client: FlaskClient, event: dict[str, Any], secret: str = WEBHOOK_SECRET, **kwargs: Any) -> Any:
    payload, headers = signed(event, secret, **kwargs)
    return client.post("/stripe/webhook", data=payload, headers=headers)


def refund_request(client: FlaskClient, headers: dict[str, str], charge_id: str, amount: int) -> str:
    response = client.post("/refund-request", json={"charge_id": charge_id, "amount": amount}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["refund_id"])


def as_stripe(refund_id: str, charge_id: str, amount: int, status: str, failure_reason: str | None = None,
              **extra: Any) -> dict[str, Any]:
    return {"id": refund_id, "charge": charge_id, "amount": amount, "currency": "usd", "status": status,
            "failure_reason": failure_reason, "metadata": {}, **extra}


def test_events_delivered_three_times_in_any_order_end_in_stripes_final_states(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier
) -> None:
    gateway.new_refund_status = "pending"
    gateway.add_charge("ch_a", 1000)
    gateway.add_charge("ch_b", 1000)
    ok = refund_request(client, intake_headers, "ch_a", 400)
    bad = refund_request(client, intake_headers, "ch_b", 500)
    timeline = [
        refund_event(as_stripe(ok, "ch_a", 400, "pending"), "refund.created", created=100),
        refund_event(as_stripe(ok, "ch_a", 400, "succeeded"), "refund.updated", created=200),
        refund_event(as_stripe(bad, "ch_b", 500, "pending"), "refund.created", created=100),
        refund_event(as_stripe(bad, "ch_b", 500, "requires_action"), "refund.updated", created=150),
        refund_event(as_stripe(bad, "ch_b", 500, "failed", "expired_or_canceled_card"), "refund.failed", created=300),
        refund_event(as_stripe(bad, "ch_b", 500, "failed", "expired_or_canceled_card"),
                     "charge.refund.updated", created=300),
    ]
    deliveries = timeline * 3
    random.Random(7).shuffle(deliveries)
    results = [deliver(client, event) for event in deliveries]

    assert all(r.status_code == 200 for r in results)
    assert sum(r.get_json()["result"] == "duplicate" for r in results) == 2 * len(timeline)
    log = {row.refund_id: row for row in rows(app, refund_log)}
    assert (log[ok].status, log[bad].status, log[bad].failure_reason) == (
        "succeeded", "failed", "expired_or_canceled_card")
    failed_request = next(r for r in rows(app, refund_requests) if r.stripe_refund_id == bad)
    assert (failed_request.status, failed_request.error_code) == ("failed", "refund_failed")
    ledger = {row.charge_id: row for row in rows(app, charge_ledger)}
    assert (ledger["ch_a"].refunded, ledger["ch_b"].refunded) == (400, 0)  # the failed money is refundable again
    run_worker(app)
    failures = [facts for kind, facts in notifier.sent if kind == "failed"]
    assert len(failures) == 1
    assert failures[0]["error_code"] == "expired_or_canceled_card"


def test_a_final_state_never_moves_back() -> None:
    t = __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC)
    assert moves_forward("pending", "succeeded", t, t)
    assert moves_forward("succeeded", "failed", t, t)
    assert not moves_forward("succeeded", "pending", t, t + timedelta(days=1))
    assert not moves_forward("failed", "succeeded", t, t + timedelta(days=1))
    assert not moves_forward("canceled", "pending", t, t)
    assert moves_forward("pending", "requires_action", t, t + timedelta(seconds=1))
    assert not moves_forward("requires_action", "pending", t, t - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("header", "secret"),
    [("wrong", WEBHOOK_SECRET), (None, "whsec_another_secret"), ("", WEBHOOK_SECRET), ("t=1,v1=abc", WEBHOOK_SECRET)],
)
def test_a_bad_signature_gets_400_and_changes_nothing(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], header: str | None, secret: str
) -> None:
    refund_id = refund_request(client, intake_headers, "ch_small", 100)
    event = refund_event(as_stripe(refund_id, "ch_small", 100, "failed", "declined"), "refund.failed")
    payload, headers = signed(event, secret)
    if header is not None:
        headers["Stripe-Signature"] = header
    response = client.post("/stripe/webhook", data=payload, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_signature"
    assert rows(app, refund_log)[0].status == "succeeded"


def test_an_old_signature_is_refused(app: Flask, client: FlaskClient, intake_headers: dict[str, str]) -> None:
    refund_id = refund_request(client, intake_headers, "ch_small", 100)
    event = refund_event(as_stripe(refund_id, "ch_small", 100, "failed", "declined"), "refund.failed")
    response = deliver(client, event, timestamp=1_000_000)
    assert response.status_code == 400
    assert rows(app, refund_log)[0].status == "succeeded"


def test_refunds_made_in_the_dashboard_are_logged_as_external(
    app: Flask, client: FlaskClient
) -> None:
    event = refund_event(as_stripe("re_dashboard_1", "ch_small", 700, "succeeded"), "refund.created")
    assert deliver(client, event).get_json()["result"] == "applied"
    [row] = rows(app, refund_log)
    assert (row.refund_id, row.decision, row.request_id, row.amount, row.status) == (
        "re_dashboard_1", "external", None, 700, "succeeded")


def test_pending_refunds_are_polled_when_no_webhook_comes(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, clock: FakeClock,
    notifier: FakeNotifier,
) -> None:
    gateway.new_refund_status = "pending"
    refund_id = refund_request(client, intake_headers, "ch_small", 100)
    run_worker(app)
    assert rows(app, refund_log)[0].status == "pending"  # not due yet
    gateway.set_status(refund_id, "failed", "insufficient_funds")
    clock.advance(timedelta(minutes=31))
    run_worker(app)
    [row] = rows(app, refund_log)
    assert (row.status, row.failure_reason) == ("failed", "insufficient_funds")
    assert notifier.kinds() == ["auto_approved", "failed"]


def test_webhooks_are_refused_when_no_secret_is_configured(database_url: str, gateway: FakeGateway) -> None:
    from refunds import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url, stripe_webhook_secret=None), gateway=gateway)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    response = app.test_client().post("/stripe/webhook", data=b"{}", headers={"Stripe-Signature": "t=1,v1=x"})
    assert response.status_code == 503
    assert response.get_json()["error"] == "webhooks_not_configured"
    app.extensions["refund_service"].db.dispose()


def test_the_same_event_delivered_concurrently_is_handled_once(
    app: Flask, intake_headers: dict[str, str], notifier: FakeNotifier
) -> None:
    import threading

    client = app.test_client()
    refund_id = refund_request(client, intake_headers, "ch_small", 100)
    event = refund_event(as_stripe(refund_id, "ch_small", 100, "failed", "declined"), "refund.failed")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        own = app.test_client()
        barrier.wait()
        response = deliver(own, event)
        results.append(response.get_json()["result"] if response.status_code == 200 else str(response.status_code))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["applied"] + ["duplicate"] * 7
    run_worker(app)
    assert notifier.kinds().count("failed") == 1


def test_a_signed_refund_event_without_the_refunds_details_is_a_400_and_changes_nothing(
    app: Flask, client: FlaskClient
) -> None:
    event = refund_event({"id": "re_incomplete"}, "refund.updated")
    response = deliver(client, event)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_event"
    assert rows(app, refund_log) == []
    again = deliver(client, refund_event(as_stripe("re_incomplete", "ch_small", 5, "succeeded"), "refund.updated"))
    assert again.get_json()["result"] == "applied"


def test_an_event_about_our_refund_before_we_recorded_it_is_refused_then_applied_when_sent_again(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, clock: FakeClock
) -> None:
    from refunds.errors import StripeUnavailable
    from refunds.stripe_gateway import RefundParams

    gateway.fail_next.append(StripeUnavailable("Stripe could not be reached."))
    assert client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100},
                       headers=intake_headers).status_code == 202
    [request_row] = rows(app, refund_requests)
    # Stripe made the refund; our executor has not heard back yet.
    made = gateway.create_refund(RefundParams(
        charge_id="ch_small", amount=100, reason="requested_by_customer",
        idempotency_key=request_row.stripe_idempotency_key,
        metadata={"refund_key": request_row.stripe_idempotency_key, "refund_request_id": str(request_row.id)}))
    event = refund_event(as_stripe(made.refund_id, "ch_small", 100, "failed", "declined",
                                   metadata={"refund_key": request_row.stripe_idempotency_key}), "refund.failed")
    early = deliver(client, event)
    assert (early.status_code, early.get_json()["error"]) == (409, "event_too_early")
    assert rows(app, refund_log) == []

    clock.advance(timedelta(minutes=5))
    run_worker(app)
    assert rows(app, refund_log)[0].status == "succeeded"
    again = deliver(client, event)  # Stripe retries the delivery
    assert again.get_json()["result"] == "applied"
    assert (rows(app, refund_log)[0].status, rows(app, refund_requests)[0].status) == ("failed", "failed")


def test_a_refund_stripe_returns_already_failed_never_counts_as_succeeded(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier
) -> None:
    gateway.new_refund_status = "failed"
    response = client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100}, headers=intake_headers)
    assert (response.status_code, response.get_json()["error"]) == (409, "refund_failed")
    assert rows(app, refund_requests)[0].status == "failed"
    assert rows(app, refund_log)[0].status == "failed"
    ledger = rows(app, charge_ledger)[0]
    assert (ledger.reserved, ledger.refunded) == (0, 0)
    run_worker(app)
    assert notifier.kinds() == ["failed"]
