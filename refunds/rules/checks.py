"""One function per rule: each looks at the facts and returns a `Finding` when it applies, else None.

Pure. A finding's `explanation` completes "manual review: ..." or "refused: ..."; `compared` holds
the values it compared, JSON-ready. `engine.decide` runs them in precedence order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..money import Money
from ..policy import Action
from .facts import Facts, Recent
from .schema import Outcome, PolicySpec, Window

__all__ = ["Finding", "applicable_threshold", "breaker", "charge_age", "charge_share", "currency", "disputed",
           "early_fraud_warning", "product", "reason", "threshold", "velocity"]

_ACTION: Mapping[Outcome, Action] = {"review": Action.NEEDS_APPROVAL, "refuse": Action.REFUSE}


@dataclass(frozen=True)
class Finding:
    """A rule that applied: what it calls for, a sentence saying why, and the values it compared."""

    rule: str
    action: Action
    explanation: str
    compared: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _found(rule: str, outcome: Outcome, explanation: str, **compared: Any) -> Finding:
    return Finding(rule, _ACTION[outcome], explanation, MappingProxyType(compared))


def disputed(spec: PolicySpec, facts: Facts) -> Finding | None:
    if not facts.charge.disputed:
        return None
    return _found("disputed", spec.disputes.disputed, f"charge {facts.charge.charge_id} is disputed", disputed=True)


def early_fraud_warning(spec: PolicySpec, facts: Facts) -> Finding | None:
    if not facts.charge.early_fraud_warning:
        return None
    return _found("early_fraud_warning", spec.disputes.early_fraud_warning,
                  f"charge {facts.charge.charge_id} has an open early fraud warning", early_fraud_warning=True)


def velocity(spec: PolicySpec, facts: Facts) -> Finding | None:
    """More than `max_count` refunds, or more than `max_amount`, for one customer in the window,
    this refund included."""
    rule = spec.velocity
    if rule is None:
        return None
    days = rule.window_days
    if facts.customer is None:
        if rule.unknown_customer == "allow":
            return None
        return _found("velocity", "review", "the customer cannot be identified (no Stripe customer, email or "
                      "card fingerprint), so their refunds cannot be counted", customer=None)
    count = facts.customer_recent.count + 1
    if rule.max_count is not None and count > rule.max_count:
        return _found("velocity", "review", f"customer {facts.customer} has {count} refunds in {days} days, "
                      f"limit {rule.max_count}", customer=facts.customer, count=count, limit=rule.max_count,
                      window_days=days)
    cur = facts.refund.currency
    limit = rule.max_amount.get(cur)
    total = facts.customer_recent.amount(cur) + facts.refund.amount
    if limit is not None and total > limit:
        return _found("velocity", "review", f"customer {facts.customer} has {Money(total, cur)} in refunds in "
                      f"{days} days, limit {Money(limit, cur)}", customer=facts.customer, amount=total,
                      limit=limit, currency=cur, window_days=days)
    return None


def reason(spec: PolicySpec, facts: Facts) -> Finding | None:
    """A reason whose `outcome` is forced, or a reason the policy does not list (decided again on
    history after the taxonomy changed): that one goes to review."""
    accepted = spec.reasons.get(facts.reason)
    if accepted is None:
        return _found("reason", "review", f"reason {facts.reason} is not one the policy lists", reason=facts.reason)
    if accepted.outcome is None:
        return None
    verb = "always needs review" if accepted.outcome == "review" else "is always refused"
    return _found("reason", accepted.outcome, f"reason {facts.reason} {verb}", reason=facts.reason)


def product(spec: PolicySpec, facts: Facts) -> Finding | None:
    listed = spec.products.get(facts.product) if facts.product is not None else None
    if listed is None or listed.outcome is None:
        return None
    verb = "always needs review" if listed.outcome == "review" else "is always refused"
    return _found("product", listed.outcome, f"product {facts.product} {verb}", product=facts.product)


def charge_age(spec: PolicySpec, facts: Facts) -> Finding | None:
    if spec.charge_age is None:
        return None
    age = facts.now - facts.charge.created_at
    limit = spec.charge_age.review_after_days
    if age.total_seconds() <= limit * 86_400:
        return None
    return _found("charge_age", "review", f"charge {facts.charge.charge_id} is {age.days} days old, limit {limit}",
                  age_days=age.days, limit_days=limit)


def charge_share(spec: PolicySpec, facts: Facts) -> Finding | None:
    """A refund of more than the rule's share of a charge over `min_charge` (integer arithmetic)."""
    rule, charge, refund = spec.charge_share, facts.charge, facts.refund
    if rule is None or charge.amount <= 0:
        return None
    floor = rule.min_charge.get(charge.currency)
    small_charge = floor is not None and charge.amount <= floor
    if small_charge or refund.amount * 100 <= rule.review_over_percent * charge.amount:
        return None
    share = f"{refund.amount * 100 / charge.amount:.1f}".removesuffix(".0")
    over = f" of charges over {Money(floor, charge.currency)}" if floor is not None else ""
    return _found("charge_share", "review", f"{refund} is {share}% of charge {charge.charge_id} of "
                  f"{Money(charge.amount, charge.currency)}; review over {rule.review_over_percent}%{over}",
                  refund=refund.amount, charge=charge.amount, currency=charge.currency,
                  percent=rule.review_over_percent, min_charge=floor)


def applicable_threshold(spec: PolicySpec, facts: Facts) -> tuple[int, str] | None:
    """The auto-approve threshold for this refund and where it comes from: the product's in the
    refund's currency, else the currency's; None when the policy has none for that currency."""
    cur = facts.refund.currency
    listed = spec.products.get(facts.product) if facts.product is not None else None
    if listed is not None and cur in listed.auto_approve:
        return listed.auto_approve[cur], f" for product {facts.product}"
    threshold = spec.thresholds.get(cur)
    return (threshold.auto_approve, "") if threshold is not None else None


def currency(spec: PolicySpec, facts: Facts) -> Finding | None:
    if applicable_threshold(spec, facts) is not None:
        return None
    cur = facts.refund.currency
    return _found("currency", "review", f"the policy has no auto-approve threshold for {cur.upper()}", currency=cur)


def threshold(spec: PolicySpec, facts: Facts) -> Finding | None:
    """Over the applicable threshold: review. At or under it: a finding that allows auto-approval."""
    found = applicable_threshold(spec, facts)
    if found is None:
        return None
    limit, scope = found
    refund = facts.refund
    compared = MappingProxyType({"amount": refund.amount, "currency": refund.currency, "threshold": limit})
    shown = Money(limit, refund.currency)
    if refund.amount <= limit:
        return Finding("threshold", Action.AUTO_APPROVE,
                       f"{refund} is at or under the auto-approve threshold{scope} of {shown}", compared)
    return Finding("threshold", Action.NEEDS_APPROVAL,
                   f"{refund} is over the auto-approve threshold{scope} of {shown}", compared)


def _window(label: str, window: Window | None, recent: Recent, facts: Facts) -> Finding | None:
    if window is None:
        return None
    count = recent.count + 1
    if window.max_count is not None and count > window.max_count:
        return _found("circuit_breaker", "review", f"circuit breaker tripped: this would be auto-approved refund "
                      f"{count} in the last {label}, limit {window.max_count}", window=label, count=count,
                      limit=window.max_count)
    cur, refund = facts.refund.currency, facts.refund
    limit = window.max_amount.get(cur)
    total = recent.amount(cur) + refund.amount
    if limit is not None and total > limit:
        return _found("circuit_breaker", "review", f"circuit breaker tripped: auto-approved refunds in the last "
                      f"{label} would reach {Money(total, cur)}, limit {Money(limit, cur)}", window=label,
                      amount=total, limit=limit, currency=cur)
    return None


def breaker(spec: PolicySpec, facts: Facts) -> Finding | None:
    """Would auto-approving this refund take the store past a limit of the last hour or day? Asked
    only of a refund every other rule would let execute alone: the breaker limits auto-approvals."""
    rule = spec.circuit_breaker
    if rule is None:
        return None
    return _window("hour", rule.hour, facts.auto_approved_last_hour, facts) or \
        _window("day", rule.day, facts.auto_approved_last_day, facts)
