"""Exactly once under concurrency, retries, crashes and outages: the real service under gunicorn,
the Stripe and Slack stand-ins, and what Stripe saw at the end."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, select

from refunds.tables import refund_log, refund_requests
from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN
from tests.e2e.conftest import Service, kill, service_env, start_gunicorn, stop, wait_until

FAST = {"EXECUTION_LEASE_SECONDS": "2", "RETRY_BACKOFF_SECONDS": "0.5", "SLACK_TIMEOUT_SECONDS": "1",
        "STRIPE_TIMEOUT_SECONDS": "5"}


@pytest.fixture
def start(database_url: str, stripe: StripeStandIn, slack: SlackStandIn,
          tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start the service (4 gunicorn workers by default) on one database; stopped at the end."""
    running: list[Service] = []

    def _start(workers: int = 4, **extra: str) -> Service:
        env = service_env(database_url, stripe, slack, **{**FAST, **extra})
        svc = Service("", env, tmp_path / f"service-{len(running)}.log")
        if not database_url.startswith("sqlite") and not running:
            assert svc.flask("db", "upgrade").returncode == 0
        svc.base_url, svc.process = start_gunicorn(env, svc.log_path, workers=workers)
        running.append(svc)
        return svc

    yield _start
    for svc in running:
        if svc.process is not None and svc.process.poll() is None:
            stop(svc.process)


def db_rows(svc: Service, table: Any) -> list[Any]:
    engine = create_engine(svc.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(table).order_by(*table.primary_key.columns)))
    finally:
        engine.dispose()


def concurrently(n: int, call: Callable[[int], requests.Response]) -> list[requests.Response]:
    barrier = threading.Barrier(n)

    def run(i: int) -> requests.Response:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def test_50_concurrent_identical_requests_make_one_refund_and_all_answers_name_it(
    start: Callable[..., Service], stripe: StripeStandIn
) -> None:
    svc = start(workers=4)
    charge = stripe.add_charge(4000, "usd")
    body = {"charge_id": charge["id"], "amount": 3000}
    answers = concurrently(50, lambda _: svc.post("/refund-request", body, INTAKE_TOKEN,
                                                  **{"Idempotency-Key": "ticket-50"}))
    assert [a.status_code for a in answers] == [200] * 50, {a.status_code: a.text for a in answers}
    assert stripe.refund_creations() == 1
    assert {a.json()["refund_id"] for a in answers} == {stripe.refunds[0]["id"]}
    assert len(db_rows(svc, refund_requests)) == 1


def test_10_concurrent_requests_for_60_percent_never_refund_more_than_the_charge(
    start: Callable[..., Service], stripe: StripeStandIn
) -> None:
    svc = start(workers=4)
    charge = stripe.add_charge(5000, "usd")
    answers = concurrently(10, lambda i: svc.post("/refund-request", {"charge_id": charge["id"], "amount": 3000},
                                                  INTAKE_TOKEN))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 9, [a.text for a in answers]
    assert {a.json()["error"] for a in answers if a.status_code == 409} <= {
        "amount_exceeds_refundable", "amount_too_large"}
    assert stripe.charge(charge["id"])["amount_refunded"] == 3000
    assert stripe.refund_creations() == 1


def test_20_concurrent_approvals_make_one_refund(start: Callable[..., Service], stripe: StripeStandIn) -> None:
    svc = start(workers=4)
    token = svc.add_approver("maria")
    charge = stripe.add_charge(90000, "usd")
    pending = svc.post("/refund-request", {"charge_id": charge["id"], "amount": 60000}, INTAKE_TOKEN).json()
    answers = concurrently(20, lambda _: svc.post("/approve-refund", {"pending_id": pending["pending_id"]}, token))
    assert sorted(a.status_code for a in answers) == [200] + [409] * 19
    assert stripe.refund_creations() == 1


def test_a_connection_dropped_after_stripe_refunded_ends_in_one_refund_with_one_key(
    start: Callable[..., Service], stripe: StripeStandIn
) -> None:
    svc = start(workers=2)
    charge = stripe.add_charge(3000, "usd")
    stripe.inject("drop_after", path_prefix="/v1/refunds")
    answer = svc.post("/refund-request", {"charge_id": charge["id"], "amount": 1000}, INTAKE_TOKEN)
    assert answer.status_code == 200, answer.text
    assert stripe.refund_creations() == 1
    keys = stripe.idempotency_keys()
    assert len(keys) >= 2 and len(set(keys)) == 1  # retried, always with the request's own key
    assert db_rows(svc, refund_requests)[0].stripe_idempotency_key == keys[0]


def test_500_then_429_then_success_makes_one_refund_that_ends_succeeded(
    start: Callable[..., Service], stripe: StripeStandIn
) -> None:
    svc = start(workers=2)
    charge = stripe.add_charge(3000, "usd")
    stripe.inject("error", status=500)
    stripe.inject("error", status=429, code="rate_limit", headers={"Stripe-Should-Retry": "false"})
    answer = svc.post("/refund-request", {"charge_id": charge["id"], "amount": 1000}, INTAKE_TOKEN)
    assert answer.status_code in (200, 202), answer.text
    wait_until(lambda: db_rows(svc, refund_requests)[0].status == "succeeded", what="the worker to finish")
    assert stripe.refund_creations() == 1
    assert len(set(stripe.idempotency_keys())) == 1
    [logged] = db_rows(svc, refund_log)
    assert logged.status == "succeeded"


def test_killed_after_stripe_refunded_and_before_our_commit_recovers_to_exactly_one_refund(
    start: Callable[..., Service], stripe: StripeStandIn
) -> None:
    svc = start(workers=1)
    charge = stripe.add_charge(3000, "usd")
    # Stripe holds the call for 2 s, then creates the refund; by then the service is dead.
    stripe.inject("drop_after", path_prefix="/v1/refunds", delay=2.0)
    caller = threading.Thread(target=lambda: _ignore_errors(
        lambda: svc.post("/refund-request", {"charge_id": charge["id"], "amount": 1000}, INTAKE_TOKEN)))
    caller.start()
    wait_until(lambda: any(r["method"] == "POST" and r["path"] == "/v1/refunds" for r in stripe.requests)
               or stripe.pending_faults() == 0, what="the refund call to reach Stripe")
    wait_until(lambda: db_rows(svc, refund_requests)[0].status == "executing",
               what="the request to be recorded as executing")
    assert svc.process is not None
    kill(svc.process)
    caller.join()
    wait_until(lambda: stripe.refund_creations() == 1, what="Stripe to create the refund")
    # The crash window: Stripe refunded, we did not record it.
    assert db_rows(svc, refund_requests)[0].status == "executing"

    restarted = start(workers=1)
    wait_until(lambda: db_rows(restarted, refund_requests)[0].status == "succeeded", what="recovery")
    assert stripe.refund_creations() == 1
    assert len(set(stripe.idempotency_keys())) == 1
    assert [row.refund_id for row in db_rows(restarted, refund_log)] == [stripe.refunds[0]["id"]]


def test_requests_during_a_stripe_outage_are_answered_processing_then_executed_once_each(
    start: Callable[..., Service], stripe: StripeStandIn
) -> None:
    svc = start(workers=2, STRIPE_MAX_NETWORK_RETRIES="0")
    charges = [stripe.add_charge(2000, "usd") for _ in range(5)]
    port = stripe.port
    stripe.stop()
    answers = [svc.post("/refund-request", {"charge_id": c["id"], "amount": 500}, INTAKE_TOKEN) for c in charges]
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(202, "processing")] * 5
    # The worker keeps trying meanwhile, and failing: each request is tried again at least once.
    wait_until(lambda: all(r.attempts >= 2 and r.status != "succeeded" for r in db_rows(svc, refund_requests)),
               what="the worker to retry every request while Stripe is down")
    stripe.start(port=port)
    wait_until(lambda: all(r.status == "succeeded" for r in db_rows(svc, refund_requests)), timeout=60,
               what="every request to execute")
    assert stripe.refund_creations() == 5
    assert sorted(r["charge"] for r in stripe.refunds) == sorted(c["id"] for c in charges)


@pytest.mark.parametrize("code", ["charge_already_refunded", "charge_disputed", "amount_too_large",
                                  "charge_not_refundable", "refund_disputed_payment"])
def test_each_final_stripe_error_gets_one_attempt_and_fails_the_request_with_its_code(
    start: Callable[..., Service], stripe: StripeStandIn, slack: SlackStandIn, code: str, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("error mapping does not depend on the database; the SQLite run covers it")
    svc = start(workers=1)
    token = svc.add_approver("maria")
    charge = stripe.add_charge(90000, "usd")
    pending = svc.post("/refund-request", {"charge_id": charge["id"], "amount": 60000}, INTAKE_TOKEN).json()
    stripe.inject("error", status=400, code=code, message=f"Stripe says {code}.")
    answer = svc.post("/approve-refund", {"pending_id": pending["pending_id"]}, token)
    assert (answer.status_code, answer.json()["error"]) == (409, code)
    assert len(stripe.idempotency_keys()) == 1
    assert stripe.refund_creations() == 0
    [row] = db_rows(svc, refund_requests)
    assert (row.status, row.error_code) == ("failed", code)
    assert any(code in str(m) for m in slack.wait_for(2))


def test_slack_failing_and_timing_out_for_the_whole_run_loses_no_notification(
    start: Callable[..., Service], stripe: StripeStandIn, slack: SlackStandIn
) -> None:
    slack.set_down(500)
    svc = start(workers=2)
    token = svc.add_approver("maria")
    charge = stripe.add_charge(90000, "usd")
    svc.post("/refund-request", {"charge_id": charge["id"], "amount": 1000}, INTAKE_TOKEN)
    pending = svc.post("/refund-request", {"charge_id": charge["id"], "amount": 60000}, INTAKE_TOKEN).json()
    slack.set_timeout(3)
    approved = svc.post("/approve-refund", {"pending_id": pending["pending_id"]}, token)
    assert approved.status_code == 200  # Slack is never in the request path
    wait_until(lambda: slack.attempts >= 2, what="the worker to try Slack again while it is down")
    slack.set_up()
    messages = slack.wait_for(3, timeout=60)
    texts = [m["text"] for m in messages]
    assert sum("auto-approved" in t for t in texts) == 1
    needs, approved_at = (next(i for i, t in enumerate(texts) if key in t)
                          for key in ("needs approval", "Refund approved:"))
    assert needs < approved_at  # in order per request


def test_4_workers_times_200_writes_on_sqlite_never_say_database_is_locked(
    start: Callable[..., Service], stripe: StripeStandIn, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's locking is what this test is about")
    svc = start(workers=4)
    charges = [stripe.add_charge(10_000, "usd") for _ in range(8)]
    answers = concurrently(16, lambda i: _many(svc, charges[i % 8]["id"], 50))
    assert all(a.status_code == 200 for a in answers)
    stop(svc.process)  # type: ignore[arg-type]
    assert "database is locked" not in svc.log_text()
    assert len(db_rows(svc, refund_requests)) == 800
    assert stripe.refund_creations() == 800


def _many(svc: Service, charge_id: str, n: int) -> requests.Response:
    """n sequential refund requests of 1 cent; returns the first non-200 answer, or the last one."""
    answer = None
    with requests.Session() as session:
        for _ in range(n):
            answer = session.post(svc.base_url + "/refund-request", json={"charge_id": charge_id, "amount": 1},
                                  headers={"Authorization": f"Bearer {INTAKE_TOKEN}"}, timeout=60)
            if answer.status_code != 200:
                return answer
    assert answer is not None
    return answer


def _ignore_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except requests.RequestException:
        pass
