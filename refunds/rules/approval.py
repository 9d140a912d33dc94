"""Who must approve a refund, and who may: pure functions of the policy, the refund and the approver.

The service still checks that an approver is active and that a link's credential is current (it
reads them from the database); everything that depends only on the refund and the person is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import OverApprovalLimit, SelfApproval
from ..identity import same_person
from ..money import Money
from .loading import PolicyConfig

__all__ = ["ApproverFacts", "approvals_required", "may_approve", "within_limit"]


@dataclass(frozen=True)
class ApproverFacts:
    """An active approver: their name, every identity they are known by (name, emails, Slack id),
    and their approval limits in minor units per currency. `limits` None means no limit in any
    currency; otherwise a currency missing from it is one they cannot approve at all."""

    name: str
    identities: tuple[str, ...]
    limits: Mapping[str, int] | None = None


def approvals_required(refund: Money, policy: PolicyConfig) -> int:
    """How many different people must approve `refund`: 2 above its currency's `two_person`
    threshold, else 1 (also in a currency the policy has no threshold for)."""
    threshold = policy.spec.thresholds.get(refund.currency)
    if threshold is not None and threshold.two_person is not None and refund.amount > threshold.two_person:
        return 2
    return 1


def within_limit(approver: ApproverFacts, refund: Money) -> bool:
    """True if `refund` is at or under `approver`'s limit in its currency, or they have no limits at all.
    The limit part of `may_approve`, for choosing whom to offer a refund (approval links)."""
    if approver.limits is None:
        return True
    limit = approver.limits.get(refund.currency)
    return limit is not None and refund.amount <= limit


def may_approve(approver: ApproverFacts, requested_by: str, refund: Money) -> None:
    """Return if `approver` may approve `refund`, asked for by `requested_by`.

    Raises SelfApproval when `requested_by` names one of the approver's identities (through
    look-alikes: `identity.same_person`), and OverApprovalLimit when the refund is over their limit
    in its currency, or they have limits but none in that currency (a limit in one currency never
    covers another).
    """
    if same_person(requested_by, approver.identities):
        raise SelfApproval(f"{approver.name} asked for this refund and cannot approve it.")
    if within_limit(approver, refund):
        return
    assert approver.limits is not None  # within_limit is True without limits
    limit = approver.limits.get(refund.currency)
    if limit is None:
        held = ", ".join(sorted(c.upper() for c in approver.limits)) or "none"
        raise OverApprovalLimit(f"{approver.name} has no approval limit in {refund.currency.upper()} "
                                f"(their limits are in: {held}), so cannot approve {refund}.")
    raise OverApprovalLimit(f"{refund} is over {approver.name}'s approval limit of {Money(limit, refund.currency)}.")
