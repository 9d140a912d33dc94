"""The service against Stripe's idempotency answers, through stripe-python and the Stripe stand-in:
a key still in use is waited out (one refund, later), a key reused with other parameters is final."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import stripe as stripe_sdk
from flask import Flask

from refunds import create_app
from refunds.tables import refund_requests
from standins.stripe_api import StripeStandIn
from tests.conftest import STRIPE_KEY, make_settings, run_worker
from tests.fakes import FakeClock, FakeNotifier
from tests.test_refund_request import rows


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def stripe() -> Iterator[StripeStandIn]:
    with StripeStandIn(api_key=STRIPE_KEY) as stand_in:
        yield stand_in


@pytest.fixture
def app(database_url: str, stripe: StripeStandIn, clock: FakeClock) -> Iterator[Flask]:
    settings = make_settings(database_url, stripe_api_base=stripe.base_url, stripe_max_network_retries=1,
                             stripe_timeout_seconds=0.5)
    app = create_app(settings, notifier=FakeNotifier(), clock=clock)
    app.config["TESTING"] = True
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


def test_a_refund_whose_key_is_still_in_use_at_stripe_ends_with_exactly_one_refund_later(
    app: Flask, stripe: StripeStandIn, intake_headers: dict[str, str], clock: FakeClock
) -> None:
    charge = stripe.add_charge(3000, "usd")
    # Stripe takes 2 s: our call times out at 0.5 s, stripe-python's retry finds the key in use (409).
    stripe.inject("slow", delay=2.0)

    answer = app.test_client().post("/refund-request", json={"charge_id": charge["id"], "amount": 100},
                                    headers=intake_headers)

    assert answer.status_code == 202
    assert 409 in [r["status"] for r in stripe.requests]
    wait_until(lambda: stripe.refund_creations() == 1)  # the first call finishes at Stripe meanwhile
    clock.advance(timedelta(hours=1))
    run_worker(app)

    [request] = rows(app, refund_requests)
    assert request.status == "succeeded"
    assert stripe.refund_creations() == 1 and len(stripe.refunds) == 1
    assert request.stripe_refund_id == stripe.refunds[0]["id"]
    assert set(stripe.idempotency_keys()) == {request.stripe_idempotency_key}


def test_a_refund_whose_key_stripe_saw_with_other_parameters_fails_once_and_refunds_nothing_more(
    app: Flask, stripe: StripeStandIn, intake_headers: dict[str, str], clock: FakeClock
) -> None:
    charge = stripe.add_charge(3000, "usd")
    stripe.inject("error", status=500, times=2)  # the first attempt (and stripe-python's retry) fail
    answer = app.test_client().post("/refund-request", json={"charge_id": charge["id"], "amount": 100},
                                    headers=intake_headers)
    assert answer.status_code == 202
    [request] = rows(app, refund_requests)
    # Meanwhile someone uses the request's Stripe key for another refund (another amount).
    other = stripe_sdk.StripeClient(STRIPE_KEY, base_addresses={"api": stripe.base_url}, max_network_retries=0)
    other.v1.refunds.create(params={"charge": charge["id"], "amount": 200},
                            options={"idempotency_key": request.stripe_idempotency_key})

    for _ in range(3):
        clock.advance(timedelta(hours=1))
        run_worker(app)

    [request] = rows(app, refund_requests)
    assert (request.status, request.error_code) == ("failed", "idempotency_error")
    assert stripe.refund_creations() == 1 and [r["amount"] for r in stripe.refunds] == [200]
    answers = [r["status"] for r in stripe.requests if r["method"] == "POST"]
    assert answers == [500, 500, 200, 400]  # tried once more, refused as final, never again
