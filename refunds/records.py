"""What the store returns: one frozen record per row, with the columns' names and types.

Statuses are the StrEnums of `states.py`, so mypy checks every comparison with them. `as_dict()` gives
the row as a plain dict (columns in table order), the shape the read use cases hand to HTTP and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Self

from sqlalchemy import Row

from .policy import Action
from .states import PendingStatus, RequestStatus

__all__ = ["ApprovalEntry", "ApproverRecord", "AuditEntry", "LogEntry", "OutboxMessage", "PendingRefund",
           "PlannedRefund", "QueueEntry", "RefundRequest"]


class _Record:
    """Built from a row whose columns are exactly the record's fields."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def of(cls, row: Row[*tuple[Any, ...]]) -> Self:
        return cls(**row._mapping)

    @classmethod
    def maybe(cls, row: Row[*tuple[Any, ...]] | None) -> Self | None:
        return None if row is None else cls.of(row)

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict, fields in column order (values are not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class RefundRequest(_Record):
    """One row of `refund_requests`: what the support tool asked for, and where it stands."""

    id: int
    idempotency_key: str | None
    body_fingerprint: str
    charge_id: str | None
    payment_intent_id: str | None
    requested_amount: int | None
    amount: int | None
    currency: str | None
    reason: str
    product: str | None
    customer_email: str | None
    ticket_id: str | None
    note: str | None
    status: RequestStatus
    decision: Action | None  # the policy's, once the charge was read
    policy_explanation: str | None
    requested_by: str
    stripe_idempotency_key: str | None
    stripe_refund_id: str | None
    error_code: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    execution_started_at: datetime | None
    resolved_at: datetime | None
    attempts: int
    next_attempt_at: datetime | None
    # The policy's decision (issue 9): the customer velocity counts, the deciding rule, the policy's version and
    # the facts it decided on (JSON of `rules.facts_as_json`). None before the charge was read.
    customer_key: str | None = None
    policy_rule: str | None = None
    policy_version: str | None = None
    policy_facts: str | None = None
    # The request id (X-Request-Id) it was received with; None for requests received before migration 0010.
    trace_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, RequestStatus):
            object.__setattr__(self, "status", RequestStatus(self.status))
        if self.decision is not None and not isinstance(self.decision, Action):
            object.__setattr__(self, "decision", Action(self.decision))

    def planned(self) -> PlannedRefund:
        """What goes to Stripe: known once the charge was read and the refund decided (from `executing` on).

        Raises ValueError for a request not that far yet (a programming error)."""
        if self.charge_id is None or self.amount is None or self.currency is None \
                or self.stripe_idempotency_key is None:
            raise ValueError(f"refund request {self.id} has no planned refund yet ({self.status})")
        return PlannedRefund(self.charge_id, self.amount, self.currency, self.stripe_idempotency_key)


@dataclass(frozen=True, slots=True)
class PlannedRefund:
    """The refund a decided request sends to Stripe: a charge, an amount with its currency, and a stored key."""

    charge_id: str
    amount: int
    currency: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class PendingRefund(_Record):
    """One entry of the approval queue (`pending_refunds`)."""

    id: int
    request_id: int
    charge_id: str
    amount: int
    currency: str
    reason: str
    requested_at: datetime
    status: PendingStatus
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    escalated_at: datetime | None

    def __post_init__(self) -> None:
        if not isinstance(self.status, PendingStatus):
            object.__setattr__(self, "status", PendingStatus(self.status))


@dataclass(frozen=True, slots=True)
class QueueEntry(_Record):
    """An entry of the approval queue as listed to approvers, with its request's details."""

    pending_id: int
    request_id: int
    charge_id: str
    amount: int
    currency: str
    reason: str
    requested_at: datetime
    product: str | None
    customer_email: str | None
    ticket_id: str | None
    note: str | None
    policy_explanation: str | None


@dataclass(frozen=True, slots=True)
class LogEntry(_Record):
    """One refund Stripe made (`refund_log`): ours (`request_id` set) or made elsewhere."""

    id: int
    refund_id: str
    request_id: int | None
    charge_id: str
    amount: int
    currency: str
    status: str  # Stripe's refund status: pending, requires_action, succeeded, failed, canceled
    processed_at: datetime
    reason: str | None
    decision: str | None
    approved_by: str | None
    product: str | None
    failure_reason: str | None
    status_changed_at: datetime | None
    checked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry(_Record):
    """One line of a request's audit trail."""

    id: int
    request_id: int
    at: datetime
    action: str
    actor: str
    channel: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class ApprovalEntry(_Record):
    """One approver's approval of one request."""

    id: int
    request_id: int
    approver: str
    channel: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ApproverRecord(_Record):
    """One row of `approvers` (`approvers.Approver` is the richer view, with email addresses)."""

    id: int
    name: str
    token_hash: str
    created_at: datetime
    revoked_at: datetime | None
    role: str
    slack_user_id: str | None


@dataclass(frozen=True, slots=True)
class OutboxMessage(_Record):
    """A notification (or a Slack click for the worker) waiting in the outbox."""

    id: int
    request_id: int | None
    kind: str
    payload: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    claimed_until: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    dead_at: datetime | None
