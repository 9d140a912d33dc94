"""Deciding a request under the policy (issue 9): gather the facts, ask `rules.decide`, remember a breaker trip.

The pure engine decides; this module only gathers what it needs. It runs inside the write transaction that
reserves and routes the request, so the history it reads cannot change before the decision is written: on
SQLite that transaction is exclusive, and on PostgreSQL a policy file's decisions take an advisory lock
(`policy_store.lock_deciding`), so several workers cannot all pass the circuit breaker at once. The article's
policy (no POLICY_FILE) needs no history, and costs no statement beyond today's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from . import policy_store, store
from .domain import Context
from .errors import DuplicatePending
from .limits import CUSTOMER_KEY
from .money import Money
from .policy import Action
from .records import RefundRequest
from .rules import (
    DEFAULT_SOURCE,
    LAST_DAY,
    LAST_HOUR,
    ChargeFacts,
    Decision,
    Facts,
    PolicyConfig,
    Recent,
    customer_identity,
    decide,
    facts_as_json,
)
from .stripe_gateway import ChargeInfo

__all__ = ["BREAKER_MESSAGE", "Decided", "decide_in", "decide_read_only", "from_file"]

# The outbox kind of the one Slack message sent when the circuit breaker trips.
BREAKER_MESSAGE = "circuit_breaker"


@dataclass(frozen=True)
class Decided:
    """A decision and the facts it was made on; `columns` are what the request row stores of it."""

    decision: Decision
    facts: Facts

    @property
    def detail(self) -> str:
        """The decision's audit line: the explanation, the rule and the policy's version."""
        return (f"{self.decision.explanation} (rule {self.decision.rule}, policy "
                f"{self.decision.policy_version[:12]})")

    @property
    def columns(self) -> dict[str, Any]:
        return {"decision": self.decision.action, "policy_explanation": self.decision.explanation,
                "policy_rule": self.decision.rule, "policy_version": self.decision.policy_version,
                "policy_facts": json.dumps(facts_as_json(self.facts), sort_keys=True),
                "customer_key": self.facts.customer[:CUSTOMER_KEY] if self.facts.customer else None}


def from_file(policy: PolicyConfig) -> bool:
    """True for a policy read from POLICY_FILE: only then are early fraud warnings looked up at Stripe and a
    second request for a charge with one waiting refused (`duplicate_pending`); the article's policy keeps
    today's behaviour and cost."""
    return policy.source != DEFAULT_SOURCE


def _facts(conn: Connection, ctx: Context, request: RefundRequest, charge: ChargeInfo, refund: Money,
           now: datetime) -> Facts:
    policy = ctx.policy
    customer = customer_identity(charge.customer_id, charge.email or request.customer_email, charge.card_fingerprint)
    recent = last_hour = last_day = Recent()
    if customer is not None and policy.customer_window is not None:
        recent = policy_store.customer_recent(conn, customer[:CUSTOMER_KEY], now - policy.customer_window, request.id)
    if policy.needs_store_totals:
        last_hour, last_day = policy_store.auto_approved_since(conn, now - LAST_HOUR, now - LAST_DAY, request.id)
    return Facts(
        refund=refund,
        charge=ChargeFacts(charge.charge_id, charge.amount, charge.amount_refunded, charge.currency,
                           charge.created_at or now, charge.disputed, charge.early_fraud_warning),
        reason=request.reason, requested_by=request.requested_by, now=now,
        product=request.product or charge.product, customer=customer, customer_recent=recent,
        auto_approved_last_hour=last_hour, auto_approved_last_day=last_day,
    )


def decide_in(conn: Connection, ctx: Context, request: RefundRequest, charge: ChargeInfo, refund: Money,
              now: datetime) -> Decided:
    """Decide `request` in the caller's write transaction. With a policy file, refuses a charge that already has
    a refund waiting (raises DuplicatePending, naming it). When the circuit breaker trips, enqueues one Slack
    message per trip; when it lets a refund through again, the trip ends."""
    policy = ctx.policy
    if from_file(policy):
        policy_store.lock_deciding(conn)
        waiting = policy_store.pending_for_charge(conn, charge.charge_id)
        if waiting is not None:
            raise DuplicatePending(f"Charge {charge.charge_id} already has a refund waiting for approval: "
                                   f"pending refund {waiting}.", pending_id=waiting)
    facts = _facts(conn, ctx, request, charge, refund, now)
    decision = decide(facts, policy)
    if policy.needs_store_totals:
        _remember_breaker(conn, request, decision, facts, now)
    return Decided(decision, facts)


def _remember_breaker(conn: Connection, request: RefundRequest, decision: Decision, facts: Facts,
                      now: datetime) -> None:
    if decision.breaker_tripped:
        if not policy_store.open_trip(conn):
            policy_store.start_trip(conn, request.id, decision.explanation, now)
            store.enqueue(conn, request_id=request.id, kind=BREAKER_MESSAGE, at=now, payload={
                "request_id": request.id, "charge_id": facts.charge.charge_id, "amount": facts.refund.amount,
                "currency": facts.refund.currency, "reason": request.reason, "product": facts.product,
                "ticket_id": request.ticket_id, "policy_explanation": decision.explanation,
                "compared": dict(decision.compared), "policy_version": decision.policy_version})
    elif decision.action is Action.AUTO_APPROVE:
        policy_store.end_trip(conn, now)


def decide_read_only(ctx: Context, request: RefundRequest, charge: ChargeInfo, refund: Money,
                     now: datetime) -> Decided:
    """What `decide_in` would decide now, from a read-only snapshot; writes nothing and tells nobody (dry run).
    Raises DuplicatePending as `decide_in` does."""
    with ctx.db.read() as conn:
        if from_file(ctx.policy):
            waiting = policy_store.pending_for_charge(conn, charge.charge_id)
            if waiting is not None:
                raise DuplicatePending(f"Charge {charge.charge_id} already has a refund waiting for approval: "
                                       f"pending refund {waiting}.", pending_id=waiting)
        facts = _facts(conn, ctx, request, charge, refund, now)
    return Decided(decide(facts, ctx.policy), facts)
