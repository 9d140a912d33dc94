"""The rules of the refund policy, one table row each, their precedence, currencies with 0 and 3
decimals, who may approve, and a property: nothing past a threshold or a tripped breaker executes alone."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refunds.errors import ChargeAlreadyRefunded, ExceedsRefundable, OverApprovalLimit, SelfApproval
from refunds.money import Money
from refunds.policy import Action
from refunds.rules import (
    ApproverFacts,
    ChargeFacts,
    Facts,
    PolicyConfig,
    Recent,
    approvals_required,
    customer_identity,
    decide,
    facts_as_json,
    facts_from_json,
    may_approve,
    parse_policy,
    refundable_amount,
)

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
REVIEW, AUTO, REFUSE = Action.NEEDS_APPROVAL, Action.AUTO_APPROVE, Action.REFUSE

# Every rule on; each table row below changes one fact (or one line of policy) from the baseline.
POLICY = """
[thresholds.usd]
auto_approve = 5000
two_person = 50000
[thresholds.jpy]
auto_approve = 7000
[thresholds.kwd]
auto_approve = 15000
[disputes]
disputed = "refuse"
early_fraud_warning = "review"
[charge_age]
review_after_days = 90
[velocity]
window_days = 30
max_count = 3
max_amount = { usd = 20000 }
[circuit_breaker.hour]
max_count = 20
max_amount = { usd = 50000, jpy = 70000, kwd = 150000 }
[circuit_breaker.day]
max_count = 100
max_amount = { usd = 200000, jpy = 280000, kwd = 600000 }
[reasons.requested_by_customer]
[reasons.duplicate]
[reasons.fraudulent]
outcome = "review"
[reasons.chargeback_threat]
outcome = "refuse"
stripe_reason = "requested_by_customer"
[products.ebook]
auto_approve = { usd = 2000 }
[products."gift card"]
outcome = "review"
[products.weapon]
outcome = "refuse"
[charge_share]
review_over_percent = 50
min_charge = { usd = 20000 }
"""


def policy(text: str = POLICY) -> PolicyConfig:
    return parse_policy(text.encode(), "policy.toml")


def recent(count: int = 0, **amounts: int) -> Recent:
    return Recent(count, MappingProxyType(amounts))


def facts(amount: int = 3000, currency: str = "usd", *, charge_amount: int = 10000, age_days: int = 10,
          disputed: bool = False, efw: bool = False, **changes: Any) -> Facts:
    """A refund the baseline policy auto-approves; `changes` replace Facts fields."""
    charge = ChargeFacts("ch_1", charge_amount, 0, currency, NOW - timedelta(days=age_days), disputed, efw)
    base = Facts(Money(amount, currency), charge, "requested_by_customer", "ana@example.com", NOW,
                 product=None, customer="cus_123")
    return dataclasses.replace(base, **changes)


CASES: list[tuple[str, Facts, Action, str, str]] = [
    ("under the threshold", facts(), AUTO, "threshold",
     "auto-approved: 30.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("at the threshold", facts(5000), AUTO, "threshold",
     "auto-approved: 50.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("over the threshold", facts(5001), REVIEW, "threshold",
     "manual review: 50.01 USD is over the auto-approve threshold of 50.00 USD"),
    ("currency without a threshold", facts(1, "eur"), REVIEW, "currency",
     "manual review: the policy has no auto-approve threshold for EUR"),
    ("disputed charge", facts(disputed=True), REFUSE, "disputed", "refused: charge ch_1 is disputed"),
    ("early fraud warning", facts(efw=True), REVIEW, "early_fraud_warning",
     "manual review: charge ch_1 has an open early fraud warning"),
    ("old charge", facts(age_days=91), REVIEW, "charge_age", "manual review: charge ch_1 is 91 days old, limit 90"),
    ("charge exactly 90 days old", facts(age_days=90), AUTO, "threshold",
     "auto-approved: 30.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("fourth refund in 30 days", facts(customer_recent=recent(3)), REVIEW, "velocity",
     "manual review: customer cus_123 has 4 refunds in 30 days, limit 3"),
    ("third refund in 30 days", facts(customer_recent=recent(2, usd=1000)), AUTO, "threshold",
     "auto-approved: 30.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("customer amount over the limit", facts(customer_recent=recent(1, usd=17001)), REVIEW, "velocity",
     "manual review: customer cus_123 has 200.01 USD in refunds in 30 days, limit 200.00 USD"),
    ("customer amount in another currency", facts(customer_recent=recent(1, eur=99999)), AUTO, "threshold",
     "auto-approved: 30.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("unknown customer", facts(customer=None), REVIEW, "velocity",
     "manual review: the customer cannot be identified (no Stripe customer, email or card fingerprint), "
     "so their refunds cannot be counted"),
    ("reason that forces review", facts(reason="fraudulent"), REVIEW, "reason",
     "manual review: reason fraudulent always needs review"),
    ("reason that forces refusal", facts(reason="chargeback_threat"), REFUSE, "reason",
     "refused: reason chargeback_threat is always refused"),
    ("reason no longer listed", facts(reason="goodwill"), REVIEW, "reason",
     "manual review: reason goodwill is not one the policy lists"),
    ("product under its own threshold", facts(2000, product="ebook"), AUTO, "threshold",
     "auto-approved: 20.00 USD is at or under the auto-approve threshold for product ebook of 20.00 USD"),
    ("product over its own threshold", facts(2001, product="ebook"), REVIEW, "threshold",
     "manual review: 20.01 USD is over the auto-approve threshold for product ebook of 20.00 USD"),
    ("product without a threshold in the currency", facts(7000, "jpy", charge_amount=90000, product="ebook"), AUTO,
     "threshold",
     "auto-approved: 7,000 JPY is at or under the auto-approve threshold of 7,000 JPY"),
    ("product that forces review", facts(product="gift card"), REVIEW, "product",
     "manual review: product gift card always needs review"),
    ("product that is refused", facts(product="weapon"), REFUSE, "product",
     "refused: product weapon is always refused"),
    ("full refund of a large charge", facts(4000, charge_amount=20001), AUTO, "threshold",
     "auto-approved: 40.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("most of a large charge", facts(4000, charge_amount=7000, product="ebook"), REVIEW, "threshold",
     "manual review: 40.00 USD is over the auto-approve threshold for product ebook of 20.00 USD"),
    ("small charge refunded in full", facts(5000, charge_amount=5000), AUTO, "threshold",
     "auto-approved: 50.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("breaker: count in the last hour", facts(auto_approved_last_hour=recent(20, usd=100)), REVIEW, "circuit_breaker",
     "manual review: circuit breaker tripped: this would be auto-approved refund 21 in the last hour, limit 20"),
    ("breaker: amount in the last day", facts(auto_approved_last_day=recent(5, usd=197001)), REVIEW,
     "circuit_breaker", "manual review: circuit breaker tripped: auto-approved refunds in the last day would reach "
     "2,000.01 USD, limit 2,000.00 USD"),
    ("breaker: just under every limit", facts(auto_approved_last_hour=recent(19, usd=47000),
                                              auto_approved_last_day=recent(99, usd=197000)), AUTO, "threshold",
     "auto-approved: 30.00 USD is at or under the auto-approve threshold of 50.00 USD"),
    ("zero-decimal currency at its threshold", facts(7000, "jpy", charge_amount=90000), AUTO, "threshold",
     "auto-approved: 7,000 JPY is at or under the auto-approve threshold of 7,000 JPY"),
    ("zero-decimal currency over its threshold", facts(7001, "jpy", charge_amount=90000), REVIEW, "threshold",
     "manual review: 7,001 JPY is over the auto-approve threshold of 7,000 JPY"),
    ("three-decimal currency at its threshold", facts(15000, "kwd", charge_amount=90000), AUTO, "threshold",
     "auto-approved: 15.000 KWD is at or under the auto-approve threshold of 15.000 KWD"),
    ("three-decimal currency over its threshold", facts(15001, "kwd", charge_amount=90000), REVIEW, "threshold",
     "manual review: 15.001 KWD is over the auto-approve threshold of 15.000 KWD"),
]


@pytest.mark.parametrize(("name", "given_facts", "action", "rule", "explanation"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_decides_and_explains_with_the_values_it_compared(
        name: str, given_facts: Facts, action: Action, rule: str, explanation: str) -> None:
    decision = decide(given_facts, policy())
    assert (decision.action, decision.rule, decision.explanation) == (action, rule, explanation)
    assert decision.policy_version == policy().version
    assert decision.approvals == (1 if action is REVIEW else 0)


def test_charge_share_reviews_most_of_a_large_charge_but_not_a_small_partial() -> None:
    share = policy("[thresholds.usd]\nauto_approve = 100000\n[charge_share]\nreview_over_percent = 50\n"
                   "min_charge = { usd = 20000 }\n")
    full = decide(facts(30000, charge_amount=30000), share)
    assert (full.action, full.rule) == (REVIEW, "charge_share")
    assert full.explanation == ("manual review: 300.00 USD is 100% of charge ch_1 of 300.00 USD; review over 50% "
                                "of charges over 200.00 USD")
    assert dict(full.compared) == {"refund": 30000, "charge": 30000, "currency": "usd", "percent": 50,
                                     "min_charge": 20000}
    assert decide(facts(15000, charge_amount=30000), share).action is AUTO  # exactly half
    assert decide(facts(15001, charge_amount=30000), share).rule == "charge_share"
    assert decide(facts(20000, charge_amount=20000), share).action is AUTO  # the charge is not over 200.00
    assert decide(facts(20000, "usd", charge_amount=20001), share).rule == "charge_share"


def test_charge_share_applies_to_any_charge_in_a_currency_without_a_minimum() -> None:
    share = policy("[thresholds.jpy]\nauto_approve = 100000\n[charge_share]\nreview_over_percent = 50\n")
    decision = decide(facts(600, "jpy", charge_amount=1000), share)
    assert decision.explanation == "manual review: 600 JPY is 60% of charge ch_1 of 1,000 JPY; review over 50%"


def test_a_disputed_charge_can_be_sent_to_review_instead_of_refused() -> None:
    lenient = policy('[thresholds.usd]\nauto_approve = 5000\n[disputes]\ndisputed = "review"\n'
                     'early_fraud_warning = "refuse"\n')
    assert decide(facts(disputed=True), lenient).action is REVIEW
    assert decide(facts(efw=True), lenient).explanation == "refused: charge ch_1 has an open early fraud warning"


def test_velocity_can_let_an_unidentified_customer_through() -> None:
    text = '[thresholds.usd]\nauto_approve = 5000\n[velocity]\nwindow_days = 7\nunknown_customer = "allow"\n'
    assert decide(facts(customer=None), policy(text)).action is AUTO


def test_refuse_beats_review_and_review_beats_auto_whatever_the_order_of_rules() -> None:
    everything = facts(99999, "usd", age_days=400, efw=True, reason="fraudulent", product="weapon",
                       customer_recent=recent(50), auto_approved_last_hour=recent(500))
    decision = decide(everything, policy())
    assert (decision.action, decision.rule) == (REFUSE, "product")
    assert [f.rule for f in decision.findings] == ["early_fraud_warning", "velocity", "reason", "product",
                                                   "charge_age", "threshold"]


@pytest.mark.parametrize(("changes", "rule"), [
    ({"disputed": True, "efw": True}, "disputed"),
    ({"efw": True, "customer_recent": recent(9)}, "early_fraud_warning"),
    ({"customer_recent": recent(9), "reason": "fraudulent"}, "velocity"),
    ({"reason": "fraudulent", "product": "gift card"}, "reason"),
    ({"product": "gift card", "age_days": 100}, "product"),
    ({"age_days": 100, "amount": 9000, "charge_amount": 30000}, "charge_age"),
    ({"amount": 19000, "charge_amount": 30000}, "charge_share"),
    ({"currency": "eur", "amount": 1}, "currency"),
    ({"amount": 9000, "auto_approved_last_hour": recent(500)}, "threshold"),
])
def test_among_rules_of_equal_strength_the_first_in_precedence_decides(changes: dict[str, Any], rule: str) -> None:
    decision = decide(facts(**changes), policy())
    assert decision.rule == rule
    assert decision.action is (REFUSE if rule == "disputed" else REVIEW)


def test_the_breaker_is_asked_only_of_refunds_that_would_execute_alone() -> None:
    reviewed = decide(facts(9000, auto_approved_last_hour=recent(500)), policy())
    assert not reviewed.breaker_tripped
    tripped = decide(facts(auto_approved_last_hour=recent(500)), policy())
    assert tripped.breaker_tripped
    assert tripped.as_json()["breaker_tripped"] is True
    assert dict(tripped.compared) == {"window": "hour", "count": 501, "limit": 20}


def test_two_approvers_above_the_currencys_two_person_threshold_only() -> None:
    assert decide(facts(50000, charge_amount=90000), policy()).approvals == 1
    two = decide(facts(50001, charge_amount=90000), policy())
    assert two.approvals == 2
    assert two.explanation.endswith("; 2 approvers, as it is over the two-person threshold of 500.00 USD")
    assert approvals_required(Money(10**9, "jpy"), policy()) == 1  # jpy has no two-person threshold
    assert approvals_required(Money(10**9, "eur"), policy()) == 1  # nor any currency the policy does not list


def test_a_decision_as_json_carries_every_finding_and_the_policy_version() -> None:
    decision = decide(facts(9000, reason="fraudulent"), policy())
    as_json = json.loads(json.dumps(decision.as_json()))
    assert as_json["action"] == "needs_approval"
    assert as_json["rule"] == "reason"
    assert as_json["policy_version"] == policy().version
    assert [f["rule"] for f in as_json["findings"]] == ["reason", "threshold"]
    assert as_json["findings"][1]["compared"] == {"amount": 9000, "currency": "usd", "threshold": 5000}


def test_facts_survive_their_stored_json_and_decide_the_same() -> None:
    original = facts(4500, product="ebook", customer_recent=recent(2, usd=300), auto_approved_last_day=recent(4, usd=9))
    stored = json.loads(json.dumps(facts_as_json(original)))
    assert facts_from_json(stored) == original
    assert decide(facts_from_json(stored), policy()) == decide(original, policy())


def test_facts_refuse_naive_datetimes_and_a_refund_in_another_currency() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ChargeFacts("ch_1", 1, 0, "usd", datetime(2026, 1, 1))  # naive: the point of the test
    with pytest.raises(ValueError, match="refund currency eur is not the charge's usd"):
        dataclasses.replace(facts(), refund=Money(1, "eur"))


@pytest.mark.parametrize(("customer_id", "email", "fingerprint", "expected"), [
    ("cus_123", "ana@example.com", "fp_1", "cus_123"),
    (None, " ANA@Example.com ", "fp_1", "ana@example.com"),
    (None, "ｂｏｂ@example.com", None, "bob@example.com"),
    (None, "", "fp_1", "card:fp_1"),
    (None, None, None, None),
])
def test_a_customer_is_their_stripe_id_else_their_email_else_their_card(
        customer_id: str | None, email: str | None, fingerprint: str | None, expected: str | None) -> None:
    assert customer_identity(customer_id, email, fingerprint) == expected


def test_the_refundable_amount_is_what_was_asked_or_all_that_remains() -> None:
    charge = ChargeFacts("ch_1", 10000, 2500, "usd", NOW)
    assert refundable_amount(charge, None) == 7500
    assert refundable_amount(charge, 7500) == 7500
    with pytest.raises(ExceedsRefundable, match=r"^75\.01 USD is more than the 75\.00 USD that remains"):
        refundable_amount(charge, 7501)
    with pytest.raises(ChargeAlreadyRefunded):
        refundable_amount(ChargeFacts("ch_1", 10000, 10000, "usd", NOW), None)


def test_a_disputed_charge_is_left_to_the_policy_not_refused_as_unrefundable() -> None:
    assert refundable_amount(ChargeFacts("ch_1", 10000, 0, "usd", NOW, disputed=True), None) == 10000


MARIA = ApproverFacts("maria", ("maria", "maria@example.com", "U024MARIA"), {"usd": 10000, "kwd": 5000})


def test_an_approver_may_approve_up_to_their_limit_in_the_refunds_currency() -> None:
    may_approve(MARIA, "ana@example.com", Money(10000, "usd"))
    may_approve(MARIA, "ana@example.com", Money(5000, "kwd"))
    with pytest.raises(OverApprovalLimit, match=r"^100\.01 USD is over maria's approval limit of 100\.00 USD\.$"):
        may_approve(MARIA, "ana@example.com", Money(10001, "usd"))
    with pytest.raises(OverApprovalLimit, match=r"^5\.001 KWD is over maria's approval limit of 5\.000 KWD\.$"):
        may_approve(MARIA, "ana@example.com", Money(5001, "kwd"))


def test_a_limit_in_one_currency_does_not_cover_another() -> None:
    with pytest.raises(OverApprovalLimit, match=r"^maria has no approval limit in EUR \(their limits are in: KWD, "
                                                r"USD\), so cannot approve 0\.01 EUR\.$"):
        may_approve(MARIA, "ana@example.com", Money(1, "eur"))


def test_an_approver_without_limits_may_approve_any_amount_in_any_currency() -> None:
    may_approve(ApproverFacts("li", ("li",)), "ana", Money(10**12, "jpy"))


@pytest.mark.parametrize("requested_by", ["maria", " MARIA ", "Maria <maria+refunds@example.com>", "<@U024MARIA>",
                                          "mar\u0456a"])
def test_nobody_approves_their_own_refund_in_any_spelling(requested_by: str) -> None:
    with pytest.raises(SelfApproval, match=r"^maria asked for this refund and cannot approve it\.$"):
        may_approve(MARIA, requested_by, Money(1, "usd"))


BREAKER_POLICY = policy("""
[thresholds.usd]
auto_approve = 5000
[thresholds.jpy]
auto_approve = 7000
[thresholds.kwd]
auto_approve = 15000
[products.ebook]
auto_approve = { usd = 2000, kwd = 30000 }
[circuit_breaker.hour]
max_count = 10
max_amount = { usd = 20000, jpy = 30000, kwd = 40000 }
[circuit_breaker.day]
max_count = 30
max_amount = { usd = 60000, jpy = 90000, kwd = 120000 }
""")
LIMITS = {"hour": (10, {"usd": 20000, "jpy": 30000, "kwd": 40000}),
          "day": (30, {"usd": 60000, "jpy": 90000, "kwd": 120000})}
THRESHOLDS = {"usd": 5000, "jpy": 7000, "kwd": 15000}
PRODUCT_THRESHOLDS = {"usd": 2000, "kwd": 30000}


def expected_threshold(currency: str, product: str | None) -> int | None:
    """The threshold this test expects to apply: the product's in that currency, else the currency's."""
    by_product = PRODUCT_THRESHOLDS if product == "ebook" else {}
    return by_product.get(currency, THRESHOLDS.get(currency))


def near(draw: st.DrawFn, edge: int) -> int:
    """Anywhere, or within 2 of `edge`: the off-by-one cases random amounts almost never hit."""
    return max(draw(st.one_of(st.integers(1, 200_000), st.integers(edge - 2, edge + 2))), 0)


@st.composite
def any_facts(draw: st.DrawFn) -> Facts:
    currency = draw(st.sampled_from(["usd", "jpy", "kwd", "eur"]))
    product = draw(st.sampled_from([None, "ebook", "mug"]))
    amount = max(near(draw, expected_threshold(currency, product) or 1), 1)

    def window(label: str) -> Recent:
        max_count, max_amount = LIMITS[label]
        busy = recent(near(draw, max_count - 1) % (max_count + 3),
                      **{currency: near(draw, max_amount.get(currency, 0) - amount)})
        return draw(st.one_of(st.just(recent()), st.just(busy)))

    return facts(amount, currency, charge_amount=amount + draw(st.integers(0, 200_000)), product=product,
                 auto_approved_last_hour=window("hour"), auto_approved_last_day=window("day"))


@settings(max_examples=500)
@given(any_facts())
def test_nothing_is_auto_approved_above_its_threshold_or_past_a_circuit_breaker(given_facts: Facts) -> None:
    decision = decide(given_facts, BREAKER_POLICY)
    if decision.action is not AUTO:
        return
    refund = given_facts.refund
    threshold = expected_threshold(refund.currency, given_facts.product)
    assert threshold is not None and refund.amount <= threshold
    for label, seen in (("hour", given_facts.auto_approved_last_hour), ("day", given_facts.auto_approved_last_day)):
        max_count, max_amount = LIMITS[label]
        assert seen.count + 1 <= max_count
        assert seen.amount(refund.currency) + refund.amount <= max_amount[refund.currency]
