"""The approval queue: approve (once enough people did, execute), reject, escalate and expire.

Each decision is one transaction that locks the queue entry, checks every rule against what is stored
at that moment, and moves the request through `transition()`. Stripe is called after it commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection

from . import approvers, deciding, execution, rules, store
from .domain import CREDENTIAL_CHANGED, Actor, Context, CredentialCheck, Outcome, WithDecision
from .errors import (
    AlreadyApproved,
    ExceedsRefundable,
    LinkInvalid,
    NotAnApprover,
    NotPending,
    RequestNotFound,
)
from .money import Money
from .records import PendingRefund, RefundRequest
from .states import PendingStatus, RequestStatus
from .transition import Message, facts, transition

__all__ = ["approvals_required", "approve", "escalate_and_expire", "reject", "required_approvals"]


def approve(ctx: Context, pending_id: int, actor: Actor, *, credential: CredentialCheck | None = None,
            with_decision: WithDecision | None = None) -> Outcome:
    """Record `actor`'s approval; once enough people approved, execute the refund (once).

    Raises RequestNotFound, NotPending (with the current status), NotAnApprover, SelfApproval,
    OverApprovalLimit, AlreadyApproved, or ExceedsRefundable (refunds in progress leave too little;
    nothing is recorded and the request stays pending). With `credential`, raises LinkInvalid and records
    nothing unless it accepts the approver's token hash as read in the deciding transaction.
    `with_decision` runs first in that transaction: its writes commit only with the approval, and what it
    raises is raised with nothing recorded. Returns awaiting_second_approval, approved, processing or failed.
    """
    now = ctx.clock()
    with ctx.db.transaction() as conn:
        if with_decision is not None:
            with_decision(conn)
        pending, request = _open(conn, pending_id)
        _may_approve(conn, actor, request, pending, credential)
        if not store.add_approval(conn, request.id, actor.name, actor.channel, now):
            raise AlreadyApproved(f"{actor.name} already approved pending refund {pending_id}; "
                                  "a second, different approver is needed.")
        names = store.approvers_of(conn, request.id)
        required = approvals_required(ctx, pending.amount, pending.currency)
        said = f"approval {len(names)} of {required}"
        if len(names) < required:
            return _awaiting_another(conn, request, pending_id, actor, said, now)
        approved_by = ", ".join(names)
        store.decide_pending(conn, pending_id, status=PendingStatus.APPROVED, decided_by=approved_by, at=now,
                             note=None)
        if not store.reserve(conn, pending.charge_id, pending.amount, now):
            # Rolls the approval back: the request stays pending, nothing reaches Stripe.
            raise ExceedsRefundable(
                f"{Money(pending.amount, pending.currency)} no longer fits in what remains refundable on"
                f" charge {pending.charge_id}; reject this request or wait for refunds in progress.")
        executing = transition(conn, request, RequestStatus.EXECUTING, at=now, actor=actor.name,
                               channel=actor.channel, action="approved", detail=said,
                               execution_started_at=now, next_attempt_at=now + ctx.execution_lease)
    outcome = execution.execute(ctx, executing, approver=approved_by)
    if outcome.status == "succeeded":
        return Outcome("approved", outcome.request_id, pending_id=pending_id, refund_id=outcome.refund_id)
    return outcome


def _awaiting_another(conn: Connection, request: RefundRequest, pending_id: int, actor: Actor, said: str,
                      now: datetime) -> Outcome:
    """Not a change of status: one approval recorded, the request waits for another approver."""
    store.add_audit(conn, request.id, at=now, action="approved", actor=actor.name, channel=actor.channel,
                    detail=said)
    store.enqueue(conn, request_id=request.id, kind="needs_second_approval", at=now,
                  payload=facts(request, pending_id=pending_id, actor=actor.name))
    return Outcome("awaiting_second_approval", request.id, pending_id=pending_id)


def approvals_required(ctx: Context, amount: int, currency: str) -> int:
    """How many different approvers this refund needs: see `required_approvals`."""
    return required_approvals(ctx.policy, ctx.two_person_threshold, Money(amount, currency))


def required_approvals(policy: rules.PolicyConfig, two_person_threshold: int | None, refund: Money) -> int:
    """Two above the refund's currency's two-person threshold in the policy, else one (`rules.approvals_required`).
    Under the article's policy (no POLICY_FILE), TWO_PERSON_THRESHOLD also holds, as a bare number, for the
    currencies that policy has no threshold for, as it did for every currency before: never fewer approvers."""
    required = rules.approvals_required(refund, policy)
    legacy = not deciding.from_file(policy) and refund.currency not in policy.spec.thresholds \
        and two_person_threshold is not None and refund.amount > two_person_threshold
    return max(required, 2 if legacy else 1)


def reject(ctx: Context, pending_id: int, actor: Actor, note: str | None, *,
           credential: CredentialCheck | None = None, with_decision: WithDecision | None = None) -> Outcome:
    """Reject a pending refund; nothing is sent to Stripe. Raises RequestNotFound, NotPending or NotAnApprover;
    with `credential`, LinkInvalid (nothing recorded), and `with_decision`, as `approve` does."""
    now = ctx.clock()
    with ctx.db.transaction() as conn:
        if with_decision is not None:
            with_decision(conn)
        _, request = _open(conn, pending_id)
        approver = store.get_active_approver(conn, actor.name)
        if approver is None:
            raise NotAnApprover(f"{actor.name} is not an active approver.")
        if credential is not None and not credential(approver.token_hash):
            raise LinkInvalid(CREDENTIAL_CHANGED)
        store.decide_pending(conn, pending_id, status=PendingStatus.REJECTED, decided_by=actor.name, at=now,
                             note=note)
        transition(conn, request, RequestStatus.REJECTED, at=now, actor=actor.name, channel=actor.channel,
                   detail=note, message=Message("rejected", {"actor": actor.name, "note": note}), resolved_at=now)
    return Outcome("rejected", request.id, pending_id=pending_id)


def _open(conn: Connection, pending_id: int) -> tuple[PendingRefund, RefundRequest]:
    """The queue entry, locked until the transaction ends, and its request. Raises RequestNotFound or NotPending."""
    pending = store.lock_pending(conn, pending_id)
    if pending is None:
        raise RequestNotFound(f"No pending refund with id {pending_id}.")
    if pending.status is not PendingStatus.PENDING:
        by = f" (by {pending.decided_by})" if pending.decided_by else ""
        raise NotPending(f"Pending refund {pending_id} is already {pending.status}{by}.", status=pending.status)
    request = store.get_request(conn, pending.request_id)
    assert request is not None  # a queue entry's request is never deleted (foreign key)
    return pending, request


def _may_approve(conn: Connection, actor: Actor, request: RefundRequest, pending: PendingRefund,
                 credential: CredentialCheck | None) -> None:
    """Raises NotAnApprover, LinkInvalid (`credential` refuses their token), SelfApproval or OverApprovalLimit."""
    approver = approvers.active_in(conn, actor.name)
    if approver is None:
        raise NotAnApprover(f"{actor.name} is not an active approver.")
    if credential is not None and not credential(approver.token_hash):
        raise LinkInvalid(CREDENTIAL_CHANGED)
    # Self-approval against every identity (name, emails, Slack user) through look-alikes, and the limit
    # in the refund's own currency: the policy decides (rules.may_approve).
    rules.may_approve(approver.facts, request.requested_by, Money(pending.amount, pending.currency))


def escalate_and_expire(ctx: Context, escalate_after: timedelta | None, expire_after: timedelta | None,
                        limit: int = 50) -> int:
    """Announce again refunds pending longer than `escalate_after`; expire those pending longer than
    `expire_after` (nothing reaches Stripe). Returns how many were touched."""
    now = ctx.clock()
    with ctx.db.read() as conn:  # most passes find nothing: ask without taking the write lock
        due = (expire_after is not None and store.stale_pending(conn, now - expire_after, escalated=None, limit=1)) \
            or (escalate_after is not None
                and store.stale_pending(conn, now - escalate_after, escalated=False, limit=1))
    if not due:
        return 0
    touched = 0
    with ctx.db.transaction() as conn:
        if expire_after is not None:
            for pending in store.stale_pending(conn, now - expire_after, escalated=None, limit=limit):
                touched += _expire(conn, pending, expire_after, now)
        if escalate_after is not None:
            for pending in store.stale_pending(conn, now - escalate_after, escalated=False, limit=limit):
                touched += _escalate(conn, pending, escalate_after, now)
    return touched


def _expire(conn: Connection, pending: PendingRefund, expire_after: timedelta, now: datetime) -> int:
    if not store.decide_pending(conn, pending.id, status=PendingStatus.EXPIRED, decided_by="worker", at=now,
                                note=f"no decision within {expire_after}"):
        return 0
    request = store.get_request(conn, pending.request_id)
    assert request is not None
    transition(conn, request, RequestStatus.EXPIRED, at=now, actor="worker", channel="worker",
               detail=f"pending longer than {expire_after}", message=Message("expired"), resolved_at=now)
    return 1


def _escalate(conn: Connection, pending: PendingRefund, escalate_after: timedelta, now: datetime) -> int:
    """Not a change of status: the request still waits, announced again with how long it has waited."""
    if not store.mark_escalated(conn, pending.id, now):
        return 0
    request = store.get_request(conn, pending.request_id)
    assert request is not None
    store.add_audit(conn, request.id, at=now, action="escalated", actor="worker", channel="worker",
                    detail=f"pending longer than {escalate_after}")
    waited = int((now - pending.requested_at).total_seconds())
    store.enqueue(conn, request_id=request.id, kind="escalated", at=now,
                  payload=facts(request, pending_id=pending.id, waited_seconds=waited))
    return 1
