"""The refund use cases behind one object: `RefundService`, what HTTP, the CLI and the worker call.

Each use case lives in its own module, short and readable top to bottom: intake.py (request, assess,
replay, retries), approvals.py (approve, reject, escalate, expire), execution.py (Stripe, once),
queries.py (reads). Every change of a request's status goes through `transition.transition()`, which
writes its audit row and outbox message in the same transaction; `states.py` lists the moves allowed.
No Stripe or Slack call ever happens while a transaction is open.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from . import approvals, dry_run, execution, intake, queries, store
from .db import Database
from .domain import (
    CREDENTIAL_CHANGED,
    INTAKE,
    Actor,
    Clock,
    CredentialCheck,
    Outcome,
    RefundCommand,
    WithDecision,
    utcnow,
)
from .dry_run import DryRunResult
from .errors import RequestNotFound
from .execution import IDEMPOTENCY_KEY_SAFE_FOR, backoff
from .intake import check_refundable
from .rules import PolicyConfig
from .stripe_gateway import RefundGateway

__all__ = ["CREDENTIAL_CHANGED", "IDEMPOTENCY_KEY_SAFE_FOR", "INTAKE", "Actor", "Clock", "CredentialCheck",
           "Outcome", "RefundCommand", "RefundService", "WithDecision", "backoff", "check_refundable", "utcnow"]


class RefundService:
    """The refund use cases over a database and a refund gateway (Stripe, or a fake in tests).

    The attributes are read at every call (`domain.Context`), so they may be changed on a live service.
    """

    def __init__(
        self,
        db: Database,
        gateway: RefundGateway,
        policy: PolicyConfig,
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

    def request_refund(self, command: RefundCommand, *, idempotency_key: str | None = None,
                       channel: str = "api") -> Outcome:
        """See `intake.request_refund`."""
        return intake.request_refund(self, command, idempotency_key=idempotency_key, channel=channel)

    def dry_run(self, command: RefundCommand) -> DryRunResult:
        """See `dry_run.dry_run`: what the policy would decide, changing nothing."""
        return dry_run.dry_run(self, command)

    def advance(self, request_id: int) -> None:
        """Take a request in flight one step further (the caller holds its lease). See `intake.advance`."""
        intake.advance_by_id(self, request_id)

    def retry_due(self, limit: int = 20) -> int:
        """See `intake.retry_due`."""
        return intake.retry_due(self, limit)

    def execute(self, request_id: int) -> Outcome:
        """Send the stored refund to Stripe and record the result; the caller holds the execution lease.
        Raises RequestNotFound unless the request is executing. See `execution.execute`."""
        with self.db.read() as conn:
            request = store.get_request(conn, request_id)
        if request is None:
            raise RequestNotFound(f"Refund request {request_id} is not executing.")
        return execution.execute(self, request)

    def approve(self, pending_id: int, actor: Actor, *, credential: CredentialCheck | None = None,
                with_decision: WithDecision | None = None) -> Outcome:
        """See `approvals.approve`."""
        return approvals.approve(self, pending_id, actor, credential=credential, with_decision=with_decision)

    def reject(self, pending_id: int, actor: Actor, note: str | None, *,
               credential: CredentialCheck | None = None, with_decision: WithDecision | None = None) -> Outcome:
        """See `approvals.reject`."""
        return approvals.reject(self, pending_id, actor, note, credential=credential, with_decision=with_decision)

    def approvals_required(self, amount: int, currency: str) -> int:
        """How many different approvers the policy wants (see `approvals.approvals_required`)."""
        return approvals.approvals_required(self, amount, currency)

    def escalate_and_expire(self, escalate_after: timedelta | None, expire_after: timedelta | None,
                            limit: int = 50) -> int:
        """See `approvals.escalate_and_expire`."""
        return approvals.escalate_and_expire(self, escalate_after, expire_after, limit)

    def pending(self, limit: int, after: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """See `queries.pending`."""
        return queries.pending(self.db, limit, after)

    def history(self, request_id: int) -> dict[str, Any]:
        """See `queries.history`. Raises RequestNotFound."""
        return queries.history(self.db, request_id)
