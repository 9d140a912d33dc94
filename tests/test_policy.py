from refunds.money import Money, format_money
from refunds.policy import Action, Policy, decide


def test_amount_at_the_threshold_is_auto_approved() -> None:
    decision = decide(Money(5000, "usd"), Policy(5000))
    assert decision.action is Action.AUTO_APPROVE
    assert decision.explanation == "50.00 USD is at or under the auto-approve threshold of 50.00 USD"


def test_amount_one_cent_over_the_threshold_needs_approval() -> None:
    decision = decide(Money(5001, "usd"), Policy(5000))
    assert decision.action is Action.NEEDS_APPROVAL
    assert "50.01 USD is over the auto-approve threshold of 50.00 USD" in decision.explanation


def test_threshold_zero_sends_everything_to_a_manager() -> None:
    assert decide(Money(1, "eur"), Policy(0)).action is Action.NEEDS_APPROVAL


def test_zero_decimal_currencies_are_formatted_in_whole_units() -> None:
    assert format_money(1500, "jpy") == "1,500 JPY"
    assert format_money(123456, "usd") == "1,234.56 USD"
    assert format_money(1234, "kwd") == "1.234 KWD"
    assert str(Money(5, "EUR")) == "0.05 EUR"
