"""SQL for the policy's facts and its memory: a customer's recent requests, the store's recent auto-approvals,
circuit-breaker trips, the approval queue's entry for a charge, and the policy versions seen at start.

Every function takes an open connection (the caller owns the transaction). Statements are built once.
"""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType

from sqlalchemy import Connection, bindparam, case, func, insert, select, text, update

from .rules import Recent
from .states import PendingStatus, RequestStatus
from .tables import breaker_trips, pending_refunds, policy_events, refund_requests

__all__ = ["auto_approved_since", "customer_recent", "end_trip", "last_policy_version", "lock_deciding",
           "open_trip", "pending_for_charge", "record_policy_event", "start_trip"]

# The advisory lock that makes deciding under a policy file one at a time on PostgreSQL (SQLite's write
# transaction is exclusive already): two workers must not both see room under the circuit breaker, a
# customer's velocity limit or an empty approval queue for the charge. Any fixed 64-bit number.
_DECIDING_LOCK = 0x7265_6675_6E64_7102
_LOCK_SQL = text("SELECT pg_advisory_xact_lock(:key)")

_R = refund_requests.c
# Requests that count against a customer: every decided one but those refused, rejected or failed.
_NOT_COUNTED = (RequestStatus.REFUSED, RequestStatus.REJECTED, RequestStatus.FAILED, RequestStatus.EXPIRED)
_CUSTOMER_RECENT = (
    select(_R.currency, func.count().label("n"), func.coalesce(func.sum(_R.amount), 0).label("total"))
    .where(_R.customer_key == bindparam("b_customer"), _R.created_at >= bindparam("b_since"),
           _R.id != bindparam("b_id"), _R.status.not_in(_NOT_COUNTED))
    .group_by(_R.currency)
)
_IN_HOUR = _R.created_at >= bindparam("b_hour")
_AUTO_APPROVED = (
    select(_R.currency, func.count().label("day_n"), func.coalesce(func.sum(_R.amount), 0).label("day_total"),
           func.sum(case((_IN_HOUR, 1), else_=0)).label("hour_n"),
           func.sum(case((_IN_HOUR, _R.amount), else_=0)).label("hour_total"))
    .where(_R.decision == "auto_approve", _R.created_at >= bindparam("b_day"), _R.id != bindparam("b_id"))
    .group_by(_R.currency)
)
_PENDING_FOR_CHARGE = (select(pending_refunds.c.id)
                       .where(pending_refunds.c.charge_id == bindparam("b_charge"),
                              pending_refunds.c.status == PendingStatus.PENDING)
                       .order_by(pending_refunds.c.id).limit(1))
_OPEN_TRIP = select(breaker_trips.c.id).where(breaker_trips.c.ended_at.is_(None)).limit(1)
_START_TRIP = insert(breaker_trips)
_END_TRIPS = update(breaker_trips).where(breaker_trips.c.ended_at.is_(None)).values(ended_at=bindparam("b_at"))
_LAST_VERSION = select(policy_events.c.new_version).order_by(policy_events.c.id.desc()).limit(1)
_INSERT_EVENT = insert(policy_events)


def lock_deciding(conn: Connection) -> None:
    """Hold the deciding lock until the transaction ends (PostgreSQL; nothing to do on SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_SQL, {"key": _DECIDING_LOCK})


def customer_recent(conn: Connection, customer: str, since: datetime, request_id: int) -> Recent:
    """The customer's requests since `since` (this one excluded, and those refused, rejected, failed or expired)."""
    rows = conn.execute(_CUSTOMER_RECENT, {"b_customer": customer, "b_since": since, "b_id": request_id}).all()
    return Recent(sum(int(r.n) for r in rows), MappingProxyType({r.currency: int(r.total) for r in rows if r.currency}))


def auto_approved_since(conn: Connection, hour: datetime, day: datetime, request_id: int) -> tuple[Recent, Recent]:
    """What the store auto-approved since `hour` and since `day` (this request excluded), in one statement."""
    rows = conn.execute(_AUTO_APPROVED, {"b_hour": hour, "b_day": day, "b_id": request_id}).all()
    in_hour = Recent(sum(int(r.hour_n) for r in rows), MappingProxyType({r.currency: int(r.hour_total) for r in rows}))
    in_day = Recent(sum(int(r.day_n) for r in rows), MappingProxyType({r.currency: int(r.day_total) for r in rows}))
    return in_hour, in_day


def pending_for_charge(conn: Connection, charge_id: str) -> int | None:
    """The pending id of a refund of `charge_id` waiting for approval, if there is one."""
    found = conn.execute(_PENDING_FOR_CHARGE, {"b_charge": charge_id}).scalar()
    return int(found) if found is not None else None


def open_trip(conn: Connection) -> bool:
    """Whether the circuit breaker is tripped now (a trip not ended)."""
    return conn.execute(_OPEN_TRIP).first() is not None


def start_trip(conn: Connection, request_id: int, detail: str, at: datetime) -> None:
    """Record a new trip, started by `request_id`."""
    conn.execute(_START_TRIP, {"tripped_at": at, "request_id": request_id, "detail": detail})


def end_trip(conn: Connection, at: datetime) -> None:
    """End the open trip, if any: the breaker let a refund through again."""
    conn.execute(_END_TRIPS, {"b_at": at})


def last_policy_version(conn: Connection) -> str | None:
    """The policy version the last start recorded, None before the first."""
    found = conn.execute(_LAST_VERSION).scalar()
    return str(found) if found is not None else None


def record_policy_event(conn: Connection, *, action: str, old: str | None, new: str, source: str, detail: str,
                        at: datetime) -> None:
    conn.execute(_INSERT_EVENT, {"at": at, "action": action, "old_version": old, "new_version": new,
                                 "source": source, "detail": detail})
