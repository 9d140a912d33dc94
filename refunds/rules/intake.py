"""What a request must satisfy before the policy looks at it: a reason the policy accepts, and an
amount Stripe would refund. Pure; raises the domain exceptions the API maps to answers.
"""

from __future__ import annotations

from ..errors import ChargeAlreadyRefunded, ExceedsRefundable, InvalidRequest
from ..money import Money
from .facts import ChargeFacts
from .loading import PolicyConfig

__all__ = ["check_reason", "refundable_amount", "stripe_reason"]


def check_reason(reason: str, policy: PolicyConfig) -> str:
    """`reason` unchanged if the policy accepts it. Raises InvalidRequest ("reason: must be one of
    ...", the API's 400) for a reason the policy's `[reasons]` does not list."""
    if reason not in policy.spec.reasons:
        raise InvalidRequest(f"reason: must be one of {', '.join(sorted(policy.spec.reasons))}")
    return reason


def stripe_reason(reason: str, policy: PolicyConfig) -> str:
    """The reason Stripe is sent for an accepted `reason`: its `stripe_reason`, else itself (one of
    Stripe's own, as validation ensures). Raises InvalidRequest for a reason the policy does not list."""
    mapped = policy.spec.reasons[check_reason(reason, policy)].stripe_reason
    return mapped or reason


def refundable_amount(charge: ChargeFacts, requested: int | None) -> int:
    """The amount to refund: `requested`, or all that remains on the charge when None.

    Raises ChargeAlreadyRefunded or ExceedsRefundable for what Stripe would refuse. A disputed
    charge is not refused here: the policy's `disputed` rule decides (refuse or review).
    """
    remaining = Money(charge.remaining, charge.currency)
    if remaining.amount == 0:
        raise ChargeAlreadyRefunded(f"Charge {charge.charge_id} is already fully refunded.")
    if requested is None:
        return remaining.amount
    if requested > remaining.amount:
        raise ExceedsRefundable(
            f"{Money(requested, charge.currency)} is more than the {remaining} that remains refundable"
            f" on charge {charge.charge_id}."
        )
    return requested
