"""SQL for refund requests, the approval queue, the log, the audit trail and the outbox.

Every function takes an open connection: the caller owns the transaction, so one state
change, its audit row and its outbox message commit together or not at all.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, func, insert, select, update

from .tables import audit_log, outbox, pending_refunds, refund_log, refund_requests


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


def due_executions(conn: Connection, now: datetime, limit: int) -> list[int]:
    """Ids of requests stuck in `executing` whose lease has run out, oldest first."""
    rows = conn.execute(
        select(refund_requests.c.id)
        .where(refund_requests.c.status == "executing", refund_requests.c.next_attempt_at <= now)
        .order_by(refund_requests.c.next_attempt_at)
        .limit(limit)
    )
    return [row.id for row in rows]


def claim_execution(conn: Connection, request_id: int, now: datetime, lease: timedelta) -> bool:
    """Take the lease on an `executing` request whose lease has expired. True if we got it."""
    return conn.execute(
        update(refund_requests)
        .where(
            refund_requests.c.id == request_id,
            refund_requests.c.status == "executing",
            refund_requests.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + lease, attempts=refund_requests.c.attempts + 1, updated_at=now)
    ).rowcount == 1


def insert_pending(conn: Connection, values: dict[str, Any]) -> int:
    result = conn.execute(insert(pending_refunds).values(**values))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def get_pending(conn: Connection, pending_id: int) -> Row[Any] | None:
    return conn.execute(select(pending_refunds).where(pending_refunds.c.id == pending_id)).first()


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


def list_pending(conn: Connection, limit: int) -> list[Row[Any]]:
    """The approval queue, oldest first, with the request's details."""
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
        .order_by(pending_refunds.c.requested_at, pending_refunds.c.id)
        .limit(limit)
    )
    return list(conn.execute(query))


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


def due_messages(conn: Connection, now: datetime, limit: int) -> list[Row[Any]]:
    """Undelivered messages that are due and unclaimed, each the oldest undelivered of its request.

    Holding back later messages of a request keeps Slack's story in order ("approved" never
    arrives before "needs approval").
    """
    earlier = outbox.alias("earlier")
    older_pending = (
        select(func.count())
        .select_from(earlier)
        .where(
            earlier.c.request_id == outbox.c.request_id,
            earlier.c.delivered_at.is_(None),
            earlier.c.id < outbox.c.id,
        )
        .scalar_subquery()
    )
    query = (
        select(outbox)
        .where(
            outbox.c.delivered_at.is_(None),
            outbox.c.next_attempt_at <= now,
            (outbox.c.claimed_until.is_(None)) | (outbox.c.claimed_until <= now),
            (outbox.c.request_id.is_(None)) | (older_pending == 0),
        )
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return list(conn.execute(query))


def claim_message(conn: Connection, message_id: int, now: datetime, lease: timedelta) -> bool:
    return conn.execute(
        update(outbox)
        .where(
            outbox.c.id == message_id,
            outbox.c.delivered_at.is_(None),
            (outbox.c.claimed_until.is_(None)) | (outbox.c.claimed_until <= now),
        )
        .values(claimed_until=now + lease, attempts=outbox.c.attempts + 1)
    ).rowcount == 1


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
