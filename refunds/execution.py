"""Execution: send a decided refund to Stripe once, and record what Stripe said.

The caller holds the request's lease (it moved the request to `executing`). Stripe always sees the
request's stored idempotency key; a transient failure reschedules the request with backoff, a refusal
fails it and gives its reserved money back. No transaction is open during a Stripe call.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection

from . import store
from .db import Database
from .domain import Context, Outcome
from .errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    RefundError,
    RequestNotFound,
    StripeMisconfigured,
    StripeUnavailable,
)
from .policy import Action
from .records import RefundRequest
from .rules import stripe_reason
from .rules.schema import STRIPE_REASONS
from .states import RequestStatus
from .stripe_gateway import RefundInfo, RefundParams
from .transition import LostRace, Message, transition

__all__ = ["IDEMPOTENCY_KEY_SAFE_FOR", "backoff", "execute", "execution_outcome", "fail", "retry_later",
           "stored_outcome"]

log = logging.getLogger(__name__)

# Stripe keeps idempotency keys at least 24 hours; stop trusting them a little before.
IDEMPOTENCY_KEY_SAFE_FOR = timedelta(hours=23)


def execute(ctx: Context, request: RefundRequest, *, approver: str | None = None) -> Outcome:
    """Create `request`'s refund at Stripe and record the result. `approver`: who approved it, when the
    caller knows (else it is looked up for a request that needed approval).

    Raises RequestNotFound unless the request is `executing`. Returns succeeded, failed (Stripe refused
    for good, or made the refund already failed) or processing (retried later).
    """
    if request.status is not RequestStatus.EXECUTING:
        raise RequestNotFound(f"Refund request {request.id} is not executing.")
    try:
        refund = _existing_refund(ctx, request) or _create_refund(ctx, request)
    except (StripeUnavailable, StripeMisconfigured) as exc:
        return retry_later(ctx, request, exc)
    except RefundError as exc:
        return fail(ctx, request, exc)
    now = ctx.clock()
    # Stripe accepted the call but the refund itself is already failed or canceled: the money did not go
    # back, so the request must not say it did.
    failed = RefundError(f"Stripe reports refund {refund.refund_id} {refund.status}"
                         + (f": {refund.failure_reason}" if refund.failure_reason else "."),
                         code=f"refund_{refund.status}") if refund.status in ("failed", "canceled") else None
    try:
        with ctx.db.transaction() as conn:
            _record(conn, request, refund, failed, approver, now)
    except LostRace:  # a retrying worker recorded this same refund first: answer as it did
        return stored_outcome(ctx.db, request.id, success="succeeded")
    log.info("refund request %s executed as %s (%s)", request.id, refund.refund_id, refund.status)
    if failed:
        return Outcome("failed", request.id, refund_id=refund.refund_id, error=failed)
    return Outcome("succeeded", request.id, refund_id=refund.refund_id)


def _record(conn: Connection, request: RefundRequest, refund: RefundInfo, failed: RefundError | None,
            approver: str | None, now: datetime) -> None:
    """The request's end, the ledger, the log row, the audit row and Slack's message, in one transaction."""
    planned = request.planned()
    if approver is None and request.decision is not Action.AUTO_APPROVE:
        pending = store.get_pending_for_request(conn, request.id)
        approver = pending.decided_by if pending is not None else None
    if failed:
        message = Message("failed", {"refund_id": refund.refund_id, "error_code": refund.failure_reason or failed.code,
                                     "error_message": failed.message})
    else:
        message = Message("approved" if approver else "auto_approved", {"refund_id": refund.refund_id,
                                                                        "actor": approver})
    transition(conn, request, RequestStatus.FAILED if failed else RequestStatus.SUCCEEDED, at=now,
               actor="stripe", channel="stripe", action="failed" if failed else "refunded",
               detail=f"{refund.refund_id} ({refund.status})", message=message,
               stripe_refund_id=refund.refund_id, resolved_at=now, next_attempt_at=None,
               error_code=failed.code if failed else None, error_message=failed.message if failed else None)
    store.release(conn, planned.charge_id, planned.amount, now, refunded=failed is None)
    store.insert_log(conn, {
        "refund_id": refund.refund_id, "request_id": request.id, "charge_id": refund.charge_id,
        "amount": refund.amount, "currency": refund.currency, "status": refund.status, "processed_at": now,
        "reason": request.reason, "decision": "approved" if approver else "auto_approved",
        "approved_by": approver, "product": request.product, "status_changed_at": now,
        "failure_reason": refund.failure_reason,
    })


def _existing_refund(ctx: Context, request: RefundRequest) -> RefundInfo | None:
    """After a long outage or crash, the refund Stripe may already have made for this request.

    Stripe keeps idempotency keys for at least 24 hours; past that, the same key would make a second
    refund, so we look for ours (by the key in its metadata) before creating one.
    """
    started = request.execution_started_at or request.created_at
    if ctx.clock() - started < IDEMPOTENCY_KEY_SAFE_FOR:
        return None
    planned = request.planned()
    return ctx.gateway.find_refund(charge_id=planned.charge_id, metadata_key="refund_key",
                                   metadata_value=planned.idempotency_key)


def _create_refund(ctx: Context, request: RefundRequest) -> RefundInfo:
    """Create the request's refund at Stripe, or find the one an earlier use of its key made.

    Raises what the gateway raises; `IdempotencyKeyReused` only once no refund of the charge carries this
    request's key.
    """
    planned = request.planned()
    metadata = {"refund_request_id": str(request.id), "refund_key": planned.idempotency_key,
                "source": "refund-service"}
    if request.ticket_id:
        metadata["ticket_id"] = str(request.ticket_id)[:500]
    if request.trace_id:
        metadata["trace_id"] = request.trace_id[:500]  # at most 100 characters (logs.sane_request_id)
    params = RefundParams(charge_id=planned.charge_id, payment_intent_id=request.payment_intent_id,
                          amount=planned.amount, reason=_stripe_reason(ctx, request.reason),
                          idempotency_key=planned.idempotency_key,
                          metadata=metadata)
    try:
        return ctx.gateway.create_refund(params)
    except IdempotencyKeyReused:
        # Stripe ran this key before with other parameters: say, an attempt that timed out on our side, then
        # a deploy that changed the metadata before the retry. That first call may well have refunded, and
        # failing would release money that is already gone and tell Slack nothing was refunded. Every refund
        # this service makes carries its key in `refund_key` metadata, so the charge's refunds tell.
        found = ctx.gateway.find_refund(charge_id=planned.charge_id, metadata_key="refund_key",
                                        metadata_value=planned.idempotency_key)
    if found is None:
        # No refund of the charge carries the key, so the key's first use refunded nothing, and Stripe will
        # never run a call with this key again: failing (and releasing the money) is safe, and a new request
        # gets a new key.
        raise IdempotencyKeyReused(
            f"Stripe saw this request's idempotency key used before with different parameters and will"
            f" not run it; no refund of charge {planned.charge_id} carries the key, so nothing was refunded."
        ) from None
    log.warning("refund request %s: Stripe refused its key as used with other parameters; recording %s, "
                "the refund that first use made", request.id, found.refund_id)
    return found


def _stripe_reason(ctx: Context, reason: str) -> str:
    """The reason Stripe is sent: the policy's mapping; for a reason a changed policy no longer lists, itself
    when Stripe knows it, else `requested_by_customer`."""
    try:
        return stripe_reason(reason, ctx.policy)
    except InvalidRequest:
        return reason if reason in STRIPE_REASONS else "requested_by_customer"


def fail(ctx: Context, request: RefundRequest, error: RefundError) -> Outcome:
    """Fail a received or executing request for good; give back its reserved money; tell Slack when nobody
    else knows. Returns failed (also when another process moved the request first: it stands as they left it)."""
    now = ctx.clock()
    executing = request.status is RequestStatus.EXECUTING
    # A refusal at intake is answered to the support tool at once; anything later (after an approval, or
    # after "processing") must reach people through Slack.
    message = Message("failed", {"error_code": error.code, "error_message": error.message}) \
        if executing or request.attempts > 0 else None
    try:
        with ctx.db.transaction() as conn:
            transition(conn, request, RequestStatus.FAILED, at=now, actor="stripe", channel="stripe",
                       detail=f"{error.code}: {error.message}", message=message, error_code=error.code,
                       error_message=error.message, resolved_at=now, next_attempt_at=None)
            if executing:
                planned = request.planned()
                store.release(conn, planned.charge_id, planned.amount, now, refunded=False)
    except LostRace:
        pass
    log.warning("refund request %s failed: %s", request.id, error.code)
    return Outcome("failed", request.id, error=error)


def retry_later(ctx: Context, request: RefundRequest, error: RefundError) -> Outcome:
    """Stripe could not be reached or refused our configuration: try again after a backoff. Returns processing."""
    now = ctx.clock()
    delay = backoff(ctx.retry_backoff, request.attempts + 1, cap=timedelta(minutes=10))
    with ctx.db.transaction() as conn:
        store.reschedule(conn, request.id, expect_status=request.status, attempts=request.attempts + 1,
                         next_attempt_at=now + delay, error_code=error.code, error_message=error.message, at=now)
    log.warning("refund request %s waits for Stripe (%s); next attempt in %ss",
                request.id, error.code, int(delay.total_seconds()))
    return Outcome("processing", request.id)


def backoff(base: timedelta, attempt: int, *, cap: timedelta) -> timedelta:
    """Wait before retry number `attempt` (1, 2, ...): base, 2 x base, 4 x base ... at most `cap`."""
    delay: timedelta = base * 2 ** max(attempt - 1, 0)
    return delay if delay < cap else cap


def stored_outcome(db: Database, request_id: int, *, success: str) -> Outcome:
    """Where request `request_id` got to, as stored (`success` names a refund made)."""
    with db.read() as conn:
        request = store.get_request(conn, request_id)
    assert request is not None
    return execution_outcome(request, success=success)


def execution_outcome(request: RefundRequest, *, success: str) -> Outcome:
    """A request's execution as an outcome: `success` if refunded, failed with its error, else processing."""
    if request.status is RequestStatus.SUCCEEDED:
        return Outcome(success, request.id, refund_id=request.stripe_refund_id)
    if request.status is RequestStatus.FAILED:
        return Outcome("failed", request.id, error=RefundError(request.error_message or "", code=request.error_code))
    return Outcome("processing", request.id)
