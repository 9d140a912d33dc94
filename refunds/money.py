"""Money is an integer amount of minor units with its currency; formatting happens here, at the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["THREE_DECIMAL", "ZERO_DECIMAL", "Money", "decimals", "format_money", "parse_major"]

# Stripe's zero-decimal currencies: amounts are whole units.
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())


@dataclass(frozen=True)
class Money:
    """An amount in the currency's minor units (cents for USD, yen for JPY)."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError("Money.amount must be an int of minor units")
        object.__setattr__(self, "currency", self.currency.lower())

    def __str__(self) -> str:
        return format_money(self.amount, self.currency)

    def as_json(self) -> dict[str, object]:
        """The JSON shape used in API responses: minor units, currency and a display string."""
        return {"amount": self.amount, "currency": self.currency, "display": str(self)}


def decimals(currency: str) -> int:
    """How many digits after the point people write for `currency`."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def format_money(amount: int, currency: str) -> str:
    """`format_money(12345, "usd")` returns `"123.45 USD"`; `format_money(1500, "jpy")` returns `"1,500 JPY"`."""
    places = decimals(currency)
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(amount), 10**places)
    text = f"{whole:,}"
    if places:
        text += f".{minor:0{places}d}"
    return f"{sign}{text} {currency.upper()}"


def parse_major(text: str, currency: str) -> Money:
    """`parse_major("500.00", "usd")` is `Money(50000, "usd")`: an amount as people write it (major units).

    `"5,000"` is not accepted (write 5000); at most as many digits after the point as `currency`
    has (`decimals`). Raises ValueError for anything else, saying what is wrong, or a negative amount.
    """
    code = currency.strip().lower()
    if not re.fullmatch(r"[a-z]{3}", code):
        raise ValueError(f"{currency!r} is not a currency code (three letters, like usd)")
    places = decimals(code)
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an amount of {code.upper()} (like 500 or 500.00, 0 or more)")
    whole, minor = match.group(1), match.group(2) or ""
    if len(minor) > places:
        raise ValueError(f"{text!r}: {code.upper()} has {places} digit(s) after the point")
    return Money(int(whole) * 10**places + int(minor.ljust(places, "0") or "0"), code)
