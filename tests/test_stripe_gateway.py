"""The Stripe adapter against the in-repo Stripe stand-in, over real HTTP with stripe-python."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from refunds.errors import (
    ChargeNotFound,
    IdempotencyKeyReused,
    StripeMisconfigured,
    StripeRefused,
    StripeUnavailable,
)
from refunds.stripe_gateway import RefundInfo, RefundParams, StripeGateway
from standins.stripe_api import StripeStandIn
from tests.polling import wait_until

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


def test_a_key_still_in_use_at_stripe_is_transient_and_a_later_call_gets_the_one_refund(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(5000, "usd")
    params = RefundParams(charge_id=charge["id"], amount=1000, reason="requested_by_customer", idempotency_key="k-busy")
    stripe.inject("slow", delay=1.0)  # the first call holds the key for a second
    first: list[RefundInfo] = []
    caller = threading.Thread(target=lambda: first.append(gateway_for(stripe, retries=0).create_refund(params)))
    caller.start()
    wait_until(lambda: len(stripe.requests) == 1)

    with pytest.raises(StripeUnavailable):  # 409 idempotency_key_in_use, no retries left
        gateway_for(stripe, retries=0).create_refund(params)
    assert stripe.refund_creations() == 0
    caller.join()
    later = gateway_for(stripe, retries=0).create_refund(params)

    assert later == first[0]
    assert stripe.refund_creations() == 1 and len(stripe.refunds) == 1
    assert [r["status"] for r in stripe.requests] == [200, 409, 200]


def test_stripe_pythons_own_retries_wait_out_a_key_in_use_and_get_the_one_refund(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(5000, "usd")
    params = RefundParams(charge_id=charge["id"], amount=1000, reason="requested_by_customer", idempotency_key="k-wait")
    stripe.inject("slow", delay=0.6)
    first: list[RefundInfo] = []
    caller = threading.Thread(target=lambda: first.append(gateway_for(stripe, retries=0).create_refund(params)))
    caller.start()
    wait_until(lambda: len(stripe.requests) == 1)

    second = gateway_for(stripe, retries=2).create_refund(params)  # its retries wait at least 1 s in all
    caller.join()

    assert second == first[0]
    assert stripe.refund_creations() == 1 and len(stripe.refunds) == 1
    assert 409 in [r["status"] for r in stripe.requests]


def test_a_key_used_with_other_parameters_is_a_final_refusal_and_refunds_nothing_more(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(5000, "usd")
    gateway = gateway_for(stripe)
    gateway.create_refund(RefundParams(charge_id=charge["id"], amount=1000, reason="requested_by_customer",
                                       idempotency_key="k-same"))
    other = RefundParams(charge_id=charge["id"], amount=2000, reason="requested_by_customer", idempotency_key="k-same")

    for _ in range(3):
        with pytest.raises(IdempotencyKeyReused) as caught:  # a StripeRefused the service looks behind
            gateway.create_refund(other)
        assert caught.value.code == "idempotency_error" and isinstance(caught.value, StripeRefused)

    assert stripe.refund_creations() == 1 and len(stripe.refunds) == 1
    assert [r["status"] for r in stripe.requests] == [200, 400, 400, 400]  # not retried by stripe-python either


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the proxy itself relays straight


class _ForwardingProxy(ThreadingHTTPServer):
    """A plain HTTP forward proxy on loopback that records the URL of each request it relays."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ForwardingProxy

    def _relay(self) -> None:
        self.server.seen.append(self.path)  # absolute-form: the client asked us to forward it
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection", "connection")}
        relayed = urllib.request.Request(self.path, data=body, headers=headers, method=self.command)
        try:
            with _DIRECT.open(relayed, timeout=5) as answer:
                status, data, answer_headers = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as error:
            status, data, answer_headers = error.code, error.read(), error.headers
        self.send_response(status)
        for name in ("Content-Type", "Request-Id", "Idempotency-Key"):
            if answer_headers.get(name):
                self.send_header(name, answer_headers[name])
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _relay

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[_ForwardingProxy]:
    server = _ForwardingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_stripe_calls_go_through_the_proxy_the_environment_names(
    stripe: StripeStandIn, proxy: _ForwardingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    charge = stripe.add_charge(5000, "usd")
    gateway = gateway_for(stripe)
    refund = gateway.create_refund(RefundParams(charge_id=charge["id"], amount=700, reason="duplicate",
                                                idempotency_key="refund-request-9-proxy"))
    assert gateway.get_charge(charge_id=charge["id"]).amount_refunded == 700
    assert proxy.seen == [f"{stripe.base_url}/v1/refunds", f"{stripe.base_url}/v1/charges/{charge['id']}"]
    assert [r["id"] for r in stripe.refunds] == [refund.refund_id]


def test_no_proxy_keeps_stripe_calls_off_the_proxy(
    stripe: StripeStandIn, proxy: _ForwardingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    charge = stripe.add_charge(5000, "usd")
    assert gateway_for(stripe).get_charge(charge_id=charge["id"]).amount == 5000
    assert proxy.seen == []


def test_reads_the_facts_the_policy_needs_and_early_fraud_warnings_only_when_asked(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(5000, "usd", customer="cus_ana", receipt_email="ana@example.com",
                               card_fingerprint="Xt5EWLLDS7FJjR1c", metadata={"product": "kettle"},
                               created=1_700_000_000)
    stripe.add_early_fraud_warning(charge["id"])
    gateway = gateway_for(stripe)
    plain = gateway.get_charge(charge_id=charge["id"])
    assert (plain.customer_id, plain.email, plain.card_fingerprint, plain.product) == (
        "cus_ana", "ana@example.com", "Xt5EWLLDS7FJjR1c", "kettle")
    assert plain.created_at is not None and plain.created_at.timestamp() == 1_700_000_000
    assert plain.early_fraud_warning is False
    assert [r["path"] for r in stripe.requests] == [f"/v1/charges/{charge['id']}"]  # one call, as before
    assert gateway.get_charge(charge_id=charge["id"], early_fraud_warnings=True).early_fraud_warning is True
    assert stripe.requests[-1]["path"] == "/v1/radar/early_fraud_warnings"
    assert stripe.requests[-1]["params"] == {"charge": charge["id"], "limit": "100"}


def test_a_warning_no_longer_actionable_does_not_count(stripe: StripeStandIn) -> None:
    charge = stripe.add_charge(5000, "usd")
    other = stripe.add_charge(5000, "usd")
    stripe.add_early_fraud_warning(charge["id"], actionable=False)
    stripe.add_early_fraud_warning(other["id"])
    assert gateway_for(stripe).get_charge(charge_id=charge["id"], early_fraud_warnings=True).early_fraud_warning \
        is False
