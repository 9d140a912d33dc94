"""The facts a refund decision is made on: plain data the service gathers before asking the policy.

Nothing here reads a clock, a database or Stripe. `facts_as_json` and `facts_from_json` give the
shape stored with each decision, so a past request can be decided again (replay) on exactly what
was known when it was first decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from ..identity import normalise
from ..money import Money

__all__ = ["LAST_DAY", "LAST_HOUR", "ChargeFacts", "Facts", "Recent", "customer_identity", "facts_as_json",
           "facts_from_json"]

# The circuit breaker's windows: `Facts.auto_approved_last_hour` and `_last_day` cover these, ending at `now`.
LAST_HOUR = timedelta(hours=1)
LAST_DAY = timedelta(hours=24)


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True)
class Recent:
    """Refunds in some window: how many in every currency together, and how much per currency (minor units)."""

    count: int = 0
    amounts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def amount(self, currency: str) -> int:
        """The total in `currency`, 0 when there was none."""
        return self.amounts.get(currency, 0)


@dataclass(frozen=True)
class ChargeFacts:
    """The charge being refunded, as Stripe describes it. Amounts in minor units of `currency`.

    `early_fraud_warning` is True while Stripe Radar has an open (actionable) early fraud warning
    on the charge. `created_at` must be timezone-aware.
    """

    charge_id: str
    amount: int
    amount_refunded: int
    currency: str
    created_at: datetime
    disputed: bool = False
    early_fraud_warning: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", self.currency.lower())
        _aware(self.created_at, "ChargeFacts.created_at")

    @property
    def remaining(self) -> int:
        """What can still be refunded on the charge."""
        return max(self.amount - self.amount_refunded, 0)


@dataclass(frozen=True)
class Facts:
    """Everything the policy looks at for one refund request.

    - `refund`: the amount that would be refunded (see `refundable_amount`), in the charge's currency.
    - `product`: from the request, else from the charge's metadata; None when neither names one.
    - `customer`: see `customer_identity`; None when the charge names no customer at all.
    - `customer_recent`: that customer's other refund requests within the policy's
      `customer_window` (requests not refused or rejected, this one excluded).
    - `auto_approved_last_hour` / `_last_day`: refunds the whole store auto-approved in the
      `LAST_HOUR` and `LAST_DAY` before `now`, this one excluded (needed when
      `PolicyConfig.needs_store_totals`).
    - `now`: when the decision is made, timezone-aware.
    """

    refund: Money
    charge: ChargeFacts
    reason: str
    requested_by: str
    now: datetime
    product: str | None = None
    customer: str | None = None
    customer_recent: Recent = field(default_factory=Recent)
    auto_approved_last_hour: Recent = field(default_factory=Recent)
    auto_approved_last_day: Recent = field(default_factory=Recent)

    def __post_init__(self) -> None:
        _aware(self.now, "Facts.now")
        if self.refund.currency != self.charge.currency:
            raise ValueError(f"refund currency {self.refund.currency} is not the charge's {self.charge.currency}")


def customer_identity(customer_id: str | None, email: str | None, card_fingerprint: str | None) -> str | None:
    """Who the customer is, for velocity: the Stripe customer id, else the email address (normal form,
    so case and width do not make a new customer), else `card:<fingerprint>`; None if none is known."""
    if customer_id:
        return customer_id
    if email and normalise(email):
        return normalise(email)
    if card_fingerprint:
        return f"card:{card_fingerprint}"
    return None


def _recent_json(recent: Recent) -> dict[str, Any]:
    return {"count": recent.count, "amounts": dict(recent.amounts)}


def _recent(data: Mapping[str, Any]) -> Recent:
    return Recent(int(data["count"]), MappingProxyType({str(k): int(v) for k, v in data["amounts"].items()}))


def facts_as_json(facts: Facts) -> dict[str, Any]:
    """A JSON-ready dict of `facts` (datetimes as ISO 8601); `facts_from_json` reads it back equal."""
    charge = facts.charge
    return {
        "refund": {"amount": facts.refund.amount, "currency": facts.refund.currency},
        "charge": {"charge_id": charge.charge_id, "amount": charge.amount, "amount_refunded": charge.amount_refunded,
                   "currency": charge.currency, "created_at": charge.created_at.isoformat(),
                   "disputed": charge.disputed, "early_fraud_warning": charge.early_fraud_warning},
        "reason": facts.reason, "requested_by": facts.requested_by, "now": facts.now.isoformat(),
        "product": facts.product, "customer": facts.customer,
        "customer_recent": _recent_json(facts.customer_recent),
        "auto_approved_last_hour": _recent_json(facts.auto_approved_last_hour),
        "auto_approved_last_day": _recent_json(facts.auto_approved_last_day),
    }


def facts_from_json(data: Mapping[str, Any]) -> Facts:
    """The `Facts` that `facts_as_json` wrote. Raises KeyError, TypeError or ValueError on another shape."""
    charge = data["charge"]
    return Facts(
        refund=Money(int(data["refund"]["amount"]), str(data["refund"]["currency"])),
        charge=ChargeFacts(str(charge["charge_id"]), int(charge["amount"]), int(charge["amount_refunded"]),
                           str(charge["currency"]), datetime.fromisoformat(charge["created_at"]),
                           bool(charge["disputed"]), bool(charge["early_fraud_warning"])),
        reason=str(data["reason"]), requested_by=str(data["requested_by"]),
        now=datetime.fromisoformat(data["now"]), product=data["product"], customer=data["customer"],
        customer_recent=_recent(data["customer_recent"]),
        auto_approved_last_hour=_recent(data["auto_approved_last_hour"]),
        auto_approved_last_day=_recent(data["auto_approved_last_day"]),
    )
