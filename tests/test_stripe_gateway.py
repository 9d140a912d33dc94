"""The Stripe adapter against the in-repo Stripe stand-in, over real HTTP with stripe-python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from refunds.errors import ChargeNotFound, StripeMisconfigured, StripeRefused, StripeUnavailable
from refunds.stripe_gateway import RefundParams, StripeGateway
from standins.stripe_api import StripeStandIn

KEY = "sk_test_gateway_key"


@pytest.fixture
def stripe() -> Iterator[StripeStandIn]:
    with StripeStandIn(api_key=KEY) as stand_in:
        yield stand_in


def gateway_for(stripe: StripeStandIn, retries: int = 2, key: str = KEY) -> StripeGateway:
    return StripeGateway(key, api_base=stripe.base_url, max_network_retries=retries, timeout_seconds=5)


def test_reads_a_charge_and_what_remains_refundable(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(5000, "eur", amount_refunded=1500)
    info = gateway_for(stripe).get_charge(charge_id=charge["id"])
    assert (info.charge_id, info.amount, info.amount_refunded, info.currency, info.remaining) == (
        charge["id"], 5000, 1500, "eur", 3500)
    assert not info.disputed


def test_reads_the_latest_charge_of_a_payment_intent(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(7000, "usd", with_payment_intent=True)
    info = gateway_for(stripe).get_charge(payment_intent_id=charge["payment_intent"])
    assert info.charge_id == charge["id"]
    assert info.payment_intent_id == charge["payment_intent"]


def test_unknown_charge_is_charge_not_found(stripe: StripeStandIn) -> None:
    with pytest.raises(ChargeNotFound):
        gateway_for(stripe).get_charge(charge_id="ch_missing")


def test_refund_is_created_once_per_idempotency_key(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(5000, "usd")
    gateway = gateway_for(stripe)
    params = RefundParams(charge_id=charge["id"], amount=1000, reason="duplicate",
                          idempotency_key="refund-request-1-abc", metadata={"refund_request_id": "1"})
    first = gateway.create_refund(params)
    second = gateway.create_refund(params)
    assert first == second
    assert stripe.refund_creations() == 1
    assert stripe.idempotency_keys() == ["refund-request-1-abc", "refund-request-1-abc"]
    assert stripe.refunds[0]["reason"] == "duplicate"


def test_over_refund_is_a_final_refusal_with_stripes_code(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(500, "usd")
    with pytest.raises(StripeRefused) as caught:
        gateway_for(stripe).create_refund(RefundParams(charge_id=charge["id"], amount=600,
                                                       reason="requested_by_customer", idempotency_key="k"))
    assert caught.value.code == "amount_too_large"


def test_server_errors_are_retried_with_the_same_key_until_they_succeed(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(500, "usd")
    stripe.inject("error", status=500, times=1)
    stripe.inject("error", status=503, times=1)
    refund = gateway_for(stripe, retries=2).create_refund(
        RefundParams(charge_id=charge["id"], amount=100, reason="requested_by_customer", idempotency_key="k-1"))
    assert refund.amount == 100
    assert stripe.refund_creations() == 1
    assert stripe.idempotency_keys() == ["k-1", "k-1", "k-1"]


def test_exhausted_retries_are_stripe_unavailable(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(500, "usd")
    stripe.inject("error", status=500, times=5)
    with pytest.raises(StripeUnavailable):
        gateway_for(stripe, retries=1).create_refund(
            RefundParams(charge_id=charge["id"], amount=100, reason="requested_by_customer", idempotency_key="k-2"))
    assert stripe.refund_creations() == 0


def test_wrong_key_is_misconfiguration_and_the_key_is_not_in_the_message(stripe: StripeStandIn) -> None:
    with pytest.raises(StripeMisconfigured) as caught:
        gateway_for(stripe, key="sk_test_wrong_secret_value").get_charge(charge_id="ch_x")
    assert "sk_test_wrong_secret_value" not in str(caught.value)


def test_unreachable_stripe_is_stripe_unavailable() -> None:
    gateway = StripeGateway(KEY, api_base="http://127.0.0.1:9", max_network_retries=0, timeout_seconds=1)
    with pytest.raises(StripeUnavailable):
        gateway.get_charge(charge_id="ch_x")
