"""The service against Stripe's idempotency answers, through stripe-python and the Stripe stand-in:
a key still in use is waited out (one refund, later); a key Stripe saw before with other parameters
is looked up among the charge's refunds, so a refund made under it is recorded, never forgotten."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import stripe as stripe_sdk
from flask import Flask

from refunds import create_app
from refunds.tables import charge_ledger, outbox, refund_log, refund_requests
from standins.stripe_api import StripeStandIn
from tests.conftest import STRIPE_KEY, make_settings, run_worker
from tests.fakes import FakeClock, FakeNotifier
from tests.polling import wait_until
from tests.test_refund_request import rows


@pytest.fixture
def stripe() -> Iterator[StripeStandIn]:
    with StripeStandIn(api_key=STRIPE_KEY) as stand_in:
        yield stand_in


@pytest.fixture
def app(database_url: str, stripe: StripeStandIn, notifier: FakeNotifier, clock: FakeClock) -> Iterator[Flask]:
    settings = make_settings(database_url, stripe_api_base=stripe.base_url, stripe_max_network_retries=1,
                             stripe_timeout_seconds=0.5)
    app = create_app(settings, notifier=notifier, clock=clock)
    app.config["TESTING"] = True
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


def refund_posts(stripe: StripeStandIn) -> list[int]:
    """The status Stripe answered to each refund creation it received, in order."""
    return [r["status"] for r in stripe.requests if r["method"] == "POST" and r["path"] == "/v1/refunds"]


def request_left_processing(app: Flask, stripe: StripeStandIn, intake_headers: dict[str, str]) -> Any:
    """A 1.00 USD refund request whose first execution met only Stripe 500s: `executing`, nothing refunded."""
    charge = stripe.add_charge(3000, "usd")
    stripe.inject("error", status=500, times=2)  # the first attempt and stripe-python's retry
    answer = app.test_client().post("/refund-request", json={"charge_id": charge["id"], "amount": 100},
                                    headers=intake_headers)
    assert answer.status_code == 202 and answer.get_json()["status"] == "processing"
    [request] = rows(app, refund_requests)
    assert request.status == "executing" and stripe.refunds == []
    return request


def use_key_elsewhere(stripe: StripeStandIn, key: str, params: dict[str, Any]) -> None:
    """One call to Stripe with `key` and other parameters than the service now sends; its answer is ignored."""
    client = stripe_sdk.StripeClient(STRIPE_KEY, base_addresses={"api": stripe.base_url}, max_network_retries=0)
    try:
        client.v1.refunds.create(params=params, options={"idempotency_key": key})
    except stripe_sdk.InvalidRequestError:
        pass  # a refusal Stripe saves under the key, as it saves a success


def test_a_refund_whose_key_is_still_in_use_at_stripe_ends_with_exactly_one_refund_later(
    app: Flask, stripe: StripeStandIn, intake_headers: dict[str, str], clock: FakeClock
) -> None:
    charge = stripe.add_charge(3000, "usd")
    # Stripe executes the first call until the test releases it: our call times out at 0.5 s, and
    # stripe-python's retry finds the key in use (409) however slow this machine is.
    stripe.inject("slow", delay=60.0)

    answer = app.test_client().post("/refund-request", json={"charge_id": charge["id"], "amount": 100},
                                    headers=intake_headers)

    assert answer.status_code == 202
    assert 409 in refund_posts(stripe)
    assert stripe.refund_creations() == 0
    stripe.release_slow()  # the first call finishes at Stripe meanwhile
    wait_until(lambda: stripe.refund_creations() == 1, what="Stripe to finish the first call")
    clock.advance(timedelta(hours=1))
    run_worker(app)

    [request] = rows(app, refund_requests)
    assert request.status == "succeeded"
    assert stripe.refund_creations() == 1 and len(stripe.refunds) == 1
    assert request.stripe_refund_id == stripe.refunds[0]["id"]
    assert set(stripe.idempotency_keys()) == {request.stripe_idempotency_key}


def test_a_refund_stripe_made_under_the_key_with_other_parameters_is_recorded_once_and_the_request_succeeds(
    app: Flask, stripe: StripeStandIn, intake_headers: dict[str, str], clock: FakeClock, notifier: FakeNotifier
) -> None:
    request = request_left_processing(app, stripe, intake_headers)
    # The previous release's attempt, whose answer was lost: Stripe refunded under the request's key,
    # with the metadata that release sent (no "source"). Our retry now sends other parameters.
    use_key_elsewhere(stripe, request.stripe_idempotency_key, {
        "charge": request.charge_id, "amount": 100, "reason": "requested_by_customer",
        "metadata": {"refund_request_id": str(request.id), "refund_key": request.stripe_idempotency_key}})

    for _ in range(3):
        clock.advance(timedelta(hours=1))
        run_worker(app)

    [made] = stripe.refunds
    assert stripe.refund_creations() == 1
    assert refund_posts(stripe) == [500, 500, 200, 400]  # our retry: idempotency_error, never sent again
    [request] = rows(app, refund_requests)
    assert (request.status, request.error_code, request.stripe_refund_id) == ("succeeded", None, made["id"])
    [logged] = rows(app, refund_log)
    assert (logged.refund_id, logged.request_id, logged.amount, logged.currency) == (made["id"], request.id, 100, "usd")
    [ledger] = rows(app, charge_ledger)
    assert (ledger.reserved, ledger.refunded) == (0, 100)  # the reserved money counted as refunded, not freed
    assert notifier.kinds() == ["auto_approved"]  # Slack never hears "failed, nothing refunded"
    assert [message.kind for message in rows(app, outbox)] == ["auto_approved"]


def test_a_key_whose_first_use_refunded_nothing_fails_the_request_with_idempotency_error_and_frees_the_money(
    app: Flask, stripe: StripeStandIn, intake_headers: dict[str, str], clock: FakeClock, notifier: FakeNotifier
) -> None:
    request = request_left_processing(app, stripe, intake_headers)
    # The key's first use asked for more than the charge holds: Stripe refused it and saved that answer.
    use_key_elsewhere(stripe, request.stripe_idempotency_key, {
        "charge": request.charge_id, "amount": 5000, "reason": "requested_by_customer",
        "metadata": {"refund_request_id": str(request.id), "refund_key": request.stripe_idempotency_key}})

    for _ in range(3):
        clock.advance(timedelta(hours=1))
        run_worker(app)

    assert stripe.refunds == [] and stripe.refund_creations() == 0
    assert refund_posts(stripe) == [500, 500, 400, 400]  # tried once more, refused as final, never again
    # The failure was decided only after looking for a refund under the key among the charge's refunds.
    assert any(r["method"] == "GET" and r["path"] == "/v1/refunds" and r["params"].get("charge") == request.charge_id
               for r in stripe.requests)
    [request] = rows(app, refund_requests)
    assert (request.status, request.error_code, request.stripe_refund_id) == ("failed", "idempotency_error", None)
    assert rows(app, refund_log) == []
    [ledger] = rows(app, charge_ledger)
    assert (ledger.reserved, ledger.refunded) == (0, 0)  # the reservation is released
    [(kind, facts)] = notifier.sent
    assert kind == "failed" and facts["error_code"] == "idempotency_error"
    assert "nothing was refunded" in facts["error_message"]
