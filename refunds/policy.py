"""The refund decision: a pure function of plain data, with its explanation.

No Flask, no SQL, no Stripe here. This is the article's single threshold, applied to every
currency alike, kept for its tests; the service decides through `refunds.rules` (issue 9: a policy
file, thresholds per currency, velocity, circuit breaker, disputes, reasons, products), whose
default policy is this threshold in one currency. Both share `Action`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .money import Money


class Action(StrEnum):
    """What happens to a request: it executes alone, waits for people, or is refused (`refunds.rules` only)."""

    AUTO_APPROVE = "auto_approve"
    NEEDS_APPROVAL = "needs_approval"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    """What to do with a refund request, and a sentence a person can read saying why."""

    action: Action
    explanation: str


@dataclass(frozen=True)
class Policy:
    """Refunds at or under `auto_approve_threshold` minor units execute at once; larger ones wait."""

    auto_approve_threshold: int


def decide(refund: Money, policy: Policy) -> Decision:
    """Decide whether `refund` may execute without a person. Never raises for a valid `Money`."""
    limit = Money(policy.auto_approve_threshold, refund.currency)
    if refund.amount <= limit.amount:
        return Decision(
            Action.AUTO_APPROVE,
            f"{refund} is at or under the auto-approve threshold of {limit}",
        )
    return Decision(
        Action.NEEDS_APPROVAL,
        f"{refund} is over the auto-approve threshold of {limit}: a manager must approve it",
    )
