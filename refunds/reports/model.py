"""The daily report's figures as plain data: no SQL, no Flask, no formatting.

Amounts are integer minor units keyed by their currency (lower case, as Stripe writes it); durations
are seconds. `daily.py` fills these from the database, `render.py` and `slack.py` show them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

__all__ = [
    "BUCKETS",
    "EXECUTED_PATHS",
    "PATHS",
    "DailyReport",
    "Durations",
    "Failure",
    "Fees",
    "ProductRate",
    "Queue",
    "Tally",
    "bucket_of",
    "external_path",
    "request_path",
]

# Every way a request (or a refund made elsewhere) ends, in the order reports show them.
PATHS = ("auto_approved", "approved", "rejected", "expired", "failed", "external")
# The paths whose money went back to the customer.
EXECUTED_PATHS = frozenset({"auto_approved", "approved", "external"})
# Time to resolution, by upper bound in seconds (None: longer than a day).
BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("under_1_minute", 60.0), ("under_1_hour", 3600.0), ("under_1_day", 86400.0), ("longer", None),
)


def request_path(status: str, decision: str | None) -> str:
    """How a resolved request ended: succeeded requests by who let them through, the rest by status."""
    if status == "succeeded":
        return "auto_approved" if decision == "auto_approve" else "approved"
    return status


def external_path(status: str | None) -> str:
    """How a refund made outside the service counts: failed when Stripe failed or canceled it."""
    return "failed" if status in ("failed", "canceled") else "external"


def bucket_of(seconds: float) -> str:
    """The name of the first bucket of `BUCKETS` whose bound `seconds` is under."""
    return next(name for name, bound in BUCKETS if bound is None or seconds < bound)


@dataclass
class Tally:
    """How many, and how much per currency. `unknown_amount` counts those whose amount is not known
    (a request that failed before Stripe said what the charge was)."""

    count: int = 0
    amounts: dict[str, int] = field(default_factory=dict)
    unknown_amount: int = 0

    def add(self, amount: int | None, currency: str | None) -> None:
        """Count one more, adding `amount` to its currency when both are known."""
        self.count += 1
        if amount is None or not currency:
            self.unknown_amount += 1
            return
        self.amounts[currency] = self.amounts.get(currency, 0) + int(amount)


@dataclass(frozen=True)
class Durations:
    """Summary of a set of durations in seconds; every statistic is None for an empty set.

    The 90th percentile is the nearest-rank one: the smallest value at least 90% of the set are at or under.
    """

    count: int
    average: float | None
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Durations:
        values = sorted(seconds)
        if not values:
            return cls(0, None, None, None)
        p90 = values[math.ceil(0.9 * len(values)) - 1]
        return cls(len(values), statistics.fmean(values), statistics.median(values), p90)


@dataclass(frozen=True)
class ProductRate:
    """Refunded charges over all charges of a product in the report's window.

    `rate` is None when the product had no charges in the window (refunds of older charges only);
    `too_few_charges` warns that under the report's minimum the rate means little.
    """

    product: str | None
    refunded_charges: int
    charges: int
    rate: float | None
    too_few_charges: bool


@dataclass(frozen=True)
class Fees:
    """Stripe's processing fees on the day's refunded charges, which Stripe keeps when it refunds.

    `kept` is per currency of the balance transaction (the account's settlement currency, not
    necessarily the charge's); `unknown` counts refunded charges whose fee the cache does not hold.
    """

    kept: dict[str, int]
    charges: int
    unknown: int


@dataclass(frozen=True)
class Queue:
    """The approval queue as it stood at `as_of` (the end of the day, or now for a day not over)."""

    as_of: datetime
    size: int
    oldest_requested_at: datetime | None

    @property
    def oldest_age_seconds(self) -> float | None:
        """How long the oldest waiting request had waited at `as_of`."""
        if self.oldest_requested_at is None:
            return None
        return (self.as_of - self.oldest_requested_at).total_seconds()


@dataclass(frozen=True)
class Failure:
    """A refund that failed at Stripe: its request (None for one made elsewhere), and Stripe's reason
    (its `failure_reason`, or the error code it refused the refund with)."""

    request_id: int | None
    refund_id: str | None
    charge_id: str | None
    amount: int | None
    currency: str | None
    reason: str


@dataclass(frozen=True)
class DailyReport:
    """Every figure of one calendar day in `tz`, the UTC window [`start`, `end`) (23 or 25 hours across a
    daylight-saving change). Requests count on the day they were resolved, refunds made outside the
    service on the day Stripe made them, charges on the day they were created."""

    day: date
    tz: str
    start: datetime
    end: datetime
    paths: dict[str, Tally]
    refund_kinds: dict[str, Tally]
    resolution: dict[str, Durations]
    resolution_buckets: dict[str, int]
    approval_wait: Durations
    products: Sequence[ProductRate]
    reasons: dict[str, Tally]
    agents: dict[str, Tally]
    approvers: dict[str, Tally]
    fees: Fees
    queue: Queue
    failures: Sequence[Failure]
    min_charges: int

    @property
    def hours(self) -> float:
        """How long the day was: 24, or 23 / 25 across a daylight-saving change."""
        return (self.end - self.start).total_seconds() / 3600
