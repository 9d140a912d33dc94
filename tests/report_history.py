"""A refund history written straight into the tables, as the service and sync write them, for the report's tests.

Each helper writes the rows one outcome leaves behind: the request, its queue entry and approvals, its audit
rows, its `refund_log` row, the charge in `charge_ledger`; `add_charge` a charge as sync caches it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert

from refunds.tables import audit_log, charge_ledger, pending_refunds, refund_log, refund_requests, stripe_charges

_ids = itertools.count(1)


def at(text: str) -> datetime:
    """`at("2026-11-26 10:00")`: a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_request(conn: Connection, path: str, *, amount: int | None, currency: str | None, created: datetime,
                resolved: datetime, product: str | None = None, reason: str = "requested_by_customer",
                requested_by: str = "agent@example.com", charge_id: str | None = None,
                charge_amount: int | None = None, decided_by: str | None = None, queued: datetime | None = None,
                error_code: str | None = None, failure_reason: str | None = None) -> int:
    """One resolved request that ended on `path` (auto_approved, approved, rejected, expired, failed)."""
    n = next(_ids)
    charge_id = charge_id or f"ch_{n}"
    status = {"auto_approved": "succeeded", "approved": "succeeded"}.get(path, path)
    decision = "auto_approve" if path == "auto_approved" else "needs_approval"
    request_id = conn.execute(insert(refund_requests).values(
        body_fingerprint="x" * 64, charge_id=charge_id, amount=amount, currency=currency, reason=reason,
        product=product, status=status, decision=decision, requested_by=requested_by, created_at=created,
        updated_at=resolved, resolved_at=resolved, attempts=0, error_code=error_code,
        stripe_idempotency_key=f"refund-request-{n}")).inserted_primary_key[0]
    audit(conn, request_id, created, "requested", requested_by)
    if charge_amount is not None:
        conn.execute(insert(charge_ledger).values(charge_id=charge_id, currency=currency, amount=charge_amount,
                                                  reserved=0, refunded=0, stripe_refunded=0, updated_at=created))
    if decision == "needs_approval" and path != "failed":
        audit(conn, request_id, queued or created, "needs_approval", "policy")
        conn.execute(insert(pending_refunds).values(
            request_id=request_id, charge_id=charge_id, amount=amount, currency=currency, reason=reason,
            requested_at=created, status=path if path != "failed" else "approved", decided_by=decided_by,
            decided_at=None if path == "expired" else resolved))
    if path in ("auto_approved", "approved") or failure_reason:
        conn.execute(insert(refund_log).values(
            refund_id=f"re_{n}", request_id=request_id, charge_id=charge_id, amount=amount, currency=currency,
            status="failed" if failure_reason else "succeeded", processed_at=resolved, reason=reason,
            decision=path if path != "failed" else "auto_approved", approved_by=decided_by, product=product,
            failure_reason=failure_reason))
    return int(request_id)


def add_pending(conn: Connection, *, amount: int, currency: str, requested: datetime,
                decided: datetime | None = None) -> int:
    """A request in the approval queue since `requested`, decided (approved) at `decided` if given."""
    n = next(_ids)
    request_id = conn.execute(insert(refund_requests).values(
        body_fingerprint="x" * 64, charge_id=f"ch_{n}", amount=amount, currency=currency,
        reason="requested_by_customer", status="pending_approval" if decided is None else "succeeded",
        decision="needs_approval", requested_by="agent@example.com", created_at=requested, updated_at=requested,
        attempts=0)).inserted_primary_key[0]
    conn.execute(insert(pending_refunds).values(
        request_id=request_id, charge_id=f"ch_{n}", amount=amount, currency=currency,
        reason="requested_by_customer", requested_at=requested, status="pending" if decided is None else "approved",
        decided_at=decided, decided_by=None if decided is None else "maria"))
    return int(request_id)


def add_external(conn: Connection, *, amount: int, currency: str, processed: datetime, charge_id: str,
                 status: str = "succeeded", failure_reason: str | None = None, reason: str | None = None) -> str:
    """A refund made outside the service (the Stripe Dashboard), as the webhook or sync logs it."""
    refund_id = f"re_ext_{next(_ids)}"
    conn.execute(insert(refund_log).values(
        refund_id=refund_id, request_id=None, charge_id=charge_id, amount=amount, currency=currency, status=status,
        processed_at=processed, reason=reason, decision="external", failure_reason=failure_reason))
    return refund_id


def add_charge(conn: Connection, charge_id: str, *, created: datetime, amount: int, currency: str = "usd",
               product: str | None = None, fee: int | None = None, fee_currency: str | None = None,
               amount_refunded: int = 0) -> None:
    """A charge in the Stripe charge cache, as `flask --app app sync` writes it."""
    conn.execute(insert(stripe_charges).values(
        charge_id=charge_id, created_at=created, product=product, amount=amount, amount_refunded=amount_refunded,
        currency=currency, fee=fee, fee_currency=fee_currency if fee is not None else None,
        synced_at=created + timedelta(days=1)))


def add_charges(conn: Connection, count: int, *, product: str | None, created: datetime, **kwargs: Any) -> None:
    """`count` charges of `product`, one a minute from `created`."""
    for i in range(count):
        add_charge(conn, f"ch_{product}_{next(_ids)}", created=created + timedelta(minutes=i), product=product,
                   amount=kwargs.get("amount", 1000), currency=kwargs.get("currency", "usd"))


def audit(conn: Connection, request_id: int, when: datetime, action: str, actor: str) -> None:
    conn.execute(insert(audit_log).values(request_id=request_id, at=when, action=action, actor=actor, channel="api"))
