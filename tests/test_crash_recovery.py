"""Property: whatever step the process dies at, each request is refunded at most once, never more
than its charge allows, and nothing stays stuck once the service is back.

A crash is a BaseException raised at a chosen Stripe boundary (before a call, or after Stripe
acted and before we heard back), which unwinds the request like a killed process: every
transaction not yet committed is lost, every one committed stays. The real SIGKILL of a gunicorn
process is tests/e2e/test_exactly_once.py; this test covers every window, many times over.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.service import utcnow
from refunds.stripe_gateway import ChargeInfo, RefundInfo, RefundParams
from refunds.tables import charge_ledger, pending_refunds, refund_log, refund_requests
from tests.conftest import INTAKE_TOKEN, _truncate_postgres, make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier

CHARGES = {"ch_a": 10_000, "ch_b": 3_000}
SETTLED = {"pending_approval", "succeeded", "failed", "rejected"}


class Crash(BaseException):
    """The process died here."""


@dataclass
class CrashPlan:
    """Crash at the listed step numbers (1-based), counting every Stripe boundary crossed."""

    at: set[int]
    steps: int = 0
    crashed: int = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps in self.at:
            self.crashed += 1
            raise Crash()


@dataclass
class CrashingGateway:
    """Stripe (a FakeGateway) with crash points before each call and after each call returns."""

    inner: FakeGateway
    plan: CrashPlan
    seen: list[str] = field(default_factory=list)

    def get_charge(self, **kwargs: Any) -> ChargeInfo:
        self.plan.step()
        result = self.inner.get_charge(**kwargs)
        self.plan.step()
        return result

    def create_refund(self, params: RefundParams) -> RefundInfo:
        self.plan.step()
        result = self.inner.create_refund(params)
        self.plan.step()  # Stripe refunded; we die before recording it
        return result

    def get_refund(self, refund_id: str) -> RefundInfo:
        return self.inner.get_refund(refund_id)

    def find_refund(self, **kwargs: Any) -> RefundInfo | None:
        return self.inner.find_refund(**kwargs)


operation = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(sorted(CHARGES)), st.sampled_from([100, 2_000, 6_000, None]),
              st.sampled_from([None, "k1", "k2"])),
    st.tuples(st.just("approve"), st.integers(1, 3)),
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_crash_at_any_step_never_refunds_twice_and_leaves_nothing_stuck(
    backend: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(ops=st.lists(operation, min_size=1, max_size=6), crash_at=st.sets(st.integers(1, 24), max_size=2))
    def run(ops: list[tuple[Any, ...]], crash_at: set[int]) -> None:
        if url is None:
            database_url = f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db"
        else:
            database_url = url
            _truncate_postgres(url)
        check_one_history(database_url, ops, crash_at)

    run()


def check_one_history(database_url: str, ops: list[tuple[Any, ...]], crash_at: set[int]) -> None:
    stripe = FakeGateway()
    for charge_id, amount in CHARGES.items():
        stripe.add_charge(charge_id, amount)
    plan = CrashPlan(crash_at)
    clock = FakeClock()
    app = _start(database_url, CrashingGateway(stripe, plan), clock)
    token = add_approver(app.extensions["refund_service"].db, "maria", utcnow())

    for op in ops:
        try:
            _perform(app, op, token)
        except Crash:
            app = _restart(app, database_url, CrashingGateway(stripe, plan), clock)
            if op[0] == "request" and op[3] is not None:
                _retry_after_crash(app, op, token, plan, stripe, clock, database_url)

    for _ in range(4):  # the service is back: its worker runs until nothing is due, past every lease
        clock.advance(timedelta(minutes=5))
        try:
            run_worker(app)
        except Crash:
            app = _restart(app, database_url, CrashingGateway(stripe, plan), clock)

    with app.extensions["refund_service"].db.transaction() as conn:
        requests = list(conn.execute(select(refund_requests)))
        logged = list(conn.execute(select(refund_log)))
        pending = list(conn.execute(select(pending_refunds)))
        ledger = {row.charge_id: row for row in conn.execute(select(charge_ledger))}
    app.extensions["refund_service"].db.dispose()

    per_request: dict[str, int] = {}
    for refund in stripe.refunds:
        key = (refund.metadata or {}).get("refund_request_id", "?")
        per_request[key] = per_request.get(key, 0) + 1
    assert all(count == 1 for count in per_request.values()), per_request
    for charge_id, amount in CHARGES.items():
        assert stripe.charges[charge_id].amount_refunded <= amount
        if charge_id in ledger:
            assert ledger[charge_id].reserved == 0, "a reservation outlived its request"
    assert sorted(r.refund_id for r in logged) == sorted(r.refund_id for r in stripe.refunds)
    assert {r.status for r in requests} <= SETTLED, [(r.id, r.status) for r in requests]
    approved = {p.request_id for p in pending if p.status == "approved"}
    assert all(r.status in {"succeeded", "failed"} for r in requests if r.id in approved)


def _start(database_url: str, gateway: Any, clock: FakeClock) -> Flask:
    app = create_app(make_settings(database_url), gateway=gateway, notifier=FakeNotifier(), clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    return app


def _restart(app: Flask, database_url: str, gateway: Any, clock: FakeClock) -> Flask:
    app.extensions["refund_service"].db.dispose()
    clock.advance(timedelta(minutes=3))  # past the dead process's leases, as a restart takes a while
    return _start(database_url, gateway, clock)


def _perform(app: Flask, op: tuple[Any, ...], token: str) -> Any:
    client = app.test_client()
    if op[0] == "request":
        _, charge_id, amount, key = op
        body = {"charge_id": charge_id, **({"amount": amount} if amount else {})}
        headers = {"Authorization": f"Bearer {INTAKE_TOKEN}", **({"Idempotency-Key": key} if key else {})}
        response = client.post("/refund-request", json=body, headers=headers)
    else:
        response = client.post("/approve-refund", json={"pending_id": op[1]},
                               headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, response.get_json()
    return response


def _retry_after_crash(app: Flask, op: tuple[Any, ...], token: str, plan: CrashPlan, stripe: FakeGateway,
                       clock: FakeClock, database_url: str) -> None:
    """The support tool saw no answer, so it sends the same request with the same key again."""
    try:
        _perform(app, op, token)
    except Crash:
        pass
