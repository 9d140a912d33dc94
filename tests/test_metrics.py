"""GET /metrics: what ops see matches what happened (refunds, queues, HTTP answers, Stripe calls)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.service import utcnow
from tests.conftest import INTAKE_TOKEN, STRIPE_KEY, make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier

METRICS_TOKEN = "metrics-test-token-0123456789"
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}
INTAKE = {"Authorization": f"Bearer {INTAKE_TOKEN}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def app(database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock,
        tmp_path: Path) -> Iterator[Flask]:
    # Thresholds in usd and jpy: a currency the policy has none for waits for a manager (issue 9).
    policy = tmp_path / "policy.toml"
    policy.write_text("[thresholds.usd]\nauto_approve = 5000\n\n[thresholds.jpy]\nauto_approve = 5000\n")
    app = create_app(make_settings(database_url, metrics_token=METRICS_TOKEN, policy_file=str(policy)),
                     gateway=gateway, notifier=notifier, clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


def scrape(client: FlaskClient) -> Samples:
    answer = client.get("/metrics", headers=SCRAPE)
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    text = answer.get_data(as_text=True)
    assert STRIPE_KEY not in text and INTAKE_TOKEN not in text and METRICS_TOKEN not in text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_metrics_count_the_refunds_made_the_queue_and_the_answers_given(
        app: Flask, gateway: FakeGateway, clock: FakeClock) -> None:
    client = app.test_client()
    manager = {"Authorization": f"Bearer {add_approver(app.extensions['refund_service'].db, 'maria', utcnow())}"}
    for body in ({"charge_id": "ch_small", "amount": 1500}, {"charge_id": "ch_jpy", "amount": 3000}):
        assert client.post("/refund-request", headers=INTAKE, json=body).status_code == 200
    gateway.add_charge("ch_big_2", 20000)  # a second request on ch_big would be a duplicate_pending (issue 9)
    queued = [client.post("/refund-request", headers=INTAKE, json={"charge_id": charge, "amount": amount})
              .get_json()["pending_id"] for charge, amount in (("ch_big", 12000), ("ch_big_2", 7000))]
    assert client.post("/approve-refund", headers=manager, json={"pending_id": queued[0]}).status_code == 200
    assert client.post("/refund-request", headers=INTAKE, json={"charge_id": "ch_nowhere"}).status_code == 404
    clock.advance(timedelta(seconds=90))

    samples = scrape(client)
    assert len(gateway.refunds) == 3
    assert value(samples, "refunds_total", path="auto_approved", currency="usd") == 1
    assert value(samples, "refunds_total", path="auto_approved", currency="jpy") == 1
    assert value(samples, "refunds_total", path="approved", currency="usd") == 1
    assert value(samples, "refunds_refunded_amount_minor_units_total", path="approved", currency="usd") == 12000
    queue = client.get("/pending-refunds", headers=manager).get_json()["pending"]
    assert value(samples, "refunds_pending_approvals") == len(queue) == 1
    assert value(samples, "refunds_pending_oldest_age_seconds") == 90
    assert value(samples, "refunds_requests_in_flight", status="executing") == 0
    assert value(samples, "refunds_http_requests_total", endpoint="/refund-request", method="POST", status="200") == 2
    assert value(samples, "refunds_http_requests_total", endpoint="/refund-request", method="POST", status="202") == 2
    assert value(samples, "refunds_stripe_errors_total", operation="get_charge", code="charge_not_found") == 1
    assert value(samples, "refunds_stripe_call_duration_seconds_count", operation="create_refund") == 3
    assert value(samples, "refunds_database_up") == 1
    assert value(samples, "refunds_outbox_waiting") > 0
    assert value(samples, "refunds_outbox_most_overdue_seconds") == 90

    run_worker(app)
    assert value(scrape(client), "refunds_outbox_waiting") == 0


def test_metrics_need_the_token(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    refused = client.get("/metrics", headers={"Authorization": "Bearer not-the-metrics-token"})
    assert refused.status_code == 401 and refused.get_json()["error"] == "unauthorized"
    assert METRICS_TOKEN not in refused.get_data(as_text=True)


def test_without_a_metrics_token_there_is_no_metrics_endpoint(tmp_path: Path, gateway: FakeGateway) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path}/refunds.db"), gateway=gateway, notifier=FakeNotifier())
    assert app.test_client().get("/metrics", headers=SCRAPE).status_code == 404
    app.extensions["refund_service"].db.dispose()


def test_every_metric_the_example_dashboard_plots_is_served(app: Flask) -> None:
    client = app.test_client()
    client.post("/refund-request", headers=INTAKE, json={"charge_id": "ch_small", "amount": 1500})
    client.post("/refund-request", headers=INTAKE, json={"charge_id": "ch_nowhere"})
    served = {name for name, _ in scrape(client)}
    board = json.loads((Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    plotted = {name for panel in board["panels"] for target in panel["targets"]
               for name in re.findall(r"\brefunds_[a-z_]+", target["expr"])}
    assert plotted and plotted <= served, plotted - served


def test_the_metrics_count_the_waits_for_a_stripe_slot_and_the_requests_sent_to_the_worker_because_of_it(
        database_url: str) -> None:
    from refunds.rate_limit import patient
    from standins.stripe_api import StripeStandIn

    with StripeStandIn(api_key=STRIPE_KEY) as stripe:
        charges = [stripe.add_charge(1000, "usd")["id"] for _ in range(3)]
        # Two reads and two writes a second: the second request waits about half a second for its read slot.
        app = create_app(make_settings(database_url, metrics_token=METRICS_TOKEN, stripe_api_base=stripe.base_url,
                                       stripe_rate_limit=2.0))
        if not database_url.startswith("sqlite"):
            app.extensions["refund_service"].db.upgrade()
        client = app.test_client()
        try:
            for charge in charges[:2]:
                answer = client.post("/refund-request", headers=INTAKE, json={"charge_id": charge, "amount": 100})
                assert answer.status_code == 200
            with patient(0.05):  # the next read slot is further than this caller may wait
                answer = client.post("/refund-request", headers=INTAKE, json={"charge_id": charges[2], "amount": 100})
            assert answer.status_code == 202 and stripe.refund_creations() == 2
            samples = scrape(client)
        finally:
            app.extensions["refund_service"].db.dispose()
    assert value(samples, "refunds_stripe_rate_limit_wait_seconds_count", kind="read") == 2
    assert value(samples, "refunds_stripe_rate_limit_wait_seconds_count", kind="write") == 2
    assert 0 < value(samples, "refunds_stripe_rate_limit_wait_seconds_sum", kind="read") <= 0.5
    assert value(samples, "refunds_stripe_rate_limit_deferred_total", kind="read") == 1
    assert value(samples, "refunds_stripe_rate_limit_deferred_total", kind="write") == 0
