"""Intake: record a refund request, read its charge, and execute it or queue it for approval.

The request is recorded before any Stripe call, so nothing accepted is ever lost; a request whose lease
runs out (a crash, Stripe unreachable) is carried on by `retry_due`, or by a replay of its
Idempotency-Key. Each step hands the request as it wrote it to the next: nothing is read back.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from . import deciding, execution, store
from .deciding import Decided
from .domain import INTAKE, Context, Outcome, RefundCommand
from .errors import (
    ChargeAlreadyRefunded,
    ChargeDisputed,
    DuplicatePending,
    ExceedsRefundable,
    IdempotencyMismatch,
    RefundError,
    RefusedByPolicy,
    StripeMisconfigured,
    StripeUnavailable,
)
from .logs import current_request_id, logging_for
from .money import Money
from .policy import Action
from .records import RefundRequest
from .rules import ChargeFacts, check_reason, refundable_amount
from .states import IN_FLIGHT, PendingStatus, RequestStatus
from .stripe_gateway import ChargeInfo
from .transition import LostRace, Message, transition

__all__ = ["advance", "advance_by_id", "check_refundable", "new_request", "read_charge", "request_refund",
           "retry_due", "stripe_key"]


def request_refund(ctx: Context, command: RefundCommand, *, idempotency_key: str | None = None,
                   channel: str = "api") -> Outcome:
    """Accept a refund request: record it, read the charge, then execute it or queue it.

    Raises IdempotencyMismatch, or InvalidRequest for a reason the policy does not list (nothing recorded).
    Returns auto_approved, pending_approval, processing (Stripe is retried in the background), refused (the
    policy refused it: refused_by_policy with the explanation) or failed (with the reason: charge_not_found,
    charge_already_refunded, amount_exceeds_refundable, charge_disputed, duplicate_pending, or Stripe's code).
    A known `idempotency_key` gets the answer its first use got, or where that request got to since.
    """
    check_reason(command.reason, ctx.policy)
    fingerprint = command.fingerprint()
    try:
        # Recorded at once, not looked up first: a new key (nearly every request) then costs no read. A key
        # already used (a retry, or a concurrent duplicate that won the race) fails the insert's unique
        # constraint, and that transaction rolls back having changed nothing.
        request = _receive(ctx, command, fingerprint, idempotency_key, channel)
    except IntegrityError:
        if idempotency_key is None:
            raise
        replay = _replay(ctx, idempotency_key, fingerprint)
        assert replay is not None
        return replay
    outcome = advance(ctx, request)
    return dataclasses.replace(outcome, status="auto_approved") if outcome.status == "succeeded" else outcome


def _explained(outcome: Outcome, request: RefundRequest) -> Outcome:
    """`outcome` with how the policy decided `request` (as written when it was decided)."""
    return dataclasses.replace(outcome, rule=request.policy_rule, explanation=request.policy_explanation,
                               policy_version=request.policy_version)


def _receive(ctx: Context, command: RefundCommand, fingerprint: str, idempotency_key: str | None,
             channel: str) -> RefundRequest:
    """Record the request (status received, leased to us) with its audit row; returns it as written."""
    received = new_request(ctx, command, fingerprint, idempotency_key)
    now = received.created_at
    values = received.as_dict()
    del values["id"]
    with ctx.db.transaction() as conn:
        request_id = store.insert_request(conn, values)
        store.add_audit(conn, request_id, at=now, action="requested", actor=command.requested_by or INTAKE.name,
                        channel=channel)
    return dataclasses.replace(received, id=request_id)


def stripe_key(request: RefundRequest) -> str:
    """The idempotency key Stripe will see for `request`: the one stored, else a new one to store.

    Derived from our own request id and stored when the request is decided, before any call that could refund:
    every retry, restart or worker then sends this same key. The suffix keeps two databases (staging and
    production on one Stripe account) from ever sharing a key.
    """
    return request.stripe_idempotency_key or f"refund-request-{request.id}-{secrets.token_hex(6)}"


def new_request(ctx: Context, command: RefundCommand, fingerprint: str, idempotency_key: str | None) -> RefundRequest:
    """The row a new request is recorded as (id 0 until inserted), received now and leased to the caller."""
    now = ctx.clock()
    return RefundRequest(
        id=0, idempotency_key=idempotency_key, body_fingerprint=fingerprint, charge_id=command.charge_id,
        payment_intent_id=command.payment_intent_id, requested_amount=command.amount, amount=None, currency=None,
        reason=command.reason, product=command.product, customer_email=command.customer_email,
        ticket_id=command.ticket_id, note=command.note, status=RequestStatus.RECEIVED, decision=None,
        policy_explanation=None, requested_by=command.requested_by or INTAKE.name, stripe_idempotency_key=None,
        stripe_refund_id=None, error_code=None, error_message=None, created_at=now, updated_at=now,
        execution_started_at=None, resolved_at=None, attempts=0, next_attempt_at=now + ctx.execution_lease,
        trace_id=current_request_id(),
    )


def advance(ctx: Context, request: RefundRequest) -> Outcome:
    """Take a request in flight one step further: assess it if received, then execute it if executing.

    The caller holds its lease. Transient Stripe failures reschedule it with backoff (processing).
    """
    if request.status is RequestStatus.RECEIVED:
        assessed = _assess(ctx, request)
        if isinstance(assessed, Outcome):
            return assessed
        request = assessed
    if request.status is RequestStatus.EXECUTING:
        return _explained(execution.execute(ctx, request), request)
    return _explained(execution.execution_outcome(request, success="succeeded"), request)


def advance_by_id(ctx: Context, request_id: int) -> None:
    """`advance` for a request known by id (read first)."""
    with ctx.db.read() as conn:
        request = store.get_request(conn, request_id)
    if request is not None:
        # The worker carries the request on long after its HTTP request ended: its lines carry that request's id.
        with logging_for(request.trace_id or current_request_id()):
            advance(ctx, request)


def retry_due(ctx: Context, limit: int = 20) -> int:
    """Advance requests whose lease ran out (a crash, or a transient Stripe failure).

    Safe with several workers: each request is claimed in one transaction (SKIP LOCKED on PostgreSQL),
    and Stripe sees the request's stored idempotency key every time. Returns how many were tried.
    """
    now = ctx.clock()
    with ctx.db.read() as conn:  # most passes find nothing: ask without taking the write lock
        if not store.any_due_request(conn, now):
            return 0
    with ctx.db.transaction() as conn:
        due = store.claim_due_requests(conn, now, ctx.execution_lease, limit)
    for request_id in due:
        advance_by_id(ctx, request_id)
    return len(due)


def read_charge(ctx: Context, request: RefundRequest) -> tuple[ChargeInfo, Money]:
    """The request's charge from Stripe and the refund it allows. Raises what Stripe would refuse (ChargeNotFound,
    ChargeAlreadyRefunded, ExceedsRefundable; ChargeDisputed when the policy refuses disputed charges, as the
    article's does) and StripeUnavailable or StripeMisconfigured (transient)."""
    charge = ctx.gateway.get_charge(charge_id=request.charge_id if not request.payment_intent_id else None,
                                    payment_intent_id=request.payment_intent_id,
                                    early_fraud_warnings=deciding.from_file(ctx.policy))
    if charge.disputed and ctx.policy.spec.disputes.disputed == "refuse":
        # The policy's `disputed` rule, asked first as before: Stripe would refuse the refund anyway.
        raise ChargeDisputed(f"Charge {charge.charge_id} is disputed; it cannot be refunded while the dispute is open.")
    facts = ChargeFacts(charge.charge_id, charge.amount, charge.amount_refunded, charge.currency,
                        charge.created_at or ctx.clock())
    return charge, Money(refundable_amount(facts, request.requested_amount), charge.currency)


def _assess(ctx: Context, request: RefundRequest) -> RefundRequest | Outcome:
    """Read the charge, check what Stripe would refuse, decide under the policy, reserve the money.

    The decision is made in the transaction that reserves and routes (see `deciding`). Returns the request moved
    to executing, or the outcome when it goes no further now.
    """
    try:
        charge, refund = read_charge(ctx, request)
    except (StripeUnavailable, StripeMisconfigured) as exc:
        return execution.retry_later(ctx, request, exc)
    except RefundError as exc:
        return execution.fail(ctx, request, exc)
    amount = refund.amount
    now = ctx.clock()
    try:
        with ctx.db.transaction() as conn:
            store.note_charge(conn, charge_id=charge.charge_id, currency=charge.currency, amount=charge.amount,
                              stripe_refunded=charge.amount_refunded, at=now)
            decided = deciding.decide_in(conn, ctx, request, charge, refund, now)
            if decided.decision.action is Action.REFUSE:
                return _refuse(conn, request, charge, refund, decided, now)
            if decided.decision.action is not Action.AUTO_APPROVE \
                    or store.reserve(conn, charge.charge_id, amount, now):
                return _route(ctx, conn, request, charge, refund, decided, now)
            # Roll back what deciding wrote (a circuit-breaker trip ended by a refund that then did not go).
            raise _NoRoom()
    except _NoRoom:
        pass
    except DuplicatePending as exc:
        return execution.fail(ctx, request, exc)
    except (LostRace, IntegrityError):
        # Another worker assessed it meanwhile (it moved the request, or queued it first: one queue entry
        # per request); our transaction rolled back. Answer as the request stands.
        return _stored_answer(ctx, request.id)
    return execution.fail(ctx, request, ExceedsRefundable(
        f"{refund} does not fit in what remains refundable on charge {charge.charge_id}"
        " once the refunds already in progress are counted."))


class _NoRoom(Exception):
    """The decision said execute, but the money no longer fits: its transaction must not commit."""


def _refuse(conn: Connection, request: RefundRequest, charge: ChargeInfo, refund: Money, decided: Decided,
            now: datetime) -> Outcome:
    """The policy refused the request: it ends `refused`, with the decision stored; Stripe never sees it. Slack
    is told only when the support tool was answered `processing` before (it would not know otherwise)."""
    error = RefusedByPolicy(decided.decision.explanation)
    message = Message("failed", {"error_code": error.code, "error_message": error.message}) \
        if request.attempts > 0 else None
    transition(conn, request, RequestStatus.REFUSED, at=now, actor="policy", channel="api",
               action=decided.decision.action.value, detail=decided.detail, message=message,
               charge_id=charge.charge_id, amount=refund.amount, currency=refund.currency, **decided.columns,
               error_code=error.code, error_message=error.message, resolved_at=now, next_attempt_at=None)
    return Outcome("refused", request.id, error=error, rule=decided.decision.rule,
                   explanation=decided.decision.explanation, policy_version=decided.decision.policy_version)


def _route(ctx: Context, conn: Connection, request: RefundRequest, charge: ChargeInfo, refund: Money,
           decided_by_policy: Decided, now: datetime) -> RefundRequest | Outcome:
    """Move a received request to executing (money reserved) or into the approval queue."""
    decision = decided_by_policy.decision
    decided: dict[str, Any] = {
        "charge_id": charge.charge_id, "amount": refund.amount, "currency": refund.currency,
        **decided_by_policy.columns, "error_code": None, "error_message": None,
        "stripe_idempotency_key": stripe_key(request),
    }
    if decision.action is Action.AUTO_APPROVE:
        return transition(conn, request, RequestStatus.EXECUTING, at=now, actor="policy", channel="api",
                          action=decision.action.value, detail=decided_by_policy.detail, **decided,
                          execution_started_at=now, next_attempt_at=now + ctx.execution_lease)
    # Queued first, so the message can name its queue entry; a request has one entry at most (a unique
    # key), so a second assessor fails here and rolls back, as it would on the guarded update.
    pending_id = store.insert_pending(conn, {
        "request_id": request.id, "charge_id": charge.charge_id, "amount": refund.amount,
        "currency": refund.currency, "reason": request.reason, "requested_at": request.created_at,
        "status": PendingStatus.PENDING,
    })
    transition(conn, request, RequestStatus.PENDING_APPROVAL, at=now, actor="policy", channel="api",
               action=decision.action.value, detail=decided_by_policy.detail, **decided,
               execution_started_at=None, next_attempt_at=None,
               message=Message("needs_approval", {"pending_id": pending_id}))
    return Outcome("pending_approval", request.id, pending_id=pending_id, rule=decision.rule,
                   explanation=decision.explanation, policy_version=decision.policy_version)


def _replay(ctx: Context, idempotency_key: str, fingerprint: str) -> Outcome | None:
    """The answer already given for `idempotency_key`, or None if the key is new.

    While a concurrent duplicate is still on its first attempt, waits a little for its result.
    """
    deadline = time.monotonic() + ctx.duplicate_wait_seconds
    while True:
        with ctx.db.read() as conn:
            request = store.get_request_by_idempotency_key(conn, idempotency_key)
            if request is None:
                return None
            if request.body_fingerprint != fingerprint:
                raise IdempotencyMismatch("This Idempotency-Key was already used with a different request body.")
            outcome = _intake_outcome(conn, request)
        # Its lease ran out: whoever held it died. Take it over rather than wait for the worker. The snapshot
        # only says whether to try: the claim is a guarded UPDATE that checks the lease again.
        now = ctx.clock()
        if request.status in IN_FLIGHT and request.next_attempt_at is not None \
                and request.next_attempt_at <= now and _claim(ctx, request.id, now):
            advance(ctx, request)
            continue
        if outcome.status != "processing" or request.attempts > 0 or time.monotonic() >= deadline:
            return outcome
        time.sleep(0.05)


def _claim(ctx: Context, request_id: int, now: datetime) -> bool:
    with ctx.db.transaction() as conn:
        return store.claim_request(conn, request_id, now, ctx.execution_lease)


def _stored_answer(ctx: Context, request_id: int) -> Outcome:
    with ctx.db.read() as conn:
        request = store.get_request(conn, request_id)
        assert request is not None
        return _intake_outcome(conn, request)


def _intake_outcome(conn: Connection, request: RefundRequest) -> Outcome:
    """The intake's answer for a stored request: the first answer, or where it got to since."""
    if request.decision is Action.NEEDS_APPROVAL:
        pending = store.get_pending_for_request(conn, request.id)
        return _explained(Outcome("pending_approval", request.id, pending_id=pending.id if pending else None),
                          request)
    if request.status is RequestStatus.REFUSED:
        return _explained(Outcome("refused", request.id, error=RefusedByPolicy(request.error_message or "")), request)
    return _explained(execution.execution_outcome(request, success="auto_approved"), request)


def check_refundable(charge: ChargeInfo, requested: int | None) -> int:
    """The amount to refund: `requested`, or all that remains when None.

    Raises ChargeDisputed, ChargeAlreadyRefunded or ExceedsRefundable for what Stripe would refuse.
    """
    remaining = Money(charge.remaining, charge.currency)
    if charge.disputed:
        raise ChargeDisputed(f"Charge {charge.charge_id} is disputed; it cannot be refunded while the dispute is open.")
    if remaining.amount == 0:
        raise ChargeAlreadyRefunded(f"Charge {charge.charge_id} is already fully refunded.")
    if requested is None:
        return remaining.amount
    if requested > remaining.amount:
        raise ExceedsRefundable(f"{Money(requested, charge.currency)} is more than the {remaining} that remains"
                                f" refundable on charge {charge.charge_id}.")
    return requested
