"""The Stripe stand-in behaves like Stripe for the real stripe-python client."""

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import stripe
from stripe.params import RefundCreateParams

from standins.stripe_api import StripeStandIn, mask_api_key, parse_form
from tests.polling import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def stripe_client(
    standin: StripeStandIn, *, retries: int = 0, api_key: str | None = None
) -> Iterator[stripe.StripeClient]:
    """A real StripeClient aimed at the stand-in; its HTTP session is closed afterwards.

    The session belongs to the thread that uses the client, so use the client in
    the thread that created it.
    """
    http_client = stripe.RequestsClient()
    client = stripe.StripeClient(
        api_key or standin.api_key,
        base_addresses={"api": standin.base_url},
        max_network_retries=retries,
        http_client=http_client,
    )
    try:
        yield client
    finally:
        http_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with StripeStandIn() as server:
        yield server


@pytest.fixture
def client(standin: StripeStandIn) -> Iterator[stripe.StripeClient]:
    with stripe_client(standin) as c:
        yield c


@contextmanager
def raw_connection(standin: StripeStandIn) -> Iterator[http.client.HTTPConnection]:
    connection = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
    try:
        yield connection
    finally:
        connection.close()


def json_error(error: stripe.StripeError) -> dict[str, Any]:
    """The ``error`` object of a Stripe error's JSON body."""
    assert isinstance(error.json_body, dict)
    body: dict[str, Any] = error.json_body["error"]
    return body


def raw_request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: dict[str, str],
    body: str | None = None,
) -> tuple[http.client.HTTPResponse, dict[str, Any]]:
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response, json.loads(response.read())


# -- reading ---------------------------------------------------------------------


def test_charge_is_retrieved_with_stripes_fields(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(2500, "usd", charge_id="ch_read", amount_refunded=500)

    charge = client.v1.charges.retrieve("ch_read")

    assert isinstance(charge, stripe.Charge)
    assert charge.id == "ch_read"
    assert charge.object == "charge"
    assert (charge.amount, charge.amount_refunded, charge.currency) == (2500, 500, "usd")
    assert (charge.disputed, charge.refunded, charge.paid) == (False, False, True)
    assert charge.status == "succeeded"
    assert charge.payment_intent is None
    assert charge.livemode is False
    assert isinstance(charge.created, int)


def test_payment_intent_points_at_its_latest_charge(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    charge = standin.add_charge(12000, "eur", with_payment_intent=True)

    payment_intent = client.v1.payment_intents.retrieve(charge["payment_intent"])

    assert payment_intent.id.startswith("pi_")
    assert payment_intent.object == "payment_intent"
    assert payment_intent.latest_charge == charge["id"]
    assert (payment_intent.amount, payment_intent.currency) == (12000, "eur")
    assert payment_intent.status == "succeeded"


def test_expand_replaces_ids_with_objects(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    charge = standin.add_charge(1000, with_payment_intent=True)

    payment_intent = client.v1.payment_intents.retrieve(charge["payment_intent"], params={"expand": ["latest_charge"]})
    refund = client.v1.refunds.create(params={"charge": charge["id"], "amount": 100, "expand": ["charge"]})

    assert isinstance(payment_intent.latest_charge, stripe.Charge)
    assert payment_intent.latest_charge.id == charge["id"]
    assert isinstance(refund.charge, stripe.Charge)
    assert refund.charge.id == charge["id"]
    assert refund.charge.amount_refunded == 100


def test_unknown_charge_and_payment_intent_are_404_resource_missing(
    client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as charge_error:
        client.v1.charges.retrieve("ch_nope")
    with pytest.raises(stripe.InvalidRequestError) as pi_error:
        client.v1.payment_intents.retrieve("pi_nope")

    assert charge_error.value.http_status == 404
    assert charge_error.value.code == "resource_missing"
    assert charge_error.value.param == "id"
    assert charge_error.value.user_message == "No such charge: 'ch_nope'"
    assert pi_error.value.code == "resource_missing"
    assert pi_error.value.user_message == "No such payment_intent: 'pi_nope'"


# -- refunding ---------------------------------------------------------------------


def test_partial_refund_reduces_what_remains_refundable(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(5000, charge_id="ch_partial")

    refund = client.v1.refunds.create(
        params={"charge": "ch_partial", "amount": 1500, "reason": "requested_by_customer"}
    )

    assert refund.id.startswith("re_")
    assert refund.object == "refund"
    assert (refund.amount, refund.currency, refund.charge) == (1500, "usd", "ch_partial")
    assert refund.status == "succeeded"
    assert refund.reason == "requested_by_customer"
    assert refund.failure_reason is None
    charge = client.v1.charges.retrieve("ch_partial")
    assert (charge.amount_refunded, charge.refunded) == (1500, False)
    assert standin.refund_creations() == 1


def test_refund_without_amount_refunds_everything_that_remains(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(5000, charge_id="ch_rest", amount_refunded=1000)

    refund = client.v1.refunds.create(params={"charge": "ch_rest"})

    assert refund.amount == 4000
    assert standin.charge("ch_rest")["amount_refunded"] == 5000
    assert standin.charge("ch_rest")["refunded"] is True


def test_refund_by_payment_intent_refunds_its_latest_charge(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    charge = standin.add_charge(12000, "eur", with_payment_intent=True)

    refund = client.v1.refunds.create(params={"payment_intent": charge["payment_intent"], "amount": 2000})

    assert refund.charge == charge["id"]
    assert refund.payment_intent == charge["payment_intent"]
    assert refund.currency == "eur"
    assert standin.charge(charge["id"])["amount_refunded"] == 2000


def test_refund_above_the_remaining_amount_is_refused_as_amount_too_large(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(2000, charge_id="ch_small", amount_refunded=500)

    with pytest.raises(stripe.InvalidRequestError) as error:
        client.v1.refunds.create(params={"charge": "ch_small", "amount": 1501})

    assert error.value.http_status == 400
    assert error.value.code == "amount_too_large"
    assert error.value.param == "amount"
    assert "$15.00" in error.value.user_message
    assert standin.refunds == []
    assert standin.charge("ch_small")["amount_refunded"] == 500


def test_fully_refunded_charge_is_refused_as_charge_already_refunded(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(5000, charge_id="ch_done", amount_refunded=5000)

    with pytest.raises(stripe.InvalidRequestError) as error:
        client.v1.refunds.create(params={"charge": "ch_done"})

    assert error.value.code == "charge_already_refunded"
    assert error.value.http_status == 400


def test_disputed_charge_is_refused_as_charge_disputed(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(3000, charge_id="ch_disputed", disputed=True)

    with pytest.raises(stripe.InvalidRequestError) as error:
        client.v1.refunds.create(params={"charge": "ch_disputed", "amount": 100})

    assert error.value.code == "charge_disputed"
    assert standin.refunds == []


def test_refund_of_an_unknown_charge_is_refused_as_resource_missing(
    client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as charge_error:
        client.v1.refunds.create(params={"charge": "ch_unknown"})
    with pytest.raises(stripe.InvalidRequestError) as pi_error:
        client.v1.refunds.create(params={"payment_intent": "pi_unknown"})

    assert (charge_error.value.http_status, charge_error.value.code) == (400, "resource_missing")
    assert charge_error.value.param == "charge"
    assert pi_error.value.code == "resource_missing"
    assert pi_error.value.param == "payment_intent"


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({"amount": 100}, "parameter_missing", "charge"),
        ({"charge": "ch_v", "payment_intent": "pi_v"}, "parameters_exclusive", "payment_intent"),
        ({"charge": "ch_v", "amount": "ten"}, "parameter_invalid_integer", "amount"),
        ({"charge": "ch_v", "amount": 0}, "parameter_invalid_integer", "amount"),
        ({"charge": "ch_v", "amount": -5}, "parameter_invalid_integer", "amount"),
        ({"charge": "ch_v", "reason": "changed_my_mind"}, None, "reason"),
        ({"charge": "ch_v", "surprise": "x"}, "parameter_unknown", "surprise"),
        ({"charge": "ch_v", "metadata": {"k": "v" * 501}}, None, "metadata[k]"),
    ],
)
def test_invalid_refund_parameters_are_refused_before_anything_happens(
    standin: StripeStandIn,
    client: stripe.StripeClient,
    params: RefundCreateParams,
    code: str | None,
    param: str,
) -> None:
    standin.add_charge(1000, charge_id="ch_v")

    with pytest.raises(stripe.InvalidRequestError) as error:
        client.v1.refunds.create(params=params)

    assert error.value.http_status == 400
    assert error.value.code == code
    assert error.value.param == param
    assert standin.refunds == []


def test_metadata_round_trips_as_strings(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(1000, charge_id="ch_meta")

    params: dict[str, Any] = {
        "charge": "ch_meta",
        "metadata": {"request_id": 42, "operator": "ana"},
    }
    refund = client.v1.refunds.create(params=params)  # type: ignore[arg-type]
    fetched = client.v1.refunds.retrieve(refund.id)

    assert refund.metadata is not None and fetched.metadata is not None
    assert refund.metadata.to_dict() == {"request_id": "42", "operator": "ana"}
    assert fetched.metadata.to_dict() == {"request_id": "42", "operator": "ana"}
    assert standin.requests[-2]["params"]["metadata"] == {"request_id": "42", "operator": "ana"}


def test_refunds_are_listed_newest_first_per_charge_and_payment_intent(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(1000, charge_id="ch_list")
    other = standin.add_charge(1000, with_payment_intent=True)
    first = client.v1.refunds.create(params={"charge": "ch_list", "amount": 100})
    second = client.v1.refunds.create(params={"charge": "ch_list", "amount": 200})
    third = client.v1.refunds.create(params={"charge": "ch_list", "amount": 300})
    by_pi = client.v1.refunds.create(params={"charge": other["id"], "amount": 50})

    everything = client.v1.refunds.list(params={"charge": "ch_list"})
    page = client.v1.refunds.list(params={"charge": "ch_list", "limit": 2})
    next_page = client.v1.refunds.list(params={"charge": "ch_list", "limit": 2, "starting_after": page.data[-1].id})
    for_pi = client.v1.refunds.list(params={"payment_intent": other["payment_intent"]})

    assert [r.id for r in everything.data] == [third.id, second.id, first.id]
    assert everything.has_more is False
    assert everything.url == "/v1/refunds"
    assert ([r.id for r in page.data], page.has_more) == ([third.id, second.id], True)
    assert ([r.id for r in next_page.data], next_page.has_more) == ([first.id], False)
    assert [r.id for r in for_pi.data] == [by_pi.id]
    assert [r.id for r in page.auto_paging_iter()] == [third.id, second.id, first.id]


# -- authentication ----------------------------------------------------------------


def test_wrong_api_key_is_refused_without_echoing_the_key(standin: StripeStandIn) -> None:
    standin.add_charge(1000, charge_id="ch_auth")
    wrong_key = "sk_test_this_is_not_the_right_key_0042"

    with stripe_client(standin, api_key=wrong_key) as client:
        with pytest.raises(stripe.AuthenticationError) as error:
            client.v1.charges.retrieve("ch_auth")
        with pytest.raises(stripe.AuthenticationError):
            client.v1.refunds.create(params={"charge": "ch_auth"})

    assert error.value.http_status == 401
    assert error.value.user_message.startswith("Invalid API Key provided: sk_test_")
    assert wrong_key not in (error.value.http_body or "")
    assert error.value.user_message.endswith("0042")
    assert standin.refunds == []
    assert [r["authorized"] for r in standin.requests] == [False, False]


def test_missing_authorization_is_401_and_basic_auth_is_accepted(
    standin: StripeStandIn,
) -> None:
    standin.add_charge(1000, charge_id="ch_basic")
    basic = base64.b64encode(f"{standin.api_key}:".encode()).decode()

    with raw_connection(standin) as connection:
        missing, missing_body = raw_request(connection, "GET", "/v1/charges/ch_basic", {})
        ok, ok_body = raw_request(connection, "GET", "/v1/charges/ch_basic", {"Authorization": f"Basic {basic}"})

    assert missing.status == 401
    assert missing_body["error"]["type"] == "invalid_request_error"
    assert "did not provide an API key" in missing_body["error"]["message"]
    assert ok.status == 200
    assert ok_body["id"] == "ch_basic"


def test_masked_keys_never_contain_the_whole_key() -> None:
    assert mask_api_key("sk_test_wrong") == "sk_test_****"
    assert mask_api_key("sk_live_0123456789abcdef") == "sk_live_************cdef"
    assert mask_api_key("nonsense") == "****"


# -- HTTP details ---------------------------------------------------------------------


def test_keep_alive_connection_serves_several_requests_with_content_length(
    standin: StripeStandIn,
) -> None:
    standin.add_charge(1000, charge_id="ch_keepalive")
    auth = {"Authorization": f"Bearer {standin.api_key}"}

    with raw_connection(standin) as connection:
        first, _ = raw_request(connection, "GET", "/v1/charges/ch_keepalive", auth)
        socket_after_first = connection.sock
        second, _ = raw_request(connection, "GET", "/v1/nowhere", auth)
        third, body = raw_request(
            connection,
            "POST",
            "/v1/refunds",
            {**auth, "Content-Type": "application/x-www-form-urlencoded"},
            "charge=ch_keepalive&amount=10",
        )

    assert connection.sock is None  # closed by us, not by the server
    assert socket_after_first is not None
    assert [r.status for r in (first, second, third)] == [200, 404, 200]
    assert all(r.getheader("Content-Length") for r in (first, second, third))
    assert all(r.getheader("Request-Id", "").startswith("req_") for r in (first, second))
    assert body["amount"] == 10


def test_unknown_route_gets_a_stripe_shaped_404(standin: StripeStandIn) -> None:
    with raw_connection(standin) as connection:
        response, body = raw_request(connection, "GET", "/v1/customers", {"Authorization": f"Bearer {standin.api_key}"})

    assert response.status == 404
    assert body["error"]["type"] == "invalid_request_error"
    assert "Unrecognized request URL (GET: /v1/customers)" in body["error"]["message"]
    assert standin.requests[0]["path"] == "/v1/customers"


def test_form_bodies_are_decoded_into_nested_params() -> None:
    pairs = [
        ("charge", "ch_1"),
        ("metadata[request_id]", "42"),
        ("metadata[0]", "zero"),
        ("expand[]", "charge"),
        ("expand[]", "payment_intent"),
        ("items[0][id]", "a"),
        ("items[1][id]", "b"),
    ]

    assert parse_form(pairs) == {
        "charge": "ch_1",
        "metadata": {"request_id": "42", "0": "zero"},
        "expand": ["charge", "payment_intent"],
        "items": [{"id": "a"}, {"id": "b"}],
    }


# -- idempotency ----------------------------------------------------------------------


def test_same_idempotency_key_replays_the_first_refund(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(5000, charge_id="ch_idem")
    params: RefundCreateParams = {"charge": "ch_idem", "amount": 1000}

    first = client.v1.refunds.create(params=params, options={"idempotency_key": "refund-1"})
    second = client.v1.refunds.create(params=params, options={"idempotency_key": "refund-1"})

    assert second.id == first.id
    assert second.last_response is not None
    assert second.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(standin.refunds) == 1
    assert standin.refund_creations() == 1
    assert standin.charge("ch_idem")["amount_refunded"] == 1000
    assert [r["replayed"] for r in standin.requests] == [False, True]
    assert standin.idempotency_keys() == ["refund-1", "refund-1"]


def test_same_idempotency_key_replays_a_refusal_too(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(1000, charge_id="ch_refusal")
    params: RefundCreateParams = {"charge": "ch_refusal", "amount": 5000}

    with pytest.raises(stripe.InvalidRequestError) as first:
        client.v1.refunds.create(params=params, options={"idempotency_key": "too-much"})
    standin.add_charge(9000, charge_id="ch_unrelated")  # state changes do not matter
    with pytest.raises(stripe.InvalidRequestError) as second:
        client.v1.refunds.create(params=params, options={"idempotency_key": "too-much"})

    assert first.value.code == second.value.code == "amount_too_large"
    assert first.value.http_body == second.value.http_body
    assert (second.value.headers or {}).get("Idempotent-Replayed") == "true"


def test_same_idempotency_key_with_different_params_is_an_idempotency_error(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(5000, charge_id="ch_mismatch")
    client.v1.refunds.create(params={"charge": "ch_mismatch", "amount": 1000}, options={"idempotency_key": "k"})

    with pytest.raises(stripe.IdempotencyError) as error:
        client.v1.refunds.create(params={"charge": "ch_mismatch", "amount": 2000}, options={"idempotency_key": "k"})

    assert error.value.http_status == 400
    assert json_error(error.value)["type"] == "idempotency_error"
    assert "same parameters" in error.value.user_message
    assert standin.refund_creations() == 1


def test_a_key_reused_while_its_first_request_executes_is_409_idempotency_key_in_use_and_changes_nothing(
    standin: StripeStandIn,
) -> None:
    standin.add_charge(5000, charge_id="ch_busy")
    standin.inject("slow", delay=1.0)  # the first request executes for a second
    headers = {"Authorization": f"Bearer {standin.api_key}", "Idempotency-Key": "busy-key",
               "Content-Type": "application/x-www-form-urlencoded"}
    body = "charge=ch_busy&amount=700"
    first: list[tuple[int, dict[str, Any]]] = []

    def post_first() -> None:
        with raw_connection(standin) as connection:
            response, answer = raw_request(connection, "POST", "/v1/refunds", headers, body)
            first.append((response.status, answer))

    thread = threading.Thread(target=post_first)
    thread.start()
    deadline = time.monotonic() + 5
    while not standin.requests:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with raw_connection(standin) as connection:
        busy, error = raw_request(connection, "POST", "/v1/refunds", headers, body)
        busy_status, busy_replayed = busy.status, busy.getheader("Idempotent-Replayed")
        during = standin.refund_creations()
    thread.join(timeout=5)
    with raw_connection(standin) as connection:
        later, replayed = raw_request(connection, "POST", "/v1/refunds", headers, body)
        later_status, later_replayed = later.status, later.getheader("Idempotent-Replayed")

    assert (busy_status, busy_replayed) == (409, None)
    assert error["error"]["type"] == "idempotency_error"
    assert error["error"]["code"] == "idempotency_key_in_use"
    assert during == 0  # the repeat did nothing; the first was still executing
    assert [status for status, _ in first] == [200]
    assert (later_status, later_replayed, replayed["id"]) == (200, "true", first[0][1]["id"])
    assert standin.refund_creations() == 1
    assert standin.charge("ch_busy")["amount_refunded"] == 700


def test_twenty_concurrent_requests_with_one_key_create_exactly_one_refund(
    standin: StripeStandIn,
) -> None:
    standin.add_charge(5000, charge_id="ch_race")
    standin.inject("delay", delay=0.05, times=20)  # widen the window for races
    barrier = threading.Barrier(20)
    refund_ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def refund_once() -> None:
        try:
            with stripe_client(standin) as client:
                barrier.wait(timeout=5)
                refund = client.v1.refunds.create(
                    params={"charge": "ch_race", "amount": 700},
                    options={"idempotency_key": "race-key"},
                )
            with lock:
                refund_ids.append(refund.id)
        except BaseException as exc:  # collected and re-raised in the test thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=refund_once) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert len(refund_ids) == 20
    assert len(set(refund_ids)) == 1
    assert standin.refund_creations() == 1
    assert standin.charge("ch_race")["amount_refunded"] == 700
    assert sum(r["replayed"] for r in standin.requests) == 19


# -- faults and retries ---------------------------------------------------------------


def test_injected_500_is_retried_with_the_same_idempotency_key_and_refunds_once(
    standin: StripeStandIn,
) -> None:
    standin.add_charge(5000, charge_id="ch_retry")
    standin.inject("error", status=500)

    with stripe_client(standin, retries=2) as client:
        refund = client.v1.refunds.create(params={"charge": "ch_retry", "amount": 1000})

    assert [r["id"] for r in standin.refunds] == [refund.id]
    keys = standin.idempotency_keys()
    assert len(keys) == 2
    assert keys[0] == keys[1]  # stripe-python's own key, reused on the retry
    assert [(r["fault"], r["status"]) for r in standin.requests] == [("error", 500), (None, 200)]


def test_injected_500_surfaces_as_api_error_without_retries(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(5000, charge_id="ch_500")
    standin.inject("error", status=500, code="api_error_demo")

    with pytest.raises(stripe.APIError) as error:
        client.v1.refunds.create(params={"charge": "ch_500"})

    assert error.value.http_status == 500
    assert json_error(error.value)["type"] == "api_error"
    assert json_error(error.value)["code"] == "api_error_demo"
    assert standin.refunds == []
    client.v1.refunds.create(params={"charge": "ch_500"})  # the fault was consumed
    assert standin.refund_creations() == 1


def test_rate_limit_with_should_retry_false_is_not_retried(standin: StripeStandIn) -> None:
    standin.add_charge(5000, charge_id="ch_429")
    standin.inject("error", status=429, headers={"Stripe-Should-Retry": "false"})

    with stripe_client(standin, retries=2) as client:
        with pytest.raises(stripe.RateLimitError) as error:
            client.v1.refunds.create(params={"charge": "ch_429"})

    assert error.value.http_status == 429
    assert json_error(error.value)["code"] == "rate_limit"
    assert len(standin.requests) == 1
    assert standin.refunds == []


def test_dropped_connection_before_acting_creates_nothing(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(5000, charge_id="ch_drop_before")
    standin.inject("drop_before")

    with pytest.raises(stripe.APIConnectionError):
        client.v1.refunds.create(params={"charge": "ch_drop_before"})

    assert standin.refunds == []
    assert standin.requests[0]["fault"] == "drop_before"
    assert standin.requests[0]["status"] is None


def test_dropped_answer_after_the_refund_is_recovered_by_retrying_with_the_same_key(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(5000, charge_id="ch_drop_after")
    standin.inject("drop_after")
    params: RefundCreateParams = {"charge": "ch_drop_after", "amount": 1200}

    with pytest.raises(stripe.APIConnectionError):
        client.v1.refunds.create(params=params, options={"idempotency_key": "lost-answer"})
    assert len(standin.refunds) == 1  # the refund happened although the client never heard
    retried = client.v1.refunds.create(params=params, options={"idempotency_key": "lost-answer"})

    assert retried.id == standin.refunds[0]["id"]
    assert standin.refund_creations() == 1
    assert standin.charge("ch_drop_after")["amount_refunded"] == 1200


def test_client_retries_through_a_dropped_answer_without_refunding_twice(
    standin: StripeStandIn,
) -> None:
    standin.add_charge(5000, charge_id="ch_auto_retry")
    standin.inject("drop_after")

    with stripe_client(standin, retries=1) as client:
        refund = client.v1.refunds.create(params={"charge": "ch_auto_retry", "amount": 300})

    assert [r["id"] for r in standin.refunds] == [refund.id]
    assert [r["replayed"] for r in standin.requests] == [False, True]


def test_faults_apply_only_to_matching_requests_in_order(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(5000, charge_id="ch_order")
    standin.inject("error", status=503, times=2)
    standin.inject("error", method="GET", path_prefix="/v1/charges/", status=502)

    with pytest.raises(stripe.APIError) as get_error:
        client.v1.charges.retrieve("ch_order")
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.refunds.create(params={"charge": "ch_order", "amount": 1})
    client.v1.refunds.create(params={"charge": "ch_order", "amount": 1})

    assert get_error.value.http_status == 502
    assert standin.pending_faults() == 0
    assert [r["status"] for r in standin.requests] == [502, 503, 503, 200]


def test_delay_fault_holds_the_answer_back(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(5000, charge_id="ch_slow")
    standin.inject("delay", method="GET", path_prefix="/v1/charges/ch_slow", delay=0.3)

    started = time.monotonic()
    client.v1.charges.retrieve("ch_slow")
    elapsed = time.monotonic() - started

    assert elapsed >= 0.3
    standin.clear_faults()


def test_a_slow_request_ends_when_released_not_after_its_whole_delay(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(5000, charge_id="ch_held")
    standin.inject("slow", delay=60.0)
    done: list[str] = []
    caller = threading.Thread(target=lambda: done.append(client.v1.refunds.create(params={"charge": "ch_held"}).id))
    caller.start()
    wait_until(lambda: len(standin.requests) == 1, what="the request to reach the stand-in")
    assert standin.refund_creations() == 0

    started = time.monotonic()
    standin.release_slow()
    caller.join(timeout=10)

    assert time.monotonic() - started < 10 and len(done) == 1
    assert [r["id"] for r in standin.refunds] == done


def test_inject_rejects_unknown_actions(standin: StripeStandIn) -> None:
    with pytest.raises(ValueError):
        standin.inject("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        standin.inject("error", status=200)


# -- refund lifecycle ---------------------------------------------------------------


def test_failed_refund_gives_the_amount_back_to_the_charge(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.add_charge(5000, charge_id="ch_fail")
    refund = client.v1.refunds.create(params={"charge": "ch_fail"})
    assert standin.charge("ch_fail")["refunded"] is True

    standin.set_refund_status(refund.id, "failed", failure_reason="expired_or_canceled_card")

    fetched = client.v1.refunds.retrieve(refund.id)
    assert (fetched.status, fetched.failure_reason) == ("failed", "expired_or_canceled_card")
    charge = client.v1.charges.retrieve("ch_fail")
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    with pytest.raises(ValueError):
        standin.set_refund_status(refund.id, "succeeded")


def test_new_refund_status_applies_to_refunds_created_afterwards(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    standin.add_charge(5000, charge_id="ch_pending")
    standin.new_refund_status = "pending"

    refund = client.v1.refunds.create(params={"charge": "ch_pending", "amount": 100})
    standin.set_refund_status(refund.id, "succeeded")

    assert refund.status == "pending"
    assert standin.refund(refund.id)["status"] == "succeeded"
    assert standin.charge("ch_pending")["amount_refunded"] == 100
    with pytest.raises(ValueError):
        standin.new_refund_status = "lost"


# -- demo data and CLI -----------------------------------------------------------------


def test_seed_demo_creates_the_demo_charges_once(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    first = standin.seed_demo()
    second = standin.seed_demo()

    assert first == second
    assert {c["id"]: (c["amount"], c["currency"]) for c in first} == {
        "ch_demo_small": (2500, "usd"),
        "ch_demo_large": (20000, "usd"),
        "ch_demo_refunded": (5000, "usd"),
        "ch_demo_disputed": (3000, "usd"),
        "ch_demo_jpy": (1500, "jpy"),
        "ch_demo_pi": (12000, "eur"),
    }
    assert standin.charge("ch_demo_refunded")["refunded"] is True
    assert standin.charge("ch_demo_disputed")["disputed"] is True
    assert client.v1.payment_intents.retrieve("pi_demo_large").latest_charge == "ch_demo_pi"


def test_stop_closes_open_keep_alive_connections() -> None:
    server = StripeStandIn()
    server.start()
    server.add_charge(1000, charge_id="ch_stop")
    with stripe_client(server) as client:
        client.v1.charges.retrieve("ch_stop")  # leaves a pooled keep-alive connection
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        assert not server.running
        with pytest.raises(stripe.APIConnectionError):
            client.v1.charges.retrieve("ch_stop")


def test_cli_serves_demo_charges_until_terminated() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.stripe_api", "--port", "0", "--demo"],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(10, process.kill)
    watchdog.start()
    try:
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            if "listening on " in line:
                url = line.split("listening on ")[1].split()[0]
            if "try: curl" in line:
                break
        assert url is not None, "the CLI never logged its URL"
        request = urllib.request.Request(
            f"{url}/v1/charges/ch_demo_jpy",
            headers={"Authorization": "Bearer sk_test_standin"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            charge = json.loads(response.read())
        assert (charge["amount"], charge["currency"]) == (1500, "jpy")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_early_fraud_warnings_are_listed_per_charge_in_stripes_shape(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    charge = standin.add_charge(2000, customer="cus_1", receipt_email="a@example.com", card_fingerprint="fp1")
    other = standin.add_charge(2000)
    warning = standin.add_early_fraud_warning(charge["id"])
    standin.add_early_fraud_warning(other["id"])
    listed = client.v1.radar.early_fraud_warnings.list(params={"charge": charge["id"]})
    assert [w.id for w in listed.data] == [warning["id"]]
    found = listed.data[0]
    assert found.id.startswith("issfr_") and found.object == "radar.early_fraud_warning"
    assert (found.charge, found.actionable, found.fraud_type) == (charge["id"], True, "made_with_stolen_card")
    assert isinstance(found.created, int)
    read = client.v1.charges.retrieve(charge["id"])
    assert (read.customer, read.receipt_email, read.payment_method_details.card.fingerprint) == (  # type: ignore[union-attr]
        "cus_1", "a@example.com", "fp1")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.radar.early_fraud_warnings.list(params={"charge": charge["id"], "refund": "re_1"})  # type: ignore[typeddict-unknown-key]


def test_a_charge_can_be_made_old(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    charge = standin.add_charge(2000)
    standin.set_charge_created(charge["id"], 1_600_000_000)
    assert client.v1.charges.retrieve(charge["id"]).created == 1_600_000_000
