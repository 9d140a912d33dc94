"""The policy file wired into the service (issue 9): each rule decides a request end to end through the API, on
SQLite and PostgreSQL, with what Stripe saw, what was stored and what Slack was told."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.tables import outbox, pending_refunds, policy_events, refund_requests
from tests.conftest import make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier

BASE = """
[thresholds.usd]
auto_approve = 5000

[thresholds.jpy]
auto_approve = 7000
"""


@pytest.fixture
def with_policy(database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock,
                tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build the app on `database_url` with a policy file holding `text` (BASE first unless `base=False`)."""
    apps: list[Flask] = []

    def build(text: str = "", *, base: bool = True, name: str = "policy.toml") -> Flask:
        path = tmp_path / name
        path.write_text((BASE if base else "") + text)
        app = create_app(make_settings(database_url, policy_file=str(path)), gateway=gateway, notifier=notifier,
                         clock=clock)
        if not database_url.startswith("sqlite"):
            app.extensions["refund_service"].db.upgrade()
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["refund_service"].db.dispose()


def ask(app: Flask, headers: dict[str, str], **body: Any) -> Any:
    return app.test_client().post("/refund-request", json=body, headers=headers)


def table(app: Flask, which: Any) -> list[Any]:
    with app.extensions["refund_service"].db.read() as conn:
        return list(conn.execute(select(which).order_by(*which.primary_key.columns)))


def count(app: Flask, which: Any) -> int:
    with app.extensions["refund_service"].db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(which)).scalar_one())


def test_a_zero_decimal_threshold_from_the_file_auto_approves_7000_jpy_and_queues_7001(
    with_policy: Callable[..., Flask], gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    app = with_policy()
    gateway.add_charge("ch_jpy2", 100000, currency="jpy")
    alone = ask(app, intake_headers, charge_id="ch_jpy", amount=7000)
    queued = ask(app, intake_headers, charge_id="ch_jpy2", amount=7001)
    assert (alone.status_code, queued.status_code) == (200, 202)
    assert [(r.amount, r.currency) for r in gateway.refunds] == [(7000, "jpy")]
    assert alone.get_json()["rule"] == "threshold" and "7,000 JPY" in alone.get_json()["explanation"]
    assert queued.get_json()["explanation"] == \
        "manual review: 7,001 JPY is over the auto-approve threshold of 7,000 JPY"


def test_each_rule_sends_its_request_to_review_and_stores_rule_version_and_facts(
    with_policy: Callable[..., Flask], gateway: FakeGateway, clock: FakeClock, intake_headers: dict[str, str]
) -> None:
    app = with_policy("""
[disputes]
disputed = "review"
early_fraud_warning = "review"
[charge_age]
review_after_days = 90
[charge_share]
review_over_percent = 50
[reasons.requested_by_customer]
[reasons.fraudulent]
outcome = "review"
[products.kettle]
outcome = "review"
[thresholds.eur]
auto_approve = 5000
""")
    gateway.add_charge("ch_disputed", 3000, disputed=True)
    gateway.add_charge("ch_warned", 3000, early_fraud_warning=True)
    gateway.add_charge("ch_old", 3000, created_at=clock() - timedelta(days=100))
    gateway.add_charge("ch_share", 4000)
    gateway.add_charge("ch_fraud", 3000)
    gateway.add_charge("ch_kettle", 3000, product="kettle")
    gateway.add_charge("ch_gbp", 3000, currency="gbp")
    cases = [("disputed", {"charge_id": "ch_disputed", "amount": 1000}),
             ("early_fraud_warning", {"charge_id": "ch_warned", "amount": 1000}),
             ("charge_age", {"charge_id": "ch_old", "amount": 1000}),
             ("charge_share", {"charge_id": "ch_share", "amount": 3000}),
             ("reason", {"charge_id": "ch_fraud", "amount": 1000, "reason": "fraudulent"}),
             ("product", {"charge_id": "ch_kettle", "amount": 1000}),
             ("currency", {"charge_id": "ch_gbp", "amount": 1000})]
    for rule, body in cases:
        answer = ask(app, intake_headers, **body)
        assert (answer.status_code, answer.get_json()["rule"]) == (202, rule), answer.get_json()
    assert gateway.refunds == []
    stored = table(app, refund_requests)
    assert [r.policy_rule for r in stored] == [rule for rule, _ in cases]
    version = app.extensions["refund_service"].policy.version
    assert {r.policy_version for r in stored} == {version}
    assert json.loads(stored[1].policy_facts)["charge"]["early_fraud_warning"] is True
    assert "ch_warned" in gateway.fraud_lookups  # a policy file asks Stripe about early fraud warnings


def test_the_articles_policy_never_asks_stripe_about_early_fraud_warnings(
    client: FlaskClient, gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    assert client.post("/refund-request", json={"charge_id": "ch_small", "amount": 1000},
                       headers=intake_headers).status_code == 200
    assert gateway.fraud_lookups == []


def test_a_customer_over_the_velocity_limit_waits_for_approval(
    with_policy: Callable[..., Flask], gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    app = with_policy("[velocity]\nwindow_days = 30\nmax_count = 2\n")
    for n in range(3):
        gateway.add_charge(f"ch_ana_{n}", 3000, customer_id="cus_ana")
    answers = [ask(app, intake_headers, charge_id=f"ch_ana_{n}", amount=1000) for n in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 202]
    assert answers[2].get_json()["explanation"] == "manual review: customer cus_ana has 3 refunds in 30 days, limit 2"
    assert len(gateway.refunds) == 2
    assert {r.customer_key for r in table(app, refund_requests)} == {"cus_ana"}


def test_a_refusing_rule_answers_422_records_the_request_refused_and_tells_neither_stripe_nor_slack(
    with_policy: Callable[..., Flask], gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    app = with_policy('[products."gift card"]\noutcome = "refuse"\n')
    answer = ask(app, intake_headers, charge_id="ch_small", amount=1000, product="gift card")
    assert answer.status_code == 422
    assert answer.get_json() == {"error": "refused_by_policy", "request_id": 1,
                                 "message": "refused: product gift card is always refused"}
    [row] = table(app, refund_requests)
    assert (row.status, row.decision, row.policy_rule) == ("refused", "refuse", "product")
    assert gateway.calls == [] and count(app, outbox) == 0 and count(app, pending_refunds) == 0


def test_a_reason_the_file_does_not_list_gets_400_and_a_listed_one_of_its_own_reaches_stripe_mapped(
    with_policy: Callable[..., Flask], gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    app = with_policy('[reasons.damaged_in_transit]\nstripe_reason = "requested_by_customer"\n')
    refused = ask(app, intake_headers, charge_id="ch_small", amount=1000, reason="duplicate")
    assert refused.status_code == 400
    assert refused.get_json()["message"] == "reason: must be one of damaged_in_transit"
    assert count(app, refund_requests) == 0
    done = ask(app, intake_headers, charge_id="ch_small", amount=1000, reason="damaged_in_transit")
    assert done.status_code == 200
    assert [c.reason for c in gateway.calls] == ["requested_by_customer"]
    assert table(app, refund_requests)[0].reason == "damaged_in_transit"


def test_a_second_request_for_a_charge_with_one_waiting_gets_409_duplicate_pending_naming_it(
    with_policy: Callable[..., Flask], intake_headers: dict[str, str]
) -> None:
    app = with_policy()
    first = ask(app, intake_headers, charge_id="ch_big", amount=12000)
    second = ask(app, intake_headers, charge_id="ch_big", amount=11000)
    pending_id = first.get_json()["pending_id"]
    assert second.status_code == 409
    assert second.get_json()["error"] == "duplicate_pending"
    assert f"pending refund {pending_id}" in second.get_json()["message"]
    assert count(app, pending_refunds) == 1
    assert [(r.status, r.error_code) for r in table(app, refund_requests)] == [
        ("pending_approval", None), ("failed", "duplicate_pending")]


def test_the_circuit_breaker_holds_auto_approvals_past_its_limit_and_tells_slack_once_per_trip(
    with_policy: Callable[..., Flask], gateway: FakeGateway, clock: FakeClock, notifier: FakeNotifier,
    intake_headers: dict[str, str],
) -> None:
    app = with_policy("[circuit_breaker.hour]\nmax_count = 2\n")
    for n in range(5):
        gateway.add_charge(f"ch_drain_{n}", 3000)
    answers = [ask(app, intake_headers, charge_id=f"ch_drain_{n}", amount=1000) for n in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 202, 202]
    assert answers[2].get_json()["rule"] == "circuit_breaker"
    assert len(gateway.refunds) == 2
    assert [m.kind for m in table(app, outbox)].count("circuit_breaker") == 1
    run_worker(app)
    assert notifier.kinds().count("circuit_breaker") == 1
    held = [facts for kind, facts in notifier.sent if kind == "needs_approval"]
    assert [f["policy_rule"] for f in held] == ["circuit_breaker"] * 2  # Slack's message names the rule
    clock.advance(timedelta(hours=1, seconds=1))  # the hour passes: the breaker lets refunds through again
    assert ask(app, intake_headers, charge_id="ch_drain_4", amount=1000).status_code == 200
    assert len(gateway.refunds) == 3


def test_a_dry_run_answers_the_decision_and_changes_nothing(
    with_policy: Callable[..., Flask], gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    app = with_policy()
    headers = {**intake_headers, "Idempotency-Key": "dry-1"}
    answer = ask(app, headers, charge_id="ch_big", amount=12000, dry_run=True)
    assert answer.status_code == 200
    assert answer.get_json() == {
        "dry_run": True, "decision": "needs_approval", "rule": "threshold", "approvals_required": 1,
        "explanation": "manual review: 120.00 USD is over the auto-approve threshold of 50.00 USD",
        "amount": 12000, "currency": "usd", "policy_version": app.extensions["refund_service"].policy.version}
    assert ask(app, intake_headers, charge_id="ch_small", dry_run=True).get_json()["decision"] == "auto_approve"
    assert gateway.calls == []
    assert [count(app, t) for t in (refund_requests, pending_refunds, outbox)] == [0, 0, 0]
    # The key was not spent: the real request with it is a new request.
    assert ask(app, headers, charge_id="ch_small", amount=1000).status_code == 200


def test_a_start_with_a_changed_policy_file_records_one_event_naming_both_versions(
    with_policy: Callable[..., Flask],
) -> None:
    first = with_policy()
    second = with_policy("[thresholds.eur]\nauto_approve = 100\n", name="other.toml")
    with_policy("[thresholds.eur]\nauto_approve = 100\n", name="other.toml")  # the same again: nothing new
    old, new = (app.extensions["refund_service"].policy.version for app in (first, second))
    events = table(second, policy_events)
    assert [(e.action, e.old_version, e.new_version) for e in events] == [
        ("policy_first_seen", None, old), ("policy_changed", old, new)]
    assert events[1].detail.startswith(f"policy changed from {old[:12]} to {new[:12]}")


def test_a_bad_policy_file_stops_start_up_naming_the_file_and_the_key(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[thresholds.usd]\nauto_aprove = 5000\n")
    with pytest.raises(SystemExit) as stopped:
        create_app(make_settings(database_url, policy_file=str(path)))
    assert str(stopped.value) == (f"configuration error: POLICY_FILE: {path}: thresholds.usd.auto_aprove: "
                                  "is not a known key (a misspelling?) (and 1 more problem)")


def test_without_a_policy_file_two_person_threshold_still_holds_in_other_currencies(
    database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock, intake_headers: dict[str, str]
) -> None:
    app = create_app(make_settings(database_url, two_person_threshold=10_000), gateway=gateway, notifier=notifier,
                     clock=clock)
    try:
        if not database_url.startswith("sqlite"):
            app.extensions["refund_service"].db.upgrade()
        gateway.add_charge("ch_eur", 20_000, currency="eur")
        queued = ask(app, intake_headers, charge_id="ch_eur", amount=15_000)
        assert queued.get_json()["rule"] == "currency"
        token = add_approver(app.extensions["refund_service"].db, "maria", clock())
        first = app.test_client().post("/approve-refund", json={"pending_id": queued.get_json()["pending_id"]},
                                       headers={"Authorization": f"Bearer {token}"})
        assert first.get_json()["status"] == "awaiting_second_approval"
        assert gateway.refunds == []
    finally:
        app.extensions["refund_service"].db.dispose()
