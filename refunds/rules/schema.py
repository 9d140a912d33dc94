"""The policy file's shape: strict pydantic models, one per TOML table.

Every model forbids unknown keys, so a misspelt key is an error, not a silently ignored rule.
Amounts are whole numbers of the currency's minor units (cents for usd, yen for jpy, fils for kwd),
keyed by currency code: a limit in one currency never applies to another. Messages are sentences
that complete "`file: key: ...`" (see `loading.format_errors`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from ..limits import REASON
from ..money import decimals

__all__ = [
    "STRIPE_REASONS", "Breaker", "ChargeAge", "ChargeShare", "Currency", "Disputes", "MinorUnits", "Outcome",
    "PolicySpec", "Product", "Reason", "Threshold", "Velocity", "Window",
]

# What Stripe itself accepts as a refund's `reason`; a reason of our own maps to one of these.
STRIPE_REASONS = ("duplicate", "fraudulent", "requested_by_customer")

# What a rule does when it applies: send the request to people, or refuse it outright.
Outcome = Literal["review", "refuse"]


def _minor_units(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PydanticCustomError("minor_units", "must be a whole number of minor units ≥ 0")
    return value


def _currency(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z]{3}", value):
        raise PydanticCustomError("currency", "must be a currency code of 3 lowercase letters, like usd")
    decimals(value)  # every code has known decimals (money.py): 0, 3, or 2 by default
    return value


def _whole(minimum: int, maximum: int | None = None) -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum \
                or (maximum is not None and value > maximum):
            upto = f" and ≤ {maximum}" if maximum is not None else ""
            raise PydanticCustomError("whole", f"must be a whole number ≥ {minimum}{upto}")
        return value

    return PlainValidator(check)


MinorUnits = Annotated[int, PlainValidator(_minor_units)]
Currency = Annotated[str, PlainValidator(_currency)]
Amounts = dict[Currency, MinorUnits]
def _name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", value):
        raise PydanticCustomError("name", "must be lowercase letters, digits and _, starting with a letter, "
                                  "at most 40")
    return value


_Name = Annotated[str, PlainValidator(_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Threshold(_Strict):
    """`[thresholds.<currency>]`: at or under `auto_approve` a refund may execute alone; above
    `two_person` (when set) two different people must approve it."""

    auto_approve: MinorUnits
    two_person: MinorUnits | None = None


class Disputes(_Strict):
    """`[disputes]`: what happens to a refund of a disputed charge, or of one with an open early
    fraud warning."""

    disputed: Outcome = "refuse"
    early_fraud_warning: Outcome = "review"


class ChargeAge(_Strict):
    """`[charge_age]`: a charge older than `review_after_days` days goes to review."""

    review_after_days: Annotated[int, _whole(1)]


class Velocity(_Strict):
    """`[velocity]`: a customer with more than `max_count` refunds, or more than `max_amount` (per
    currency), within `window_days` days, counting this one, goes to review. A request whose
    customer cannot be identified has `unknown_customer` applied (default: review)."""

    window_days: Annotated[int, _whole(1, 366)]
    max_count: Annotated[int, _whole(1)] | None = None
    max_amount: Amounts = Field(default_factory=dict)
    unknown_customer: Literal["review", "allow"] = "review"


class Window(_Strict):
    """One circuit-breaker window: limits on what was auto-approved in it, this refund included."""

    max_count: Annotated[int, _whole(1)] | None = None
    max_amount: Amounts = Field(default_factory=dict)


class Breaker(_Strict):
    """`[circuit_breaker]`: once auto-approvals in the last hour or day would pass a limit,
    every refund goes to review."""

    hour: Window | None = None
    day: Window | None = None


class Reason(_Strict):
    """`[reasons.<name>]`: an accepted reason. `outcome` forces review or refusal; `stripe_reason`
    is what Stripe is sent (required for a reason that is not one of Stripe's own)."""

    outcome: Outcome | None = None
    stripe_reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None


class Product(_Strict):
    """`[products.<name>]`: thresholds that replace `[thresholds]` for this product, per currency
    (a currency not listed here falls back to `[thresholds]`), or an `outcome` forced for it."""

    auto_approve: Amounts = Field(default_factory=dict)
    outcome: Outcome | None = None


class ChargeShare(_Strict):
    """`[charge_share]`: a refund of more than `review_over_percent` % of its charge goes to review
    when the charge is over `min_charge` in its currency (any charge, in a currency not listed)."""

    review_over_percent: Annotated[int, _whole(0, 99)]
    min_charge: Amounts = Field(default_factory=dict)


def _default_reasons() -> dict[str, Reason]:
    return {name: Reason() for name in STRIPE_REASONS}


class PolicySpec(_Strict):
    """The whole file. Only `[thresholds]` is needed; a missing table is a rule switched off
    (except `[disputes]`, whose defaults refuse disputed charges and review early fraud warnings,
    and `[reasons]`, which defaults to Stripe's three reasons)."""

    thresholds: dict[Currency, Threshold]
    disputes: Disputes = Field(default_factory=Disputes)
    charge_age: ChargeAge | None = None
    velocity: Velocity | None = None
    circuit_breaker: Breaker | None = None
    reasons: dict[_Name, Reason] = Field(default_factory=_default_reasons, min_length=1)
    products: dict[Annotated[str, Field(min_length=1, max_length=200)], Product] = Field(default_factory=dict)
    charge_share: ChargeShare | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PolicySpec:
        for name, reason in self.reasons.items():
            if len(name) > REASON:  # a request's reason is stored in a column this wide
                raise PydanticCustomError("reason_name", "reasons.{name}: a reason's name is at most {limit} "
                                          "characters", {"name": name, "limit": REASON})
            if reason.stripe_reason is None and name not in STRIPE_REASONS:
                raise PydanticCustomError("stripe_reason", "reasons.{name}.stripe_reason: is required for a reason "
                                          "that is not one of Stripe's ({known})",
                                          {"name": name, "known": ", ".join(STRIPE_REASONS)})
        # A breaker with amount limits must limit every currency something auto-approves.
        automatic = set(self.thresholds).union(*(p.auto_approve for p in self.products.values()))
        for label, window in (("hour", self.circuit_breaker and self.circuit_breaker.hour),
                              ("day", self.circuit_breaker and self.circuit_breaker.day)):
            missing = sorted(automatic - set(window.max_amount)) if window and window.max_amount else []
            if missing:
                raise PydanticCustomError("breaker", "circuit_breaker.{label}.max_amount: has no limit for {missing}, "
                                          "which the policy auto-approves", {"label": label,
                                                                             "missing": ", ".join(missing)})
        return self
