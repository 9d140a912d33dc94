"""Money is an integer amount of minor units with its currency; formatting happens here, at the edge."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["THREE_DECIMAL", "ZERO_DECIMAL", "Money", "decimals", "format_money"]

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
