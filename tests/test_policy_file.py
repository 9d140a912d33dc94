"""The policy file: strict validation (each error names the file, the key and the problem), the
default policy, the example file, versions, and `flask --app app policy check FILE`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from refunds.money import Money
from refunds.policy import Action
from refunds.policy_cli import register
from refunds.rules import (
    ChargeFacts,
    Facts,
    PolicyError,
    check_reason,
    decide,
    default_policy,
    load_policy,
    parse_policy,
    stripe_reason,
)
from refunds.rules.loading import default_text

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "policy.example.toml"
MINIMAL = "[thresholds.usd]\nauto_approve = 5000\n"
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def error_for(text: str) -> str:
    with pytest.raises(PolicyError) as raised:
        parse_policy(text.encode(), "policy.toml")
    return str(raised.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("[thresholds.usd]\nauto_approve = -1\n",
     "policy.toml: thresholds.usd.auto_approve: must be a whole number of minor units ≥ 0"),
    ("[thresholds.usd]\nauto_approve = 50.5\n",
     "policy.toml: thresholds.usd.auto_approve: must be a whole number of minor units ≥ 0"),
    ('[thresholds.usd]\nauto_approve = "5000"\n',
     "policy.toml: thresholds.usd.auto_approve: must be a whole number of minor units ≥ 0"),
    ("[thresholds.usd]\nauto_approve = true\n",
     "policy.toml: thresholds.usd.auto_approve: must be a whole number of minor units ≥ 0"),
    ("[thresholds.USD]\nauto_approve = 1\n",
     "policy.toml: thresholds.USD: must be a currency code of 3 lowercase letters, like usd"),
    ("[thresholds.dollars]\nauto_approve = 1\n",
     "policy.toml: thresholds.dollars: must be a currency code of 3 lowercase letters, like usd"),
    ("[thresholds.usd]\nauto_aprove = 1\n",
     "policy.toml: thresholds.usd.auto_aprove: is not a known key (a misspelling?) (and 1 more problem)"),
    ("[thresholds.usd]\ntwo_person = 1\n", "policy.toml: thresholds.usd.auto_approve: is required"),
    ("[disputes]\n", "policy.toml: thresholds: is required"),
    ("[thresholds]\nusd = 3\n", "policy.toml: thresholds.usd: must be a table"),
    (MINIMAL + '[disputes]\ndisputed = "ignore"\n', "policy.toml: disputes.disputed: must be 'review' or 'refuse'"),
    (MINIMAL + "[charge_age]\nreview_after_days = 0\n",
     "policy.toml: charge_age.review_after_days: must be a whole number ≥ 1"),
    (MINIMAL + "[velocity]\nwindow_days = 400\n",
     "policy.toml: velocity.window_days: must be a whole number ≥ 1 and ≤ 366"),
    (MINIMAL + "[velocity]\nwindow_days = 30\nmax_amount = { usd = -5 }\n",
     "policy.toml: velocity.max_amount.usd: must be a whole number of minor units ≥ 0"),
    (MINIMAL + "[circuit_breaker.week]\nmax_count = 5\n",
     "policy.toml: circuit_breaker.week: is not a known key (a misspelling?)"),
    (MINIMAL + "[circuit_breaker.hour]\nmax_amount = { eur = 100 }\n",
     "policy.toml: circuit_breaker.hour.max_amount: has no limit for usd, which the policy auto-approves"),
    (MINIMAL + "[circuit_breaker.day]\nmax_amount = { usd = 100 }\n[products.ebook]\nauto_approve = { gbp = 500 }\n",
     "policy.toml: circuit_breaker.day.max_amount: has no limit for gbp, which the policy auto-approves"),
    (MINIMAL + "[reasons.damaged]\n",
     "policy.toml: reasons.damaged.stripe_reason: is required for a reason that is not one of Stripe's "
     "(duplicate, fraudulent, requested_by_customer)"),
    (MINIMAL + '[reasons."Damaged Item"]\nstripe_reason = "duplicate"\n',
     'policy.toml: reasons."Damaged Item": must be lowercase letters, digits and _, starting with a letter, '
     "at most 40"),
    (MINIMAL + '[reasons.damaged]\nstripe_reason = "broken"\n',
     "policy.toml: reasons.damaged.stripe_reason: must be 'duplicate', 'fraudulent' or 'requested_by_customer'"),
    (MINIMAL + '[products."gift card"]\noutcome = "auto"\n',
     "policy.toml: products.\"gift card\".outcome: must be 'review' or 'refuse'"),
    (MINIMAL + "[charge_share]\nreview_over_percent = 100\n",
     "policy.toml: charge_share.review_over_percent: must be a whole number ≥ 0 and ≤ 99"),
    ("[thresholds.usd]\nauto_approve = 1\nauto_approve = 2\n", "policy.toml: is not valid TOML: "),
])
def test_a_wrong_file_raises_one_error_naming_the_file_the_key_and_the_problem(text: str, expected: str) -> None:
    assert error_for(text).startswith(expected)
    assert "\n" not in error_for(text)


def test_a_file_that_is_not_utf8_is_named_as_such() -> None:
    with pytest.raises(PolicyError, match=r"^policy\.toml: is not UTF-8 text$"):
        parse_policy(b"[thresholds.usd]\nauto_approve = 1 # \xff\n", "policy.toml")


def test_a_missing_file_is_named_with_the_path_as_given(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=rf"^{missing}: cannot be read: No such file or directory$"):
        load_policy(missing)


def test_the_example_file_loads_and_uses_every_rule() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.rule_names == ("disputed", "early_fraud_warning", "velocity", "reason", "product", "charge_age",
                                 "charge_share", "currency", "threshold", "circuit_breaker", "two_person")
    assert policy.customer_window == timedelta(days=30)
    assert policy.needs_store_totals
    assert policy.source == str(EXAMPLE)


def test_a_policy_version_is_the_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(MINIMAL.encode())
    assert load_policy(path).version == hashlib.sha256(MINIMAL.encode()).hexdigest()
    path.write_bytes(MINIMAL.encode() + b"# a comment changes the version too\n")
    assert load_policy(path).version != hashlib.sha256(MINIMAL.encode()).hexdigest()


def test_the_default_policy_version_is_the_sha256_of_its_canonical_text() -> None:
    assert default_policy().version == hashlib.sha256(default_text().encode()).hexdigest()
    assert default_policy(7000).version != default_policy().version
    assert default_policy().version == default_policy(5000, "usd").version


def facts_for(charge_amount: int, refund: Money, *, disputed: bool = False) -> Facts:
    charge = ChargeFacts("ch_1", charge_amount, 0, refund.currency, NOW - timedelta(days=400), disputed=disputed)
    return Facts(refund, charge, "requested_by_customer", "ana@example.com", NOW)


@pytest.mark.parametrize(("amount", "action"), [
    (1, Action.AUTO_APPROVE), (5000, Action.AUTO_APPROVE), (5001, Action.NEEDS_APPROVAL),
    (1_000_000, Action.NEEDS_APPROVAL),
])
def test_the_default_policy_is_the_articles_5000_usd_threshold(amount: int, action: Action) -> None:
    decision = decide(facts_for(2_000_000, Money(amount, "usd")), default_policy())
    assert decision.action is action
    assert decision.approvals == (1 if action is Action.NEEDS_APPROVAL else 0)


def test_the_default_policy_explains_itself_as_the_article_did() -> None:
    assert decide(facts_for(9000, Money(5000, "usd")), default_policy()).explanation == \
        "auto-approved: 50.00 USD is at or under the auto-approve threshold of 50.00 USD"
    assert decide(facts_for(9000, Money(5001, "usd")), default_policy()).explanation == \
        "manual review: 50.01 USD is over the auto-approve threshold of 50.00 USD"


def test_the_default_policy_sends_other_currencies_to_review_and_refuses_disputed_charges() -> None:
    eur = decide(facts_for(9000, Money(1, "eur")), default_policy())
    assert (eur.action, eur.rule) == (Action.NEEDS_APPROVAL, "currency")
    assert eur.explanation == "manual review: the policy has no auto-approve threshold for EUR"
    disputed = decide(facts_for(9000, Money(1, "usd"), disputed=True), default_policy())
    assert (disputed.action, disputed.explanation) == (Action.REFUSE, "refused: charge ch_1 is disputed")


def test_the_default_policy_takes_the_threshold_currency_and_two_person_settings() -> None:
    policy = default_policy(100_000, "jpy", two_person_threshold=500_000)
    assert decide(facts_for(900_000, Money(100_000, "jpy")), policy).action is Action.AUTO_APPROVE
    assert decide(facts_for(900_000, Money(500_001, "jpy")), policy).approvals == 2
    assert decide(facts_for(900_000, Money(100, "usd")), policy).rule == "currency"


def test_a_bad_default_setting_is_refused_naming_the_default_policy() -> None:
    with pytest.raises(PolicyError, match=r"^<default policy>: thresholds\.usd\.auto_approve: must be a whole"):
        default_policy(-1)
    with pytest.raises(PolicyError, match=r"^<default policy>: thresholds\.US: must be a currency code"):
        default_policy(5000, "US")


def test_reasons_outside_the_taxonomy_are_refused_with_the_list_the_api_answers() -> None:
    policy = load_policy(EXAMPLE)
    assert check_reason("damaged_in_transit", policy) == "damaged_in_transit"
    with pytest.raises(Exception, match=r"^reason: must be one of damaged_in_transit, duplicate, fraudulent, "
                                        r"requested_by_customer$") as raised:
        check_reason("changed_mind", policy)
    assert getattr(raised.value, "code", None) == "invalid_request"


def test_a_reason_of_our_own_is_sent_to_stripe_as_the_one_it_names() -> None:
    policy = load_policy(EXAMPLE)
    assert stripe_reason("damaged_in_transit", policy) == "requested_by_customer"
    assert stripe_reason("fraudulent", policy) == "fraudulent"


def run_check(path: Path) -> tuple[int, str]:
    app = Flask("policy-cli-test")
    register(app)
    result = app.test_cli_runner().invoke(args=["policy", "check", str(path)])
    return result.exit_code, result.output


def test_policy_check_prints_the_version_and_rule_count_of_a_valid_file() -> None:
    code, output = run_check(EXAMPLE)
    assert code == 0, output
    assert output == f"{EXAMPLE} is valid: version {load_policy(EXAMPLE).version[:12]}, 11 rules\n"


def test_policy_check_prints_what_is_wrong_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[thresholds.usd]\nauto_approve = -1\n")
    code, output = run_check(path)
    assert code == 1
    assert output == f"{path}: thresholds.usd.auto_approve: must be a whole number of minor units ≥ 0\n"


def test_a_reason_name_longer_than_the_stored_reason_is_refused(tmp_path: Path) -> None:
    """A request's reason is stored in a 32-character column: a longer name could never be requested."""
    path = tmp_path / "policy.toml"
    path.write_text("[thresholds.usd]\nauto_approve = 5000\n[reasons.a_reason_name_of_thirty_three_chars]\n"
                    "stripe_reason = \"requested_by_customer\"\n")
    with pytest.raises(PolicyError, match=r"reasons\.a_reason_name_of_thirty_three_chars: a reason's name is at "
                                          r"most 32 characters"):
        load_policy(path)


def test_the_readmes_policy_example_is_the_example_file_and_loads() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = root.joinpath("README.md").read_text()
    section = readme[readme.index("## Refund policy"):]
    shown = section[section.index("```toml\n") + len("```toml\n"):section.index("\n```\n")] + "\n"
    assert shown == root.joinpath("deploy", "policy.example.toml").read_text()
    assert load_policy(root / "deploy" / "policy.example.toml").rule_names
