"""A refund request's life, written down once: its statuses and every move allowed between them.

Read `TRANSITIONS` to know everything a request can go through. `transition.transition()` is the one
function that moves a request, and it refuses any move this table does not list.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL", "IN_FLIGHT", "TRANSITIONS", "IllegalTransition", "PendingStatus", "RequestStatus",
           "check_transition"]


class RequestStatus(StrEnum):
    """Where a refund request stands (`refund_requests.status`)."""

    RECEIVED = "received"  # recorded; Stripe not asked yet, or asked and busy (retried with backoff)
    PENDING_APPROVAL = "pending_approval"  # waits in the approval queue for people
    EXECUTING = "executing"  # money reserved; the refund is being created at Stripe (retried until known)
    SUCCEEDED = "succeeded"  # Stripe made the refund
    FAILED = "failed"  # Stripe refused, or the refund failed later: nothing was refunded
    REJECTED = "rejected"  # an approver said no; Stripe never saw it
    EXPIRED = "expired"  # nobody decided in time; Stripe never saw it
    REFUSED = "refused"  # the policy refused it (issue 9); Stripe never saw it


class PendingStatus(StrEnum):
    """Where an entry of the approval queue stands (`pending_refunds.status`)."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


S = RequestStatus
TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    S.RECEIVED: frozenset({
        S.EXECUTING,  # the policy auto-approved it and its money is reserved
        S.PENDING_APPROVAL,  # the policy wants people to decide
        S.FAILED,  # Stripe's charge refuses it (already refunded, disputed, too little left, not found)
        S.REFUSED,  # the policy file refuses it (a rule whose outcome is "refuse")
    }),
    S.PENDING_APPROVAL: frozenset({
        S.EXECUTING,  # enough approvers said yes and its money is reserved
        S.REJECTED,  # an approver said no
        S.EXPIRED,  # nobody decided within the expiry time
    }),
    S.EXECUTING: frozenset({
        S.SUCCEEDED,  # Stripe made the refund
        S.FAILED,  # Stripe refused it for good, or made it already failed or canceled
    }),
    S.SUCCEEDED: frozenset({
        S.FAILED,  # Stripe said later (webhook or poll) that the refund failed or was canceled
    }),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REFUSED: frozenset(),
}
del S

# Requests someone must still carry forward; a lease (`next_attempt_at`) says who and until when.
IN_FLIGHT = (RequestStatus.RECEIVED, RequestStatus.EXECUTING)
FINAL = frozenset(status for status, following in TRANSITIONS.items() if not following)


class IllegalTransition(AssertionError):
    """A programming error: the code tried a move `TRANSITIONS` does not allow."""


def check_transition(current: RequestStatus, to: RequestStatus) -> None:
    """Raises IllegalTransition unless a request may go from `current` to `to`."""
    if to not in TRANSITIONS[current]:
        raise IllegalTransition(f"a refund request cannot go from {current} to {to}")
