"""The Stripe stand-in's lists (GET /v1/charges, GET /v1/refunds) page and filter as Stripe's do,
driven by the real stripe-python client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from standins.stripe_api import StripeStandIn
from tests.standins.test_stripe_standin import stripe_client

T0 = 1_790_000_000


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with StripeStandIn() as stand_in:
        yield stand_in


def test_auto_paging_walks_every_charge_newest_first_within_the_created_filter(standin: StripeStandIn) -> None:
    made = [standin.add_charge(100, "usd", created=T0 + n)["id"] for n in range(250)]

    with stripe_client(standin) as client:
        listed = [c.id for c in client.v1.charges.list(params={"created": {"gte": T0 + 10, "lt": T0 + 240},
                                                               "limit": 100}).auto_paging_iter()]

    assert listed == list(reversed(made[10:240]))


def test_refunds_list_by_created_with_their_charge_expanded_and_a_page_before(standin: StripeStandIn) -> None:
    charge = standin.add_charge(1000, "eur", created=T0, fee=59)
    refunds = [standin.add_refund(charge["id"], 100, created=T0 + n)["id"] for n in range(5)]

    with stripe_client(standin) as client:
        exact = client.v1.refunds.list(params={"created": T0 + 2, "expand": ["data.charge.balance_transaction"]})
        before = client.v1.refunds.list(params={"ending_before": refunds[1], "limit": 2})

    assert [r.id for r in exact.data] == [refunds[2]]
    assert exact.data[0].charge.balance_transaction.fee == 59
    assert ([r.id for r in before.data], before.has_more) == ([refunds[3], refunds[2]], True)


@pytest.mark.parametrize(("params", "param", "message"), [
    ({"created": {"gte": "soon"}}, "created[gte]", "Invalid integer: soon"),
    ({"created": {"after": 1}}, "created[after]", "Received unknown parameter: created[after]"),
    ({"limit": 0}, "limit", "This value must be greater than or equal to 1."),
    ({"limit": 101}, "limit", "This value must be less than or equal to 100."),
    ({"starting_after": "ch_missing"}, "starting_after", "No such charge: 'ch_missing'"),
    ({"amount": 5}, "amount", "Received unknown parameter: amount"),
])
def test_a_malformed_list_is_refused_naming_the_parameter(standin: StripeStandIn, params: dict[str, object],
                                                          param: str, message: str) -> None:
    with stripe_client(standin) as client, pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.charges.list(params=params)  # type: ignore[arg-type]

    assert (refused.value.http_status, refused.value.param, refused.value.user_message) == (400, param, message)
