"""Refund use cases: request, approve, reject, execute, and read back.

Each state change is one short transaction that also writes its audit row and its outbox
message. No Stripe or Slack call ever happens while a transaction is open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from . import approvers, identity, store
from .db import Database
from .errors import (
    AlreadyApproved,
    ChargeAlreadyRefunded,
    ChargeDisputed,
    ExceedsRefundable,
    IdempotencyKeyReused,
    IdempotencyMismatch,
    LinkInvalid,
    NotAnApprover,
    NotPending,
    OverApprovalLimit,
    RefundError,
    RequestNotFound,
    SelfApproval,
    StripeMisconfigured,
    StripeUnavailable,
)
from .money import Money
from .policy import Action, Policy, decide
from .records import PendingRefund, RefundRequest
from .states import IN_FLIGHT, PendingStatus, RequestStatus
from .stripe_gateway import ChargeInfo, RefundGateway, RefundInfo, RefundParams

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RefundCommand:
    """A validated refund request from the support tool. Exactly one of the two ids is set."""

    charge_id: str | None = None
    payment_intent_id: str | None = None
    amount: int | None = None
    reason: str = "requested_by_customer"
    product: str | None = None
    customer_email: str | None = None
    ticket_id: str | None = None
    note: str | None = None
    requested_by: str | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who acted, and through which channel (api, cli, worker)."""

    name: str
    channel: str = "api"


# Given the acting approver's current token hash, True if the action was authorised with that credential
# (an approval link bound to it). Checked in the transaction that decides, so a credential re-issued after
# the caller's own check still stops the action.
CredentialCheck = Callable[[str], bool]
# Runs first in the transaction that decides: what it writes commits with the decision (a link's nonce, a
# Slack click marked decided), and what it raises rolls the decision back and reaches the caller.
WithDecision = Callable[[Connection], None]
CREDENTIAL_CHANGED = "This approval link belongs to someone who is no longer an approver."

INTAKE = Actor("intake", "api")


@dataclass(frozen=True)
class Outcome:
    """Where a request stands after a call.

    `status` is one of: auto_approved, pending_approval, approved, rejected, processing, failed.
    For failed, `error` is the domain exception that explains why.
    """

    status: str
    request_id: int
    pending_id: int | None = None
    refund_id: str | None = None
    error: RefundError | None = None


class _LostLease(Exception):
    """Another process moved the request on while we worked on it; roll back and stand aside."""


class RefundService:
    """The refund use cases over a database and a refund gateway (Stripe, or a fake in tests)."""

    def __init__(
        self,
        db: Database,
        gateway: RefundGateway,
        policy: Policy,
        *,
        clock: Clock = utcnow,
        execution_lease: timedelta = timedelta(seconds=120),
        retry_backoff: timedelta = timedelta(seconds=5),
        two_person_threshold: int | None = None,
        duplicate_wait_seconds: float = 15.0,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.policy = policy
        self.clock = clock
        self.execution_lease = execution_lease
        self.retry_backoff = retry_backoff
        self.two_person_threshold = two_person_threshold
        self.duplicate_wait_seconds = duplicate_wait_seconds

    # -- intake -------------------------------------------------------------------------

    def request_refund(self, command: RefundCommand, *, idempotency_key: str | None = None,
                       channel: str = "api") -> Outcome:
        """Accept a refund request: record it, read the charge, then execute it or queue it.

        The request is recorded before any Stripe call, so nothing accepted is ever lost.
        Raises IdempotencyMismatch. Returns auto_approved, pending_approval, processing (Stripe
        is retried in the background) or failed (with the reason: charge_not_found,
        charge_already_refunded, amount_exceeds_refundable, charge_disputed, or Stripe's code).
        """
        fingerprint = command.fingerprint()
        if idempotency_key is not None:
            replay = self._replay(idempotency_key, fingerprint)
            if replay is not None:
                return replay
        try:
            request_id = self._receive(command, fingerprint, idempotency_key, channel)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent duplicate won the race to insert: answer as it does.
            replay = self._replay(idempotency_key, fingerprint)
            assert replay is not None
            return replay
        self.advance(request_id)
        with self.db.read() as conn:
            row = store.get_request(conn, request_id)
            assert row is not None
            return self._intake_outcome(conn, row)

    def _receive(self, command: RefundCommand, fingerprint: str, idempotency_key: str | None, channel: str) -> int:
        now = self.clock()
        with self.db.transaction() as conn:
            request_id = store.insert_request(conn, {
                "idempotency_key": idempotency_key,
                "body_fingerprint": fingerprint,
                "charge_id": command.charge_id,
                "payment_intent_id": command.payment_intent_id,
                "requested_amount": command.amount,
                "reason": command.reason,
                "product": command.product,
                "customer_email": command.customer_email,
                "ticket_id": command.ticket_id,
                "note": command.note,
                "status": "received",
                "requested_by": command.requested_by or INTAKE.name,
                "attempts": 0,
                "next_attempt_at": now + self.execution_lease,
                "created_at": now,
                "updated_at": now,
            })
            # Derived from our own request id and stored before any Stripe call: every retry,
            # restart or worker sends this same key. The suffix keeps two databases (staging
            # and production on one Stripe account) from ever sharing a key.
            store.set_stripe_key(conn, request_id, f"refund-request-{request_id}-{secrets.token_hex(6)}")
            store.add_audit(conn, request_id, at=now, action="requested",
                            actor=command.requested_by or INTAKE.name, channel=channel)
        return request_id

    def advance(self, request_id: int) -> None:
        """Take a request in flight one step further: assess it if received, execute it if executing.

        The caller holds its lease. Transient Stripe failures reschedule it with backoff.
        """
        with self.db.read() as conn:
            row = store.get_request(conn, request_id)
        if row is not None and row.status == "received":
            self._assess(row)
            with self.db.read() as conn:
                row = store.get_request(conn, request_id)
        if row is not None and row.status == "executing":
            self._execute(row)

    def _assess(self, row: RefundRequest) -> None:
        """Read the charge, check what Stripe would refuse, apply the policy, reserve the money."""
        try:
            charge = self.gateway.get_charge(charge_id=row.charge_id if not row.payment_intent_id else None,
                                             payment_intent_id=row.payment_intent_id)
            amount = check_refundable(charge, row.requested_amount)
        except (StripeUnavailable, StripeMisconfigured) as exc:
            self._retry_later(row, exc)
            return
        except RefundError as exc:
            self._fail(row, exc, expect_status=RequestStatus.RECEIVED)
            return
        refund = Money(amount, charge.currency)
        decision = decide(refund, self.policy)
        now = self.clock()
        exceeded: RefundError | None = None
        try:
            with self.db.transaction() as conn:
                store.note_charge(conn, charge_id=charge.charge_id, currency=charge.currency,
                                  amount=charge.amount, stripe_refunded=charge.amount_refunded, at=now)
                auto = decision.action is Action.AUTO_APPROVE
                if auto and not store.reserve(conn, charge.charge_id, amount, now):
                    exceeded = ExceedsRefundable(
                        f"{refund} does not fit in what remains refundable on charge {charge.charge_id}"
                        " once the refunds already in progress are counted.")
                else:
                    self._route(conn, row, charge, refund, decision.action, decision.explanation, now)
        except _LostLease:
            return  # another worker assessed it meanwhile; our transaction was rolled back
        if exceeded is not None:
            self._fail(row, exceeded, expect_status=RequestStatus.RECEIVED)

    def _route(self, conn: Connection, row: RefundRequest, charge: ChargeInfo, refund: Money, action: Action,
               explanation: str, now: datetime) -> None:
        """Move a received request to executing (money reserved) or to the approval queue."""
        auto = action is Action.AUTO_APPROVE
        if not store.update_request(
            conn, row.id, expect_status=RequestStatus.RECEIVED,
            charge_id=charge.charge_id, amount=refund.amount, currency=refund.currency,
            decision=action.value, policy_explanation=explanation,
            status="executing" if auto else "pending_approval",
            execution_started_at=now if auto else None,
            next_attempt_at=now + self.execution_lease if auto else None,
            updated_at=now, error_code=None, error_message=None,
        ):
            raise _LostLease()
        store.add_audit(conn, row.id, at=now, action=action.value, actor="policy", channel="api",
                        detail=explanation)
        if auto:
            return
        pending_id = store.insert_pending(conn, {
            "request_id": row.id, "charge_id": charge.charge_id, "amount": refund.amount,
            "currency": refund.currency, "reason": row.reason, "requested_at": row.created_at,
            "status": "pending",
        })
        current = store.get_request(conn, row.id)
        assert current is not None
        store.enqueue(conn, request_id=row.id, kind="needs_approval", at=now,
                      payload=_message(current, pending_id=pending_id))

    def _replay(self, idempotency_key: str, fingerprint: str) -> Outcome | None:
        """The answer already given for `idempotency_key`, or None if the key is new.

        While a concurrent duplicate is still on its first attempt, waits a little for its result.
        """
        deadline = time.monotonic() + self.duplicate_wait_seconds
        while True:
            with self.db.read() as conn:
                row = store.get_request_by_idempotency_key(conn, idempotency_key)
                if row is None:
                    return None
                if row.body_fingerprint != fingerprint:
                    raise IdempotencyMismatch(
                        "This Idempotency-Key was already used with a different request body."
                    )
                outcome = self._intake_outcome(conn, row)
            # Its lease ran out: whoever held it died. Take it over rather than wait for the worker. The
            # snapshot only says whether to try: the claim is a guarded UPDATE that checks the lease again.
            now = self.clock()
            orphaned = row.status in IN_FLIGHT and row.next_attempt_at is not None \
                and row.next_attempt_at <= now and self._claim(row.id, now)
            if orphaned:
                self.advance(row.id)
                continue
            if outcome.status != "processing" or row.attempts > 0 or time.monotonic() >= deadline:
                return outcome
            time.sleep(0.05)

    def _claim(self, request_id: int, now: datetime) -> bool:
        with self.db.transaction() as conn:
            return store.claim_request(conn, request_id, now, self.execution_lease)

    def _intake_outcome(self, conn: Connection, row: RefundRequest) -> Outcome:
        """The intake's answer for a stored request: the first answer, or where it got to since."""
        if row.decision == Action.NEEDS_APPROVAL.value:
            pending = store.get_pending_for_request(conn, row.id)
            return Outcome("pending_approval", row.id, pending_id=pending.id if pending else None)
        return _execution_outcome(row, success="auto_approved")

    # -- approval queue -----------------------------------------------------------------

    def approve(self, pending_id: int, actor: Actor, *, credential: CredentialCheck | None = None,
                with_decision: WithDecision | None = None) -> Outcome:
        """Record `actor`'s approval; once enough people approved, execute the refund (once).

        Raises RequestNotFound, NotPending (with the current status), NotAnApprover,
        SelfApproval, OverApprovalLimit, AlreadyApproved, or ExceedsRefundable (refunds in
        progress leave too little; nothing is recorded and the request stays pending).
        With `credential`, raises LinkInvalid and records nothing unless it accepts the approver's
        token hash as read in the deciding transaction. `with_decision` runs first in that transaction:
        its writes commit only with the approval, and what it raises is raised with nothing recorded.
        Returns awaiting_second_approval, approved, processing or failed.
        """
        now = self.clock()
        with self.db.transaction() as conn:
            if with_decision is not None:
                with_decision(conn)
            pending = self._open_pending(conn, pending_id)
            request = store.get_request(conn, pending.request_id)
            assert request is not None
            self._may_approve(conn, actor, request, pending, credential)
            if not store.add_approval(conn, pending.request_id, actor.name, actor.channel, now):
                raise AlreadyApproved(f"{actor.name} already approved pending refund {pending_id}; "
                                      "a second, different approver is needed.")
            names = store.approvers_of(conn, pending.request_id)
            required = self.approvals_required(pending.amount)
            store.add_audit(conn, pending.request_id, at=now, action="approved", actor=actor.name,
                            channel=actor.channel, detail=f"approval {len(names)} of {required}")
            if len(names) < required:
                store.enqueue(conn, request_id=request.id, kind="needs_second_approval", at=now,
                              payload=_message(request, pending_id=pending_id, actor=actor.name))
                return Outcome("awaiting_second_approval", pending.request_id, pending_id=pending_id)
            store.decide_pending(conn, pending_id, status=PendingStatus.APPROVED, decided_by=", ".join(names),
                                 at=now, note=None)
            if not store.reserve(conn, pending.charge_id, pending.amount, now):
                # Rolls the approval back: the request stays pending, nothing reaches Stripe.
                raise ExceedsRefundable(
                    f"{Money(pending.amount, pending.currency)} no longer fits in what remains refundable on"
                    f" charge {pending.charge_id}; reject this request or wait for refunds in progress."
                )
            store.update_request(conn, pending.request_id, expect_status=RequestStatus.PENDING_APPROVAL,
                                 status="executing", execution_started_at=now,
                                 next_attempt_at=now + self.execution_lease, updated_at=now)
            executing = store.get_request(conn, pending.request_id)
            assert executing is not None
        outcome = self._execute(executing)
        if outcome.status == "succeeded":
            return Outcome("approved", outcome.request_id, pending_id=pending_id, refund_id=outcome.refund_id)
        return outcome

    def approvals_required(self, amount: int) -> int:
        """Two different approvers above the two-person threshold, else one."""
        return 2 if self.two_person_threshold is not None and amount > self.two_person_threshold else 1

    def _open_pending(self, conn: Connection, pending_id: int) -> PendingRefund:
        pending = store.lock_pending(conn, pending_id)
        if pending is None:
            raise RequestNotFound(f"No pending refund with id {pending_id}.")
        if pending.status != "pending":
            by = f" (by {pending.decided_by})" if pending.decided_by else ""
            raise NotPending(f"Pending refund {pending_id} is already {pending.status}{by}.", status=pending.status)
        return pending

    def _may_approve(self, conn: Connection, actor: Actor, request: RefundRequest, pending: PendingRefund,
                     credential: CredentialCheck | None) -> None:
        approver = approvers.active_in(conn, actor.name)
        if approver is None:
            raise NotAnApprover(f"{actor.name} is not an active approver.")
        if credential is not None and not credential(approver.token_hash):
            raise LinkInvalid(CREDENTIAL_CHANGED)
        # Against every identity (name, emails, Slack user), through look-alikes: see identity.py.
        if identity.same_person(request.requested_by, approver.identities):
            raise SelfApproval(f"{actor.name} asked for this refund and cannot approve it.")
        if approver.approval_limit is not None and pending.amount > approver.approval_limit:
            raise OverApprovalLimit(
                f"{Money(pending.amount, pending.currency)} is over {actor.name}'s approval limit of "
                f"{Money(approver.approval_limit, pending.currency)}."
            )

    def reject(self, pending_id: int, actor: Actor, note: str | None, *,
               credential: CredentialCheck | None = None, with_decision: WithDecision | None = None) -> Outcome:
        """Reject a pending refund; nothing is sent to Stripe. Raises RequestNotFound, NotPending or
        NotAnApprover; with `credential`, LinkInvalid (nothing recorded), and `with_decision`, as `approve` does."""
        now = self.clock()
        with self.db.transaction() as conn:
            if with_decision is not None:
                with_decision(conn)
            pending = self._open_pending(conn, pending_id)
            approver = store.get_active_approver(conn, actor.name)
            if approver is None:
                raise NotAnApprover(f"{actor.name} is not an active approver.")
            if credential is not None and not credential(approver.token_hash):
                raise LinkInvalid(CREDENTIAL_CHANGED)
            store.decide_pending(conn, pending_id, status=PendingStatus.REJECTED, decided_by=actor.name, at=now,
                                 note=note)
            store.update_request(conn, pending.request_id, expect_status=RequestStatus.PENDING_APPROVAL,
                                 status="rejected", resolved_at=now, updated_at=now)
            store.add_audit(conn, pending.request_id, at=now, action="rejected", actor=actor.name,
                            channel=actor.channel, detail=note)
            row = store.get_request(conn, pending.request_id)
            assert row is not None
            store.enqueue(conn, request_id=row.id, kind="rejected", at=now,
                          payload=_message(row, actor=actor.name, note=note))
        return Outcome("rejected", pending.request_id, pending_id=pending_id)

    def escalate_and_expire(self, escalate_after: timedelta | None, expire_after: timedelta | None,
                            limit: int = 50) -> int:
        """Announce again refunds pending longer than `escalate_after`; expire those pending
        longer than `expire_after` (nothing reaches Stripe). Returns how many were touched."""
        now = self.clock()
        touched = 0
        with self.db.read() as conn:  # most passes find nothing: ask without taking the write lock
            due = (expire_after is not None
                   and store.stale_pending(conn, now - expire_after, escalated=None, limit=1)) or \
                  (escalate_after is not None
                   and store.stale_pending(conn, now - escalate_after, escalated=False, limit=1))
        if not due:
            return 0
        with self.db.transaction() as conn:
            if expire_after is not None:
                for pending in store.stale_pending(conn, now - expire_after, escalated=None, limit=limit):
                    if not store.decide_pending(conn, pending.id, status=PendingStatus.EXPIRED, decided_by="worker",
                                                at=now, note=f"no decision within {expire_after}"):
                        continue
                    store.update_request(conn, pending.request_id, expect_status=RequestStatus.PENDING_APPROVAL,
                                         status="expired", resolved_at=now, updated_at=now)
                    store.add_audit(conn, pending.request_id, at=now, action="expired", actor="worker",
                                    channel="worker", detail=f"pending longer than {expire_after}")
                    row = store.get_request(conn, pending.request_id)
                    assert row is not None
                    store.enqueue(conn, request_id=row.id, kind="expired", at=now, payload=_message(row))
                    touched += 1
            if escalate_after is not None:
                for pending in store.stale_pending(conn, now - escalate_after, escalated=False, limit=limit):
                    if store.mark_escalated(conn, pending.id, now):
                        store.add_audit(conn, pending.request_id, at=now, action="escalated", actor="worker",
                                        channel="worker", detail=f"pending longer than {escalate_after}")
                        row = store.get_request(conn, pending.request_id)
                        assert row is not None
                        waited = int((now - pending.requested_at).total_seconds())
                        store.enqueue(conn, request_id=row.id, kind="escalated", at=now,
                                      payload=_message(row, pending_id=pending.id, waited_seconds=waited))
                        touched += 1
        return touched

    # -- execution ----------------------------------------------------------------------

    def execute(self, request_id: int) -> Outcome:
        """Send the stored refund to Stripe with its stored idempotency key and record the result.

        The caller must hold the execution lease (it moved the request to `executing`).
        Returns succeeded, failed (Stripe refused for good) or processing (retry later).
        """
        with self.db.read() as conn:
            row = store.get_request(conn, request_id)
        if row is None:
            raise RequestNotFound(f"Refund request {request_id} is not executing.")
        return self._execute(row)

    def _execute(self, row: RefundRequest) -> Outcome:
        """`execute` for request `row` as just read (raises RequestNotFound unless it is `executing`)."""
        if row.status != "executing":
            raise RequestNotFound(f"Refund request {row.id} is not executing.")
        planned = row.planned()
        params = RefundParams(
            charge_id=planned.charge_id,
            payment_intent_id=row.payment_intent_id,
            amount=planned.amount,
            reason=row.reason,
            idempotency_key=planned.idempotency_key,
            metadata=_stripe_metadata(row),
        )
        try:
            refund = self._existing_refund(row) or self._create_refund(row, params)
        except (StripeUnavailable, StripeMisconfigured) as exc:
            return self._retry_later(row, exc)
        except RefundError as exc:
            return self._fail(row, exc, expect_status=RequestStatus.EXECUTING)
        now = self.clock()
        # Stripe accepted the call but the refund itself is already failed or canceled: the
        # money did not go back, so the request must not say it did.
        failed = RefundError(f"Stripe reports refund {refund.refund_id} {refund.status}"
                             + (f": {refund.failure_reason}" if refund.failure_reason else "."),
                             code=f"refund_{refund.status}") if refund.status in ("failed", "canceled") else None
        with self.db.transaction() as conn:
            if not store.update_request(conn, row.id, expect_status=RequestStatus.EXECUTING,
                                        status="failed" if failed else "succeeded",
                                        stripe_refund_id=refund.refund_id, resolved_at=now,
                                        updated_at=now, next_attempt_at=None,
                                        error_code=failed.code if failed else None,
                                        error_message=failed.message if failed else None):
                # Someone else (a retrying worker) recorded this same refund first.
                current = store.get_request(conn, row.id)
                assert current is not None
                return _execution_outcome(current, success="succeeded")
            store.release(conn, planned.charge_id, planned.amount, now, refunded=failed is None)
            # Only a request that needed approval has a queue entry (and an approver) to look up.
            pending = None if row.decision == Action.AUTO_APPROVE.value else store.get_pending_for_request(conn, row.id)
            approver = pending.decided_by if pending is not None else None
            store.insert_log(conn, {
                "refund_id": refund.refund_id,
                "request_id": row.id,
                "charge_id": refund.charge_id,
                "amount": refund.amount,
                "currency": refund.currency,
                "status": refund.status,
                "processed_at": now,
                "reason": row.reason,
                "decision": "approved" if approver else "auto_approved",
                "approved_by": approver,
                "product": row.product,
                "status_changed_at": now,
                "failure_reason": refund.failure_reason,
            })
            store.add_audit(conn, row.id, at=now, action="failed" if failed else "refunded", actor="stripe",
                            channel="stripe", detail=f"{refund.refund_id} ({refund.status})")
            if failed:
                store.enqueue(conn, request_id=row.id, kind="failed", at=now, payload=_message(
                    row, refund_id=refund.refund_id, error_code=refund.failure_reason or failed.code,
                    error_message=failed.message))
            else:
                store.enqueue(conn, request_id=row.id, kind="approved" if approver else "auto_approved",
                              at=now, payload=_message(row, refund_id=refund.refund_id, actor=approver))
        log.info("refund request %s executed as %s (%s)", row.id, refund.refund_id, refund.status)
        if failed:
            return Outcome("failed", row.id, refund_id=refund.refund_id, error=failed)
        return Outcome("succeeded", row.id, refund_id=refund.refund_id)

    def _existing_refund(self, row: RefundRequest) -> RefundInfo | None:
        """After a long outage or crash, the refund Stripe may already have made for this request.

        Stripe keeps idempotency keys for at least 24 hours; past that, the same key would make
        a second refund, so we look for ours (by the key in its metadata) before creating one.
        """
        started = row.execution_started_at or row.created_at
        if self.clock() - started < IDEMPOTENCY_KEY_SAFE_FOR:
            return None
        return self.gateway.find_refund(charge_id=row.planned().charge_id, metadata_key="refund_key",
                                        metadata_value=row.planned().idempotency_key)

    def _create_refund(self, row: RefundRequest, params: RefundParams) -> RefundInfo:
        """Create the request's refund at Stripe, or find the one an earlier use of its key made.

        Raises what the gateway raises; `IdempotencyKeyReused` only once no refund of the charge
        carries this request's key.
        """
        try:
            return self.gateway.create_refund(params)
        except IdempotencyKeyReused:
            # Stripe ran this key before with other parameters: say, an attempt that timed out on
            # our side, then a deploy that changed the metadata before the retry. That first call
            # may well have refunded, and failing would release money that is already gone and
            # tell Slack nothing was refunded. Every refund this service makes carries its key in
            # `refund_key` metadata, so the charge's refunds tell whether it did.
            found = self.gateway.find_refund(charge_id=row.planned().charge_id, metadata_key="refund_key",
                                             metadata_value=row.planned().idempotency_key)
        if found is None:
            # No refund of the charge carries the key, so the key's first use refunded nothing, and
            # Stripe will never run a call with this key again: failing (and releasing the money)
            # is safe, and a new request gets a new key.
            raise IdempotencyKeyReused(
                f"Stripe saw this request's idempotency key used before with different parameters and will"
                f" not run it; no refund of charge {row.charge_id} carries the key, so nothing was refunded."
            ) from None
        log.warning("refund request %s: Stripe refused its key as used with other parameters; recording %s, "
                    "the refund that first use made", row.id, found.refund_id)
        return found

    def _fail(self, row: RefundRequest, error: RefundError, *, expect_status: RequestStatus) -> Outcome:
        """Mark a request failed for good; give back its reserved money; tell Slack when nobody else knows."""
        now = self.clock()
        with self.db.transaction() as conn:
            if store.update_request(conn, row.id, expect_status=expect_status, status="failed",
                                    error_code=error.code, error_message=error.message,
                                    resolved_at=now, updated_at=now, next_attempt_at=None):
                if expect_status == "executing":
                    store.release(conn, row.planned().charge_id, row.planned().amount, now, refunded=False)
                store.add_audit(conn, row.id, at=now, action="failed", actor="stripe", channel="stripe",
                                detail=f"{error.code}: {error.message}")
                # A refusal at intake is answered to the support tool at once; anything later
                # (after an approval, or after "processing") must reach people through Slack.
                if expect_status == "executing" or row.attempts > 0:
                    store.enqueue(conn, request_id=row.id, kind="failed", at=now,
                                  payload=_message(row, error_code=error.code, error_message=error.message))
        log.warning("refund request %s failed: %s", row.id, error.code)
        return Outcome("failed", row.id, error=error)

    def _retry_later(self, row: RefundRequest, error: RefundError) -> Outcome:
        now = self.clock()
        delay = backoff(self.retry_backoff, row.attempts + 1, cap=timedelta(minutes=10))
        with self.db.transaction() as conn:
            store.update_request(conn, row.id, expect_status=row.status, error_code=error.code,
                                 error_message=error.message, next_attempt_at=now + delay,
                                 attempts=row.attempts + 1, updated_at=now)
        log.warning("refund request %s waits for Stripe (%s); next attempt in %ss",
                    row.id, error.code, int(delay.total_seconds()))
        return Outcome("processing", row.id)

    def retry_due(self, limit: int = 20) -> int:
        """Advance requests whose lease ran out (a crash, or a transient Stripe failure).

        Safe with several workers: each request is claimed in one transaction (SKIP LOCKED on
        PostgreSQL), and Stripe sees the request's stored idempotency key every time.
        Returns how many were tried.
        """
        now = self.clock()
        with self.db.read() as conn:  # most passes find nothing: ask without taking the write lock
            if not store.any_due_request(conn, now):
                return 0
        with self.db.transaction() as conn:
            due = store.claim_due_requests(conn, now, self.execution_lease, limit)
        for request_id in due:
            self.advance(request_id)
        return len(due)

    # -- reading ------------------------------------------------------------------------

    def pending(self, limit: int, after: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` entries of the approval queue after position `after` (a pending id), in the order they
        were queued, as plain dicts; and how many entries the whole queue has."""
        with self.db.read() as conn:
            rows = store.list_pending(conn, limit, after)
            total = store.count_pending(conn)
        return [row.as_dict() for row in rows], total

    def history(self, request_id: int) -> dict[str, Any]:
        """One request with its approval, Stripe refunds and audit trail. Raises RequestNotFound."""
        with self.db.read() as conn:
            row = store.get_request(conn, request_id)
            if row is None:
                raise RequestNotFound(f"No refund request with id {request_id}.")
            return {
                "request": row.as_dict(),
                "pending": _as_dict_or_none(store.get_pending_for_request(conn, request_id)),
                "refunds": [r.as_dict() for r in store.log_rows_for_request(conn, request_id)],
                "history": [r.as_dict() for r in store.audit_for_request(conn, request_id)],
                "approvals": [r.as_dict() for r in store.approvals_for_request(conn, request_id)],
            }


def check_refundable(charge: ChargeInfo, requested: int | None) -> int:
    """The amount to refund: `requested`, or all that remains when None.

    Raises ChargeDisputed, ChargeAlreadyRefunded or ExceedsRefundable for what Stripe would refuse.
    """
    remaining = Money(charge.remaining, charge.currency)
    if charge.disputed:
        raise ChargeDisputed(
            f"Charge {charge.charge_id} is disputed; it cannot be refunded while the dispute is open."
        )
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


# Stripe keeps idempotency keys at least 24 hours; stop trusting them a little before.
IDEMPOTENCY_KEY_SAFE_FOR = timedelta(hours=23)


def backoff(base: timedelta, attempt: int, *, cap: timedelta) -> timedelta:
    """Wait before retry number `attempt` (1, 2, ...): base, 2 x base, 4 x base ... at most `cap`."""
    delay: timedelta = base * 2 ** max(attempt - 1, 0)
    return delay if delay < cap else cap


def _execution_outcome(row: RefundRequest, *, success: str) -> Outcome:
    if row.status == "succeeded":
        return Outcome(success, row.id, refund_id=row.stripe_refund_id)
    if row.status == "failed":
        return Outcome("failed", row.id, error=RefundError(row.error_message or "", code=row.error_code))
    return Outcome("processing", row.id)


def _stripe_metadata(row: RefundRequest) -> dict[str, str]:
    metadata = {"refund_request_id": str(row.id), "refund_key": row.planned().idempotency_key,
                "source": "refund-service"}
    if row.ticket_id:
        metadata["ticket_id"] = str(row.ticket_id)[:500]
    return metadata


def _message(row: RefundRequest, **extra: Any) -> dict[str, Any]:
    """The facts a notification needs, frozen at the moment of the state change."""
    facts = {
        "request_id": row.id,
        "charge_id": row.charge_id,
        "amount": row.amount,
        "currency": row.currency,
        "reason": row.reason,
        "product": row.product,
        "customer_email": row.customer_email,
        "ticket_id": row.ticket_id,
        "policy_explanation": row.policy_explanation,
    }
    facts.update({k: v for k, v in extra.items() if v is not None})
    return facts


def _as_dict_or_none(row: PendingRefund | None) -> dict[str, Any] | None:
    return row.as_dict() if row is not None else None
