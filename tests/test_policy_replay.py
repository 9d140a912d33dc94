"""Replay: past requests decided again under a candidate policy; counts and money per outcome, and
the requests that change. Nothing is read or written but the data passed in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from refunds.money import Money
from refunds.policy import Action
from refunds.rules import ChargeFacts, Facts, PastDecision, decide, default_policy, parse_policy, replay

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
CANDIDATE_TOML = """
[thresholds.usd]
auto_approve = 2000
[thresholds.jpy]
auto_approve = 5000
[reasons.requested_by_customer]
[reasons.duplicate]
[reasons.fraudulent]
outcome = "review"
"""
CANDIDATE = parse_policy(CANDIDATE_TOML.encode(), "candidate.toml")


def past(request_id: int, amount: int, currency: str = "usd", reason: str = "requested_by_customer") -> PastDecision:
    charge = ChargeFacts(f"ch_{request_id}", 100_000, 0, currency, NOW - timedelta(days=3))
    facts = Facts(Money(amount, currency), charge, reason, "ana", NOW, customer="cus_1")
    return PastDecision(request_id, facts, decide(facts, default_policy()).action)


# Under the default policy (5000 usd): 1, 2, 4 auto; 3 and 5 (jpy: no threshold) review.
HISTORY = [past(1, 1500), past(2, 4000), past(3, 9000), past(4, 1000, reason="fraudulent"), past(5, 3000, "jpy")]


def test_replay_counts_requests_and_money_per_outcome_before_and_under_the_candidate() -> None:
    report = replay(HISTORY, CANDIDATE)
    assert report.before[Action.AUTO_APPROVE].as_json() == {"count": 3, "amounts": {"usd": 6500}}
    assert report.before[Action.NEEDS_APPROVAL].as_json() == {"count": 2, "amounts": {"jpy": 3000, "usd": 9000}}
    assert report.after[Action.AUTO_APPROVE].as_json() == {"count": 2, "amounts": {"jpy": 3000, "usd": 1500}}
    assert report.after[Action.NEEDS_APPROVAL].as_json() == {"count": 3, "amounts": {"usd": 14000}}
    assert report.after[Action.REFUSE].count == 0


def test_replay_lists_the_requests_that_change_outcome_with_the_new_explanation() -> None:
    report = replay(HISTORY, CANDIDATE)
    assert [(c.request_id, c.before, c.after.action) for c in report.changes] == [
        (2, Action.AUTO_APPROVE, Action.NEEDS_APPROVAL),
        (4, Action.AUTO_APPROVE, Action.NEEDS_APPROVAL),
        (5, Action.NEEDS_APPROVAL, Action.AUTO_APPROVE),
    ]
    assert report.lines() == [
        f"candidate policy {CANDIDATE.version[:12]}: 3 request(s) change outcome",
        "auto_approve: 3 (65.00 USD) as decided, 2 (3,000 JPY, 15.00 USD) under the candidate",
        "needs_approval: 2 (3,000 JPY, 90.00 USD) as decided, 3 (140.00 USD) under the candidate",
        "refuse: 0 as decided, 0 under the candidate",
        "request 2 (40.00 USD): auto_approve -> manual review: 40.00 USD is over the auto-approve threshold of "
        "20.00 USD",
        "request 4 (10.00 USD): auto_approve -> manual review: reason fraudulent always needs review",
        "request 5 (3,000 JPY): needs_approval -> auto-approved: 3,000 JPY is at or under the auto-approve "
        "threshold of 5,000 JPY",
    ]


def test_replay_as_json_is_plain_json_with_the_candidates_version() -> None:
    as_json = json.loads(json.dumps(replay(HISTORY, CANDIDATE).as_json()))
    assert as_json["candidate_version"] == CANDIDATE.version
    assert as_json["changes"][0]["after"]["rule"] == "threshold"
    assert as_json["after"]["auto_approve"] == {"count": 2, "amounts": {"jpy": 3000, "usd": 1500}}


def test_replaying_the_same_policy_changes_nothing() -> None:
    report = replay(HISTORY, default_policy())
    assert report.changes == ()
    assert report.before == report.after
