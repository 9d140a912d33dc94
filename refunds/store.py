"""SQL for refund requests, the approval queue, the log, the audit trail and the outbox.

Every function takes an open connection: the caller owns the transaction, so one state
change, its audit row and its outbox message commit together or not at all. Reads return the
frozen records of `records.py`. A request's status is only ever changed through `transition.py`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, Table, bindparam, case, func, insert, select, text, update

from .dialects import ByDialect
from .records import (
    ApprovalEntry,
    ApproverRecord,
    AuditEntry,
    LogEntry,
    OutboxMessage,
    PendingRefund,
    QueueEntry,
    RefundRequest,
)
from .states import IN_FLIGHT, PendingStatus, RequestStatus
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

__all__ = ["OLDER_PENDING", "SLACK_CLICK",
           "add_approval", "add_audit", "any_due_click", "any_due_message", "any_due_request",
           "approvals_for_request", "approvers_of", "audit_for_request", "claim_due_clicks", "claim_due_messages",
           "claim_due_requests", "claim_request", "count_pending", "decide_pending", "enqueue", "finish_click",
           "get_active_approver", "get_log_row", "get_pending", "get_pending_for_request", "get_request",
           "get_request_by_idempotency_key", "insert_log", "insert_pending", "insert_request", "link_used",
           "list_pending", "lock_pending", "log_rows_for_request", "mark_click_decided", "mark_dead",
           "mark_delivered", "mark_escalated", "mark_failed", "note_charge", "record_click", "record_event",
           "release", "reschedule", "reserve", "set_log_status", "stale_pending",
           "touch_log_check", "trace_ids", "unrefund", "unsettled_refunds", "update_request", "use_link"]

# The advisory lock key that serialises queueing on PostgreSQL (see `insert_pending`): any fixed 64-bit number.
_QUEUE_LOCK = 0x7265_6675_6E64_7101


# Statements that run on every request or worker pass are built once, here, with bind parameters:
# SQLAlchemy's compiled cache only helps once the statement object exists, and building one costs more
# than running it on SQLite. Bind names start with "b_" so that they never clash with a column's name,
# which UPDATE and INSERT reserve for the values they set.
_GET_REQUEST = select(refund_requests).where(refund_requests.c.id == bindparam("b_id"))
_GET_REQUEST_BY_KEY = select(refund_requests).where(refund_requests.c.idempotency_key == bindparam("b_key"))
_INSERT_REQUEST = insert(refund_requests)
_UPDATE_REQUEST = update(refund_requests).where(refund_requests.c.id == bindparam("b_id"))
_UPDATE_REQUEST_IF = _UPDATE_REQUEST.where(refund_requests.c.status == bindparam("b_status"))


def _only_columns(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """`values`, refused unless each key is a column of `table` and there is one at least. A statement built
    once takes its columns from the parameters, where an unknown key would be ignored without a word."""
    unknown = values.keys() - table.c.keys()
    if unknown or not values:
        raise ValueError(f"not columns of {table.name}: {sorted(unknown)}" if unknown else "nothing to write")
    return values


def get_request(conn: Connection, request_id: int) -> RefundRequest | None:
    return RefundRequest.maybe(conn.execute(_GET_REQUEST, {"b_id": request_id}).first())


def get_request_by_idempotency_key(conn: Connection, key: str) -> RefundRequest | None:
    return RefundRequest.maybe(conn.execute(_GET_REQUEST_BY_KEY, {"b_key": key}).first())


def insert_request(conn: Connection, values: dict[str, Any]) -> int:
    result = conn.execute(_INSERT_REQUEST, _only_columns(refund_requests, values))
    request_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert request_id is not None
    return int(request_id)


def update_request(conn: Connection, request_id: int, *, expect_status: RequestStatus, **values: Any) -> bool:
    """Update one request only if it is still in `expect_status`. True if it changed.

    Called by `transition.transition()` alone: every change of status passes there.
    """
    _only_columns(refund_requests, values)
    return conn.execute(_UPDATE_REQUEST_IF, {"b_id": request_id, "b_status": expect_status, **values}).rowcount == 1


def reschedule(conn: Connection, request_id: int, *, expect_status: RequestStatus, attempts: int,
               next_attempt_at: datetime, error_code: str, error_message: str, at: datetime) -> bool:
    """Count one more failed attempt and set when the next is due, if the request is still in
    `expect_status` (its status does not change). True if it did."""
    return conn.execute(_UPDATE_REQUEST_IF, {
        "b_id": request_id, "b_status": expect_status, "attempts": attempts, "next_attempt_at": next_attempt_at,
        "error_code": error_code, "error_message": error_message, "updated_at": at,
    }).rowcount == 1


_REQUEST_DUE = refund_requests.c.status.in_(IN_FLIGHT) & (refund_requests.c.next_attempt_at <= bindparam("b_now"))
_ANY_DUE_REQUEST = select(refund_requests.c.id).where(_REQUEST_DUE).limit(1)
_DUE_REQUESTS = (select(refund_requests.c.id).where(_REQUEST_DUE).order_by(refund_requests.c.next_attempt_at)
                 .limit(bindparam("b_limit")).with_for_update(skip_locked=True))
_CLAIM_REQUEST = (update(refund_requests).where(refund_requests.c.id == bindparam("b_id"), _REQUEST_DUE)
                  .values(next_attempt_at=bindparam("b_until"), updated_at=bindparam("b_now")))
_CLAIM_REQUESTS = (update(refund_requests)
                   .where(refund_requests.c.id.in_(bindparam("b_ids", expanding=True)), _REQUEST_DUE)
                   .values(next_attempt_at=bindparam("b_until"), updated_at=bindparam("b_now")))


def any_due_request(conn: Connection, now: datetime) -> bool:
    """Whether some request in flight has a lease that ran out (a hint: `claim_due_requests` decides)."""
    return conn.execute(_ANY_DUE_REQUEST, {"b_now": now}).first() is not None


def claim_request(conn: Connection, request_id: int, now: datetime, lease: timedelta) -> bool:
    """Take the lease on one request in flight if its lease ran out. True if we got it."""
    return conn.execute(_CLAIM_REQUEST, {"b_id": request_id, "b_now": now, "b_until": now + lease}).rowcount == 1


def claim_due_requests(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[int]:
    """Take the lease on up to `limit` requests in flight whose lease ran out, oldest first.

    On PostgreSQL the rows are locked with FOR UPDATE SKIP LOCKED, so concurrent workers
    take different rows; on SQLite the transaction itself is exclusive (BEGIN IMMEDIATE).
    """
    ids = [row.id for row in conn.execute(_DUE_REQUESTS, {"b_now": now, "b_limit": limit})]
    if ids:
        conn.execute(_CLAIM_REQUESTS, {"b_ids": ids, "b_now": now, "b_until": now + lease})
    return ids


_QUEUE_LOCK_SQL = text("SELECT pg_advisory_xact_lock(:key)")
_INSERT_PENDING = insert(pending_refunds)


def insert_pending(conn: Connection, values: dict[str, Any]) -> int:
    """Queue a refund for approval; returns its pending id.

    Pending ids order the queue and its pages (see pagination.py), so they must become visible in the order
    they are handed out: a page read while id 10 is uncommitted and 11 committed would list 11, and 10 would
    then sit behind the reader's cursor. On PostgreSQL a transaction-scoped advisory lock makes queueing
    transactions take ids and commit one at a time; SQLite has a single writer already.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_QUEUE_LOCK_SQL, {"key": _QUEUE_LOCK})
    result = conn.execute(_INSERT_PENDING, _only_columns(pending_refunds, values))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


_GET_PENDING = select(pending_refunds).where(pending_refunds.c.id == bindparam("b_id"))
_LOCK_PENDING = _GET_PENDING.with_for_update()


def get_pending(conn: Connection, pending_id: int) -> PendingRefund | None:
    return PendingRefund.maybe(conn.execute(_GET_PENDING, {"b_id": pending_id}).first())


def lock_pending(conn: Connection, pending_id: int) -> PendingRefund | None:
    """The pending refund, locked until the transaction ends (FOR UPDATE on PostgreSQL;
    SQLite's BEGIN IMMEDIATE already serializes writers), so concurrent approvals count right."""
    return PendingRefund.maybe(conn.execute(_LOCK_PENDING, {"b_id": pending_id}).first())


def _insert_or_skip(table: Table, *unique: Any) -> ByDialect[Any]:
    """By dialect name: INSERT ... ON CONFLICT (`unique`) DO NOTHING RETURNING the first unique column."""
    return ByDialect(lambda dialect: dialect.insert(table).on_conflict_do_nothing(index_elements=list(unique))
                     .returning(unique[0]))


_ADD_APPROVAL = _insert_or_skip(approvals, approvals.c.request_id, approvals.c.approver)
_USE_LINK = _insert_or_skip(approval_link_uses, approval_link_uses.c.nonce)
_RECORD_EVENT = _insert_or_skip(stripe_events, stripe_events.c.id)


def add_approval(conn: Connection, request_id: int, approver: str, channel: str, at: datetime) -> bool:
    """Record one approver's approval. False if they had already approved this request."""
    values = {"request_id": request_id, "approver": approver, "channel": channel, "at": at}
    return conn.execute(_ADD_APPROVAL[conn.dialect.name], values).first() is not None


_APPROVERS_OF = (select(approvals.c.approver).join(approvers, approvers.c.name == approvals.c.approver)
                 .where(approvals.c.request_id == bindparam("b_id"), approvers.c.revoked_at.is_(None))
                 .order_by(approvals.c.id))


def approvers_of(conn: Connection, request_id: int) -> list[str]:
    """Who approved the request so far and still may: an approval by someone revoked since no longer counts."""
    return [row.approver for row in conn.execute(_APPROVERS_OF, {"b_id": request_id})]


_APPROVALS_FOR_REQUEST = select(approvals).where(approvals.c.request_id == bindparam("b_id")).order_by(approvals.c.id)


def approvals_for_request(conn: Connection, request_id: int) -> list[ApprovalEntry]:
    return [ApprovalEntry.of(row) for row in conn.execute(_APPROVALS_FOR_REQUEST, {"b_id": request_id})]


_ACTIVE_APPROVER = select(approvers).where(approvers.c.name == bindparam("b_name"), approvers.c.revoked_at.is_(None))


def get_active_approver(conn: Connection, name: str) -> ApproverRecord | None:
    return ApproverRecord.maybe(conn.execute(_ACTIVE_APPROVER, {"b_name": name}).first())


def use_link(conn: Connection, nonce: str, request_id: int, approver: str, at: datetime) -> bool:
    """Spend a one-time approval link. False if it was used before."""
    values = {"nonce": nonce, "request_id": request_id, "approver": approver, "used_at": at}
    return conn.execute(_USE_LINK[conn.dialect.name], values).first() is not None


_LINK_USED = select(approval_link_uses.c.nonce).where(approval_link_uses.c.nonce == bindparam("b_nonce"))


def link_used(conn: Connection, nonce: str) -> bool:
    return conn.execute(_LINK_USED, {"b_nonce": nonce}).first() is not None


_STALE = select(pending_refunds).where(pending_refunds.c.status == PendingStatus.PENDING,
                                       pending_refunds.c.requested_at <= bindparam("b_before"))
_STALE_BY_ESCALATION = {
    escalated: query.order_by(pending_refunds.c.requested_at).limit(bindparam("b_limit"))
    for escalated, query in ((None, _STALE), (True, _STALE.where(pending_refunds.c.escalated_at.is_not(None))),
                             (False, _STALE.where(pending_refunds.c.escalated_at.is_(None))))
}


def stale_pending(conn: Connection, requested_before: datetime, *, escalated: bool | None,
                  limit: int) -> list[PendingRefund]:
    """Pending refunds requested before `requested_before`; filtered on whether already escalated."""
    rows = conn.execute(_STALE_BY_ESCALATION[escalated], {"b_before": requested_before, "b_limit": limit})
    return [PendingRefund.of(row) for row in rows]


_MARK_ESCALATED = (update(pending_refunds)
                   .where(pending_refunds.c.id == bindparam("b_id"), pending_refunds.c.escalated_at.is_(None))
                   .values(escalated_at=bindparam("b_at")))


def mark_escalated(conn: Connection, pending_id: int, at: datetime) -> bool:
    return conn.execute(_MARK_ESCALATED, {"b_id": pending_id, "b_at": at}).rowcount == 1


_PENDING_FOR_REQUEST = select(pending_refunds).where(pending_refunds.c.request_id == bindparam("b_id"))


def get_pending_for_request(conn: Connection, request_id: int) -> PendingRefund | None:
    return PendingRefund.maybe(conn.execute(_PENDING_FOR_REQUEST, {"b_id": request_id}).first())


_DECIDE_PENDING = update(pending_refunds).where(pending_refunds.c.id == bindparam("b_id"),
                                                pending_refunds.c.status == PendingStatus.PENDING)


def decide_pending(
    conn: Connection, pending_id: int, *, status: PendingStatus, decided_by: str, at: datetime, note: str | None
) -> bool:
    """Move a pending refund to `status` only if nobody decided it first. True if we did."""
    return conn.execute(_DECIDE_PENDING, {"b_id": pending_id, "status": status, "decided_by": decided_by,
                                          "decided_at": at, "decision_note": note}).rowcount == 1


_LIST_PENDING = (
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
    .where(pending_refunds.c.status == PendingStatus.PENDING)
    .order_by(pending_refunds.c.id)
    .limit(bindparam("b_limit"))
)
_LIST_PENDING_AFTER = _LIST_PENDING.where(pending_refunds.c.id > bindparam("b_after"))
_COUNT_PENDING = (select(func.count()).select_from(pending_refunds)
                  .where(pending_refunds.c.status == PendingStatus.PENDING))


def list_pending(conn: Connection, limit: int, after: int | None = None) -> list[QueueEntry]:
    """Up to `limit` entries of the approval queue in the order they were queued (pending id), with the
    request's details.

    `after` is a queue position (a pending id): only entries after it are listed (keyset pagination, so that a
    page never repeats or skips an entry because others were decided or queued meanwhile).
    """
    if after is None:
        rows = conn.execute(_LIST_PENDING, {"b_limit": limit})
    else:
        rows = conn.execute(_LIST_PENDING_AFTER, {"b_limit": limit, "b_after": after})
    return [QueueEntry.of(row) for row in rows]


def count_pending(conn: Connection) -> int:
    """How many refunds wait for a decision."""
    return int(conn.execute(_COUNT_PENDING).scalar_one())


_INSERT_LOG = insert(refund_log)
_INSERT_AUDIT = insert(audit_log)
_INSERT_OUTBOX = insert(outbox)


def insert_log(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_INSERT_LOG, _only_columns(refund_log, values))


_LOG_FOR_REQUEST = select(refund_log).where(refund_log.c.request_id == bindparam("b_id")).order_by(refund_log.c.id)


def log_rows_for_request(conn: Connection, request_id: int) -> list[LogEntry]:
    return [LogEntry.of(row) for row in conn.execute(_LOG_FOR_REQUEST, {"b_id": request_id})]


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
    conn.execute(_INSERT_AUDIT, {"request_id": request_id, "at": at, "action": action, "actor": actor,
                                 "channel": channel, "detail": detail})


_AUDIT_FOR_REQUEST = select(audit_log).where(audit_log.c.request_id == bindparam("b_id")).order_by(audit_log.c.id)


def audit_for_request(conn: Connection, request_id: int) -> list[AuditEntry]:
    return [AuditEntry.of(row) for row in conn.execute(_AUDIT_FOR_REQUEST, {"b_id": request_id})]


def enqueue(
    conn: Connection, *, request_id: int | None, kind: str, payload: dict[str, Any], at: datetime
) -> None:
    """Write a notification to the outbox; the worker delivers it after this transaction commits."""
    conn.execute(_INSERT_OUTBOX, {"request_id": request_id, "kind": kind, "created_at": at, "attempts": 0,
                                  "payload": json.dumps(payload, sort_keys=True), "next_attempt_at": at})


_EARLIER = outbox.alias("earlier")
_OLDER_PENDING = (
    select(func.count())
    .select_from(_EARLIER)
    .where(
        _EARLIER.c.request_id == outbox.c.request_id,
        _EARLIER.c.delivered_at.is_(None),
        _EARLIER.c.dead_at.is_(None),
        _EARLIER.c.id < outbox.c.id,
    )
    .scalar_subquery()
)
# Outbox rows of this kind are Slack clicks for the worker to decide (see slack_clicks.py), not messages to send.
SLACK_CLICK = "slack_click"
_WORK_DUE = (
    outbox.c.delivered_at.is_(None)
    & outbox.c.dead_at.is_(None)
    & (outbox.c.next_attempt_at <= bindparam("b_now"))
    & ((outbox.c.claimed_until.is_(None)) | (outbox.c.claimed_until <= bindparam("b_now")))
)
_MESSAGE_DUE = (
    (outbox.c.kind != SLACK_CLICK)
    & outbox.c.delivered_at.is_(None)
    & outbox.c.dead_at.is_(None)
    & (outbox.c.next_attempt_at <= bindparam("b_now"))
    & ((outbox.c.claimed_until.is_(None)) | (outbox.c.claimed_until <= bindparam("b_now")))
)
_ANY_DUE_MESSAGE = select(outbox.c.id).where(_MESSAGE_DUE).limit(1)
# For statements built elsewhere on the same rule (slack_digest.py): a message's earlier undelivered ones.
OLDER_PENDING = _OLDER_PENDING
_DUE_MESSAGES = (
    select(outbox)
    .where(_MESSAGE_DUE, (outbox.c.request_id.is_(None)) | (_OLDER_PENDING == 0))
    .order_by(outbox.c.id)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
)
_CLAIM_MESSAGES = (update(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True)))
                   .values(claimed_until=bindparam("b_until"), attempts=outbox.c.attempts + 1))
_MARK_DELIVERED = (update(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True)))
                   .values(delivered_at=bindparam("b_at"), claimed_until=None, last_error=None))


_CLICK_DUE = (outbox.c.kind == SLACK_CLICK) & _WORK_DUE
_ANY_DUE_CLICK = select(outbox.c.id).where(_CLICK_DUE).limit(1)
_DUE_CLICKS = (select(outbox).where(_CLICK_DUE).order_by(outbox.c.id).limit(bindparam("b_limit"))
               .with_for_update(skip_locked=True))
_CLICK_DECIDED = (update(outbox).where(outbox.c.id == bindparam("b_id"), outbox.c.attempts == bindparam("b_attempt"),
                                       outbox.c.delivered_at.is_(None))
                  .values(payload=bindparam("b_payload")))
_CLICK_DONE = (update(outbox).where(outbox.c.id == bindparam("b_id"))
               .values(delivered_at=bindparam("b_at"), claimed_until=None, last_error=None,
                       payload=bindparam("b_payload")))


def record_click(conn: Connection, payload: dict[str, Any], at: datetime) -> None:
    """Record a Slack click as work for the worker (due at once)."""
    enqueue(conn, request_id=None, kind=SLACK_CLICK, payload=payload, at=at)


def any_due_click(conn: Connection, now: datetime) -> bool:
    """Whether some Slack click may wait for the worker (a hint: `claim_due_clicks` decides)."""
    return conn.execute(_ANY_DUE_CLICK, {"b_now": now}).first() is not None


def claim_due_clicks(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[tuple[int, int, str]]:
    """Claim up to `limit` due clicks, oldest first, as (id, attempt, payload).

    Each claim counts one more attempt; the attempt number is the claim's token: `mark_click_decided` only
    succeeds for the latest claim, so a worker whose lease ran out cannot decide behind its successor's back.
    Rows are locked with FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite's write transaction is exclusive).
    """
    clicks = list(conn.execute(_DUE_CLICKS, {"b_now": now, "b_limit": limit}))
    if clicks:
        conn.execute(_CLAIM_MESSAGES, {"b_ids": [c.id for c in clicks], "b_until": now + lease})
    return [(c.id, c.attempts + 1, c.payload) for c in clicks]


def mark_click_decided(conn: Connection, click_id: int, attempt: int, payload: dict[str, Any]) -> bool:
    """Store the click's payload saying it decided, if `attempt` is still its latest claim and it is not done.
    Called in the deciding transaction: False means another worker owns the click, and the decision must roll back."""
    return conn.execute(_CLICK_DECIDED, {"b_id": click_id, "b_attempt": attempt,
                                         "b_payload": json.dumps(payload, sort_keys=True)}).rowcount == 1


def finish_click(conn: Connection, click_id: int, at: datetime, payload: dict[str, Any]) -> None:
    """Mark a click done for good, keeping `payload` (the caller leaves the response_url out of it)."""
    conn.execute(_CLICK_DONE, {"b_id": click_id, "b_at": at, "b_payload": json.dumps(payload, sort_keys=True)})


def any_due_message(conn: Connection, now: datetime) -> bool:
    """Whether some undelivered message may be due (a hint: `claim_due_messages` decides)."""
    return conn.execute(_ANY_DUE_MESSAGE, {"b_now": now}).first() is not None


def claim_due_messages(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[OutboxMessage]:
    """Claim undelivered messages that are due, each the oldest undelivered of its request.

    Holding back later messages of a request keeps Slack's story in order ("approved" never
    arrives before "needs approval"). A dead message (Slack refused it) is never claimed and holds
    nothing back: the story goes on without it, and ops see it in the outbox.
    """
    messages = [OutboxMessage.of(row) for row in conn.execute(_DUE_MESSAGES, {"b_now": now, "b_limit": limit})]
    if messages:
        conn.execute(_CLAIM_MESSAGES, {"b_ids": [m.id for m in messages], "b_until": now + lease})
    return messages


_TRACE_IDS = (select(refund_requests.c.id, refund_requests.c.trace_id)
              .where(refund_requests.c.id.in_(bindparam("b_ids", expanding=True)),
                     refund_requests.c.trace_id.is_not(None)))


def trace_ids(conn: Connection, request_ids: Collection[int]) -> dict[int, str]:
    """The trace id (X-Request-Id at intake) of each of `request_ids` that has one."""
    if not request_ids:
        return {}
    return {row.id: row.trace_id for row in conn.execute(_TRACE_IDS, {"b_ids": list(request_ids)})}


def mark_delivered(conn: Connection, message_ids: Sequence[int], at: datetime) -> None:
    """Mark messages delivered, in one statement (a digest marks thousands)."""
    if message_ids:
        conn.execute(_MARK_DELIVERED, {"b_ids": list(message_ids), "b_at": at})


_MARK_FAILED = (update(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True)))
                .values(next_attempt_at=bindparam("b_retry_at"), claimed_until=None, last_error=bindparam("b_error")))
_MARK_DEAD = (update(outbox).where(outbox.c.id == bindparam("b_id"))
              .values(dead_at=bindparam("b_at"), claimed_until=None, last_error=bindparam("b_error")))


def mark_failed(conn: Connection, message_ids: Sequence[int], *, retry_at: datetime, error: str) -> None:
    """Reschedule messages (or clicks) not delivered, in one statement, with why."""
    conn.execute(_MARK_FAILED, {"b_ids": list(message_ids), "b_retry_at": retry_at, "b_error": error[:1000]})


def mark_dead(conn: Connection, message_id: int, *, at: datetime, error: str) -> None:
    """Park a message Slack refused: never claimed again, kept with its reason for ops."""
    conn.execute(_MARK_DEAD, {"b_id": message_id, "b_at": at, "b_error": error[:1000]})


# -- charge ledger: no over-refund under concurrency ----------------------------------------


def _note_charge(dialect: Any) -> Any:
    statement = dialect.insert(charge_ledger)
    return statement.on_conflict_do_update(
        index_elements=[charge_ledger.c.charge_id],
        set_={"stripe_refunded": statement.excluded.stripe_refunded, "updated_at": statement.excluded.updated_at},
    )


_NOTE_CHARGE = ByDialect(_note_charge)
_LEDGER = charge_ledger.c
_AMOUNT = bindparam("b_amount", type_=Integer)
_ALREADY_REFUNDED = case((_LEDGER.refunded > _LEDGER.stripe_refunded, _LEDGER.refunded),
                         else_=_LEDGER.stripe_refunded)
_RESERVE = (update(charge_ledger)
            .where(_LEDGER.charge_id == bindparam("b_charge"),
                   _LEDGER.reserved + _AMOUNT + _ALREADY_REFUNDED <= _LEDGER.amount)
            .values(reserved=_LEDGER.reserved + _AMOUNT, updated_at=bindparam("b_at")))
_RELEASE = (update(charge_ledger).where(_LEDGER.charge_id == bindparam("b_charge"))
            .values(reserved=_LEDGER.reserved - _AMOUNT, updated_at=bindparam("b_at")))
_RELEASE_REFUNDED = _RELEASE.values(refunded=_LEDGER.refunded + _AMOUNT)


def note_charge(conn: Connection, *, charge_id: str, currency: str, amount: int, stripe_refunded: int,
                at: datetime) -> None:
    """Create or refresh the ledger row of a charge with what Stripe just said about it.

    One INSERT ... ON CONFLICT statement, so concurrent first requests on a charge cannot collide.
    """
    conn.execute(_NOTE_CHARGE[conn.dialect.name], {
        "charge_id": charge_id, "currency": currency, "amount": amount, "reserved": 0, "refunded": 0,
        "stripe_refunded": stripe_refunded, "updated_at": at,
    })


def reserve(conn: Connection, charge_id: str, amount: int, at: datetime) -> bool:
    """Reserve `amount` of the charge for one execution, only if it fits. True if reserved.

    What fits: the charge's amount, less what is in flight here, less the larger of what this
    service has refunded and what Stripe last said was refunded (which includes refunds made
    elsewhere). One guarded UPDATE, so two concurrent requests cannot both take the last money.
    """
    return conn.execute(_RESERVE, {"b_charge": charge_id, "b_amount": amount, "b_at": at}).rowcount == 1


def release(conn: Connection, charge_id: str, amount: int, at: datetime, *, refunded: bool) -> None:
    """End a reservation: the money was refunded (`refunded=True`) or is free again."""
    conn.execute(_RELEASE_REFUNDED if refunded else _RELEASE, {"b_charge": charge_id, "b_amount": amount, "b_at": at})


_UNREFUND = (update(charge_ledger).where(_LEDGER.charge_id == bindparam("b_charge"))
             .values(refunded=_LEDGER.refunded - _AMOUNT, updated_at=bindparam("b_at")))


def unrefund(conn: Connection, charge_id: str, amount: int, at: datetime) -> None:
    """A refund failed after it was made: its money counts as refundable again."""
    conn.execute(_UNREFUND, {"b_charge": charge_id, "b_amount": amount, "b_at": at})


# -- refund lifecycle ------------------------------------------------------------------------


def record_event(conn: Connection, event_id: str, event_type: str, at: datetime) -> bool:
    """Remember a Stripe event id. False if it was seen before (the caller must then do nothing)."""
    values = {"id": event_id, "type": event_type, "received_at": at}
    return conn.execute(_RECORD_EVENT[conn.dialect.name], values).first() is not None


_GET_LOG_ROW = select(refund_log).where(refund_log.c.refund_id == bindparam("b_refund"))
_UPDATE_LOG_ROW = update(refund_log).where(refund_log.c.refund_id == bindparam("b_refund"))


def get_log_row(conn: Connection, refund_id: str) -> LogEntry | None:
    return LogEntry.maybe(conn.execute(_GET_LOG_ROW, {"b_refund": refund_id}).first())


def set_log_status(conn: Connection, refund_id: str, *, status: str, failure_reason: str | None,
                   changed_at: datetime | None, checked_at: datetime | None = None) -> None:
    conn.execute(_UPDATE_LOG_ROW, {"b_refund": refund_id, "status": status, "failure_reason": failure_reason,
                                   "status_changed_at": changed_at, "checked_at": checked_at})


_LAST_CHECK = func.coalesce(refund_log.c.checked_at, refund_log.c.processed_at)
_UNSETTLED = (select(refund_log)
              .where(refund_log.c.status.in_(("pending", "requires_action")), _LAST_CHECK <= bindparam("b_before"))
              .order_by(_LAST_CHECK)
              .limit(bindparam("b_limit")))


def unsettled_refunds(conn: Connection, checked_before: datetime, limit: int) -> list[LogEntry]:
    """Refunds still pending at Stripe that nobody checked since `checked_before`, oldest first."""
    return [LogEntry.of(row) for row in conn.execute(_UNSETTLED, {"b_before": checked_before, "b_limit": limit})]


def touch_log_check(conn: Connection, refund_id: str, at: datetime) -> None:
    conn.execute(_UPDATE_LOG_ROW, {"b_refund": refund_id, "checked_at": at})
