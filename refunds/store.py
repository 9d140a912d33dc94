"""SQL for refund requests, the approval queue, the log, the audit trail and the outbox.

Every function takes an open connection: the caller owns the transaction, so one state
change, its audit row and its outbox message commit together or not at all.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, case, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from .tables import (
    approval_link_uses,
    approvals,
    approvers,
    audit_log,
    charge_ledger,
    outbox,
    pending_refunds,
    refund_log,
    refund_requests,
    stripe_events,
)

# The advisory lock key that serialises queueing on PostgreSQL (see `insert_pending`): any fixed 64-bit number.
_QUEUE_LOCK = 0x7265_6675_6E64_7101


def _insert(conn: Connection, table: Table) -> Any:
    """An INSERT that knows ON CONFLICT, on PostgreSQL and on SQLite alike."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def get_request(conn: Connection, request_id: int) -> Row[Any] | None:
    return conn.execute(select(refund_requests).where(refund_requests.c.id == request_id)).first()


def get_request_by_idempotency_key(conn: Connection, key: str) -> Row[Any] | None:
    return conn.execute(
        select(refund_requests).where(refund_requests.c.idempotency_key == key)
    ).first()


def insert_request(conn: Connection, values: dict[str, Any]) -> int:
    result = conn.execute(insert(refund_requests).values(**values))
    request_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert request_id is not None
    return int(request_id)


def update_request(
    conn: Connection, request_id: int, *, expect_status: str | None = None, **values: Any
) -> bool:
    """Update one request; with `expect_status`, only if it is still in that status. True if it changed."""
    condition = refund_requests.c.id == request_id
    if expect_status is not None:
        condition = and_(condition, refund_requests.c.status == expect_status)
    return conn.execute(update(refund_requests).where(condition).values(**values)).rowcount == 1


IN_FLIGHT = ("received", "executing")


def claim_request(conn: Connection, request_id: int, now: datetime, lease: timedelta) -> bool:
    """Take the lease on one request in flight if its lease ran out. True if we got it."""
    return conn.execute(
        update(refund_requests)
        .where(refund_requests.c.id == request_id, refund_requests.c.status.in_(IN_FLIGHT),
               refund_requests.c.next_attempt_at <= now)
        .values(next_attempt_at=now + lease, updated_at=now)
    ).rowcount == 1


def claim_due_requests(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[int]:
    """Take the lease on up to `limit` requests in flight whose lease ran out, oldest first.

    On PostgreSQL the rows are locked with FOR UPDATE SKIP LOCKED, so concurrent workers
    take different rows; on SQLite the transaction itself is exclusive (BEGIN IMMEDIATE).
    """
    due = refund_requests.c.status.in_(IN_FLIGHT) & (refund_requests.c.next_attempt_at <= now)
    ids = [row.id for row in conn.execute(
        select(refund_requests.c.id).where(due).order_by(refund_requests.c.next_attempt_at)
        .limit(limit).with_for_update(skip_locked=True)
    )]
    if ids:
        conn.execute(update(refund_requests).where(refund_requests.c.id.in_(ids), due)
                     .values(next_attempt_at=now + lease, updated_at=now))
    return ids


def insert_pending(conn: Connection, values: dict[str, Any]) -> int:
    """Queue a refund for approval; returns its pending id.

    Pending ids order the queue and its pages (see pagination.py), so they must become visible in the order
    they are handed out: a page read while id 10 is uncommitted and 11 committed would list 11, and 10 would
    then sit behind the reader's cursor. On PostgreSQL a transaction-scoped advisory lock makes queueing
    transactions take ids and commit one at a time; SQLite has a single writer already.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _QUEUE_LOCK})
    result = conn.execute(insert(pending_refunds).values(**values))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def get_pending(conn: Connection, pending_id: int) -> Row[Any] | None:
    return conn.execute(select(pending_refunds).where(pending_refunds.c.id == pending_id)).first()


def lock_pending(conn: Connection, pending_id: int) -> Row[Any] | None:
    """The pending refund, locked until the transaction ends (FOR UPDATE on PostgreSQL;
    SQLite's BEGIN IMMEDIATE already serializes writers), so concurrent approvals count right."""
    return conn.execute(
        select(pending_refunds).where(pending_refunds.c.id == pending_id).with_for_update()
    ).first()


def add_approval(conn: Connection, request_id: int, approver: str, channel: str, at: datetime) -> bool:
    """Record one approver's approval. False if they had already approved this request."""
    statement = _insert(conn, approvals).values(request_id=request_id, approver=approver, channel=channel, at=at)
    inserted = statement.on_conflict_do_nothing(
        index_elements=[approvals.c.request_id, approvals.c.approver]).returning(approvals.c.id)
    return conn.execute(inserted).first() is not None


def approvers_of(conn: Connection, request_id: int) -> list[str]:
    """Who approved the request so far and still may: an approval by someone revoked since no longer counts."""
    rows = conn.execute(
        select(approvals.c.approver)
        .join(approvers, approvers.c.name == approvals.c.approver)
        .where(approvals.c.request_id == request_id, approvers.c.revoked_at.is_(None))
        .order_by(approvals.c.id)
    )
    return [row.approver for row in rows]


def approvals_for_request(conn: Connection, request_id: int) -> list[Row[Any]]:
    return list(conn.execute(select(approvals).where(approvals.c.request_id == request_id).order_by(approvals.c.id)))


def get_active_approver(conn: Connection, name: str) -> Row[Any] | None:
    return conn.execute(select(approvers).where(approvers.c.name == name, approvers.c.revoked_at.is_(None))).first()


def use_link(conn: Connection, nonce: str, request_id: int, approver: str, at: datetime) -> bool:
    """Spend a one-time approval link. False if it was used before."""
    statement = _insert(conn, approval_link_uses).values(nonce=nonce, request_id=request_id, approver=approver,
                                                          used_at=at)
    inserted = statement.on_conflict_do_nothing(index_elements=[approval_link_uses.c.nonce]).returning(
        approval_link_uses.c.nonce)
    return conn.execute(inserted).first() is not None


def link_used(conn: Connection, nonce: str) -> bool:
    return conn.execute(select(approval_link_uses.c.nonce).where(approval_link_uses.c.nonce == nonce)).first() \
        is not None


def stale_pending(conn: Connection, requested_before: datetime, *, escalated: bool | None,
                  limit: int) -> list[Row[Any]]:
    """Pending refunds requested before `requested_before`; filtered on whether already escalated."""
    query = select(pending_refunds).where(pending_refunds.c.status == "pending",
                                          pending_refunds.c.requested_at <= requested_before)
    if escalated is not None:
        query = query.where(pending_refunds.c.escalated_at.is_not(None) if escalated
                            else pending_refunds.c.escalated_at.is_(None))
    return list(conn.execute(query.order_by(pending_refunds.c.requested_at).limit(limit)))


def mark_escalated(conn: Connection, pending_id: int, at: datetime) -> bool:
    return conn.execute(update(pending_refunds).where(pending_refunds.c.id == pending_id,
                                                      pending_refunds.c.escalated_at.is_(None))
                        .values(escalated_at=at)).rowcount == 1


def get_pending_for_request(conn: Connection, request_id: int) -> Row[Any] | None:
    return conn.execute(
        select(pending_refunds).where(pending_refunds.c.request_id == request_id)
    ).first()


def decide_pending(
    conn: Connection, pending_id: int, *, status: str, decided_by: str, at: datetime, note: str | None
) -> bool:
    """Move a pending refund to `status` only if nobody decided it first. True if we did."""
    return conn.execute(
        update(pending_refunds)
        .where(pending_refunds.c.id == pending_id, pending_refunds.c.status == "pending")
        .values(status=status, decided_by=decided_by, decided_at=at, decision_note=note)
    ).rowcount == 1


def list_pending(conn: Connection, limit: int, after: int | None = None) -> list[Row[Any]]:
    """Up to `limit` entries of the approval queue in the order they were queued (pending id), with the
    request's details.

    `after` is a queue position (a pending id): only entries after it are listed (keyset pagination, so that a
    page never repeats or skips an entry because others were decided or queued meanwhile).
    """
    query = (
        select(
            pending_refunds.c.id.label("pending_id"),
            pending_refunds.c.request_id,
            pending_refunds.c.charge_id,
            pending_refunds.c.amount,
            pending_refunds.c.currency,
            pending_refunds.c.reason,
            pending_refunds.c.requested_at,
            refund_requests.c.product,
            refund_requests.c.customer_email,
            refund_requests.c.ticket_id,
            refund_requests.c.note,
            refund_requests.c.policy_explanation,
        )
        .join(refund_requests, refund_requests.c.id == pending_refunds.c.request_id)
        .where(pending_refunds.c.status == "pending")
        .order_by(pending_refunds.c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(pending_refunds.c.id > after)
    return list(conn.execute(query))


def count_pending(conn: Connection) -> int:
    """How many refunds wait for a decision."""
    return int(conn.execute(select(func.count()).select_from(pending_refunds)
                            .where(pending_refunds.c.status == "pending")).scalar_one())


def insert_log(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(refund_log).values(**values))


def log_rows_for_request(conn: Connection, request_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(refund_log).where(refund_log.c.request_id == request_id).order_by(refund_log.c.id)
        )
    )


def add_audit(
    conn: Connection,
    request_id: int,
    *,
    at: datetime,
    action: str,
    actor: str,
    channel: str,
    detail: str | None = None,
) -> None:
    conn.execute(
        insert(audit_log).values(
            request_id=request_id, at=at, action=action, actor=actor, channel=channel, detail=detail
        )
    )


def audit_for_request(conn: Connection, request_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(audit_log).where(audit_log.c.request_id == request_id).order_by(audit_log.c.id)
        )
    )


def enqueue(
    conn: Connection, *, request_id: int | None, kind: str, payload: dict[str, Any], at: datetime
) -> None:
    """Write a notification to the outbox; the worker delivers it after this transaction commits."""
    conn.execute(
        insert(outbox).values(
            request_id=request_id,
            kind=kind,
            payload=json.dumps(payload, sort_keys=True),
            created_at=at,
            attempts=0,
            next_attempt_at=at,
        )
    )


def claim_due_messages(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[Row[Any]]:
    """Claim undelivered messages that are due, each the oldest undelivered of its request.

    Holding back later messages of a request keeps Slack's story in order ("approved" never
    arrives before "needs approval"). A dead message (Slack refused it) is never claimed and holds
    nothing back: the story goes on without it, and ops see it in the outbox.
    """
    earlier = outbox.alias("earlier")
    older_pending = (
        select(func.count())
        .select_from(earlier)
        .where(
            earlier.c.request_id == outbox.c.request_id,
            earlier.c.delivered_at.is_(None),
            earlier.c.dead_at.is_(None),
            earlier.c.id < outbox.c.id,
        )
        .scalar_subquery()
    )
    query = (
        select(outbox)
        .where(
            outbox.c.delivered_at.is_(None),
            outbox.c.dead_at.is_(None),
            outbox.c.next_attempt_at <= now,
            (outbox.c.claimed_until.is_(None)) | (outbox.c.claimed_until <= now),
            (outbox.c.request_id.is_(None)) | (older_pending == 0),
        )
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    messages = list(conn.execute(query))
    if messages:
        conn.execute(update(outbox).where(outbox.c.id.in_([m.id for m in messages]))
                     .values(claimed_until=now + lease, attempts=outbox.c.attempts + 1))
    return messages


def mark_delivered(conn: Connection, message_id: int, at: datetime) -> None:
    conn.execute(
        update(outbox).where(outbox.c.id == message_id).values(delivered_at=at, claimed_until=None, last_error=None)
    )


def mark_failed(conn: Connection, message_id: int, *, retry_at: datetime, error: str) -> None:
    conn.execute(
        update(outbox)
        .where(outbox.c.id == message_id)
        .values(next_attempt_at=retry_at, claimed_until=None, last_error=error[:1000])
    )


def mark_dead(conn: Connection, message_id: int, *, at: datetime, error: str) -> None:
    """Park a message Slack refused: never claimed again, kept with its reason for ops."""
    conn.execute(
        update(outbox)
        .where(outbox.c.id == message_id)
        .values(dead_at=at, claimed_until=None, last_error=error[:1000])
    )


# -- charge ledger: no over-refund under concurrency ----------------------------------------


def note_charge(conn: Connection, *, charge_id: str, currency: str, amount: int, stripe_refunded: int,
                at: datetime) -> None:
    """Create or refresh the ledger row of a charge with what Stripe just said about it.

    One INSERT ... ON CONFLICT statement, so concurrent first requests on a charge cannot collide.
    """
    statement = _insert(conn, charge_ledger).values(
        charge_id=charge_id, currency=currency, amount=amount, reserved=0, refunded=0,
        stripe_refunded=stripe_refunded, updated_at=at,
    )
    conn.execute(statement.on_conflict_do_update(
        index_elements=[charge_ledger.c.charge_id],
        set_={"stripe_refunded": statement.excluded.stripe_refunded, "updated_at": statement.excluded.updated_at},
    ))


def reserve(conn: Connection, charge_id: str, amount: int, at: datetime) -> bool:
    """Reserve `amount` of the charge for one execution, only if it fits. True if reserved.

    What fits: the charge's amount, less what is in flight here, less the larger of what this
    service has refunded and what Stripe last said was refunded (which includes refunds made
    elsewhere). One guarded UPDATE, so two concurrent requests cannot both take the last money.
    """
    table = charge_ledger
    already = case((table.c.refunded > table.c.stripe_refunded, table.c.refunded), else_=table.c.stripe_refunded)
    return conn.execute(
        update(table)
        .where(table.c.charge_id == charge_id, table.c.reserved + amount + already <= table.c.amount)
        .values(reserved=table.c.reserved + amount, updated_at=at)
    ).rowcount == 1


def release(conn: Connection, charge_id: str, amount: int, at: datetime, *, refunded: bool) -> None:
    """End a reservation: the money was refunded (`refunded=True`) or is free again."""
    table = charge_ledger
    values: dict[str, Any] = {"reserved": table.c.reserved - amount, "updated_at": at}
    if refunded:
        values["refunded"] = table.c.refunded + amount
    conn.execute(update(table).where(table.c.charge_id == charge_id).values(**values))


def unrefund(conn: Connection, charge_id: str, amount: int, at: datetime) -> None:
    """A refund failed after it was made: its money counts as refundable again."""
    table = charge_ledger
    conn.execute(update(table).where(table.c.charge_id == charge_id)
                 .values(refunded=table.c.refunded - amount, updated_at=at))


# -- refund lifecycle ------------------------------------------------------------------------


def record_event(conn: Connection, event_id: str, event_type: str, at: datetime) -> bool:
    """Remember a Stripe event id. False if it was seen before (the caller must then do nothing)."""
    statement = _insert(conn, stripe_events).values(id=event_id, type=event_type, received_at=at)
    inserted = statement.on_conflict_do_nothing(index_elements=[stripe_events.c.id]).returning(stripe_events.c.id)
    return conn.execute(inserted).first() is not None


def get_log_row(conn: Connection, refund_id: str) -> Row[Any] | None:
    return conn.execute(select(refund_log).where(refund_log.c.refund_id == refund_id)).first()


def set_log_status(conn: Connection, refund_id: str, *, status: str, failure_reason: str | None,
                   changed_at: datetime | None, checked_at: datetime | None = None) -> None:
    conn.execute(update(refund_log).where(refund_log.c.refund_id == refund_id).values(
        status=status, failure_reason=failure_reason, status_changed_at=changed_at, checked_at=checked_at))


def unsettled_refunds(conn: Connection, checked_before: datetime, limit: int) -> list[Row[Any]]:
    """Refunds still pending at Stripe that nobody checked since `checked_before`, oldest first."""
    last_check = func.coalesce(refund_log.c.checked_at, refund_log.c.processed_at)
    return list(conn.execute(
        select(refund_log)
        .where(refund_log.c.status.in_(("pending", "requires_action")), last_check <= checked_before)
        .order_by(last_check)
        .limit(limit)
    ))


def touch_log_check(conn: Connection, refund_id: str, at: datetime) -> None:
    conn.execute(update(refund_log).where(refund_log.c.refund_id == refund_id).values(checked_at=at))
