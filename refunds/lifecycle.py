"""A refund's life at Stripe after we created it: webhook events and polling.

Stripe delivers events at least once and in no guaranteed order, so each event id is handled
once, and a refund's status only ever moves forward: pending and requires_action, then
succeeded, then failed or canceled, which are final.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from . import store
from .db import Database
from .domain import Clock, utcnow
from .errors import EventTooEarly, RefundError
from .records import LogEntry
from .states import RequestStatus
from .stripe_gateway import RefundGateway, RefundInfo
from .tables import refund_requests
from .transition import Message, facts, transition

__all__ = ["RANK", "REFUND_EVENTS", "RefundLifecycle", "moves_forward"]

log = logging.getLogger(__name__)

RANK = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2}
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})


def moves_forward(old: str, new: str, old_at: datetime | None, new_at: datetime) -> bool:
    """Whether a refund may go from status `old` (as of `old_at`) to `new` (as of `new_at`)."""
    if old == new or RANK.get(old, 0) == 2 or new not in RANK:
        return False
    if RANK[new] != RANK.get(old, 0):
        return RANK[new] > RANK.get(old, 0)
    return old_at is None or new_at >= old_at


class RefundLifecycle:
    """Applies what Stripe says about refunds to `refund_log`, the request and the ledger."""

    def __init__(self, db: Database, gateway: RefundGateway, *, clock: Clock = utcnow,
                 poll_after: timedelta = timedelta(minutes=30)) -> None:
        self.db = db
        self.gateway = gateway
        self.clock = clock
        self.poll_after = poll_after

    def handle_event(self, event_id: str, event_type: str, refund: RefundInfo | None, created: datetime) -> str:
        """Handle one verified and validated Stripe event. Returns "duplicate", "ignored" or "applied".

        `refund` is the event's refund object (None when the event is about something else), already checked
        against the limits of the columns it is stored in (see `schemas.StripeRefund`).
        Raises EventTooEarly for our own refund not recorded yet (nothing is recorded).
        """
        info = refund if event_type in REFUND_EVENTS else None
        now = self.clock()
        with self.db.transaction() as conn:
            if not store.record_event(conn, event_id, event_type, now):
                return "duplicate"
            if info is None:
                return "ignored"
            return self._apply(conn, info, created, now)

    def poll(self, limit: int = 20) -> int:
        """Ask Stripe about refunds still pending after `poll_after`. Returns how many were checked."""
        now = self.clock()
        with self.db.read() as conn:  # most passes find nothing: ask without taking the write lock
            if not store.unsettled_refunds(conn, now - self.poll_after, 1):
                return 0
        with self.db.transaction() as conn:
            due = store.unsettled_refunds(conn, now - self.poll_after, limit)
            for row in due:
                store.touch_log_check(conn, row.refund_id, now)
        for row in due:
            try:
                refund = self.gateway.get_refund(row.refund_id)
            except RefundError as exc:
                log.warning("could not check refund %s: %s", row.refund_id, exc.code)
                continue
            with self.db.transaction() as conn:
                self._apply(conn, refund, self.clock(), self.clock())
        return len(due)

    def _apply(self, conn: Connection, refund: RefundInfo, changed_at: datetime, now: datetime) -> str:
        row = store.get_log_row(conn, refund.refund_id)
        if row is None:
            return self._external(conn, refund, changed_at, now)
        if not moves_forward(row.status, refund.status, row.status_changed_at, changed_at):
            return "ignored"
        store.set_log_status(conn, refund.refund_id, status=refund.status, failure_reason=refund.failure_reason,
                             changed_at=changed_at, checked_at=now)
        if RANK[refund.status] == 2:
            self._failed(conn, row, refund, now)
        elif row.request_id is not None:
            store.add_audit(conn, row.request_id, at=now, action=f"refund_{refund.status}", actor="stripe",
                            channel="webhook", detail=refund.failure_reason)
        log.info("refund %s is now %s", refund.refund_id, refund.status)
        return "applied"

    def _failed(self, conn: Connection, row: LogEntry, refund: RefundInfo, now: datetime) -> None:
        """A refund we logged failed or was canceled: the money was not returned. Say so everywhere: the
        request (succeeded, now failed), the ledger, its audit trail and Slack."""
        said = {"refund_id": row.refund_id, "error_code": refund.failure_reason or refund.status,
                "error_message": f"Stripe reports refund {row.refund_id} {refund.status}"
                                 + (f": {refund.failure_reason}" if refund.failure_reason else ".")}
        request = store.get_request(conn, row.request_id) if row.request_id is not None else None
        if request is None:  # a refund made elsewhere: no request to move
            store.enqueue(conn, request_id=None, kind="failed", at=now, payload={
                "request_id": None, "charge_id": row.charge_id, "amount": row.amount, "currency": row.currency,
                "reason": row.reason, **said})
            return
        store.unrefund(conn, row.charge_id, row.amount, now)
        audit: dict[str, Any] = {"at": now, "actor": "stripe", "channel": "webhook",
                                 "action": f"refund_{refund.status}", "detail": refund.failure_reason}
        if request.status is not RequestStatus.SUCCEEDED:  # failed already: only the audit trail and Slack hear
            store.add_audit(conn, request.id, **audit)
            store.enqueue(conn, request_id=request.id, kind="failed", at=now, payload=facts(request, **said))
            return
        transition(conn, request, RequestStatus.FAILED, **audit, message=Message("failed", said),
                   error_code=f"refund_{refund.status}", error_message=said["error_message"])

    def _external(self, conn: Connection, refund: RefundInfo, changed_at: datetime, now: datetime) -> str:
        """A refund not in our log: ours mid-execution (the executor records it) or made elsewhere."""
        key = (refund.metadata or {}).get("refund_key")
        if key and conn.execute(select(refund_requests.c.id)
                                .where(refund_requests.c.stripe_idempotency_key == key)).first():
            # Ours, made while its executor had not recorded it yet. Refusing the event rolls back
            # its dedupe row, so Stripe delivers it again once the refund is in our log.
            raise EventTooEarly(f"Refund {refund.refund_id} is still being recorded; send the event again.")
        if refund.status not in RANK:
            return "ignored"
        store.insert_log(conn, {
            "refund_id": refund.refund_id, "request_id": None, "charge_id": refund.charge_id,
            "amount": refund.amount, "currency": refund.currency, "status": refund.status,
            "processed_at": now, "decision": "external", "failure_reason": refund.failure_reason,
            "status_changed_at": changed_at,
        })
        log.info("logged external refund %s (%s)", refund.refund_id, refund.status)
        return "applied"
