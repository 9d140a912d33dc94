"""What the report needs from Stripe, copied into the database: refunds made outside the service and the
charge cache. `flask --app app sync` runs these; nothing here is called while a report is made.

Idempotent: a refund already in `refund_log` (by its unique `refund_id`) is left as it is, and a charge
is one row, refreshed. Stripe is read between transactions, never inside one (batches of `BATCH`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, func, select

from ..db import Database
from ..dialects import ByDialect
from ..stripe_gateway import ListedCharge, ListedRefund
from ..tables import refund_log, refund_requests, stripe_charges

__all__ = ["BATCH", "StripeLists", "SyncResult", "cache_charges", "import_refunds"]

BATCH = 200
T = TypeVar("T")


class StripeLists(Protocol):
    """The part of `StripeGateway` that sync reads."""

    def list_refunds(self, *, created_gte: int, created_lt: int | None = None) -> Iterator[ListedRefund]: ...

    def list_charges(self, *, created_gte: int, created_lt: int | None = None) -> Iterator[ListedCharge]: ...


@dataclass(frozen=True)
class SyncResult:
    """How many objects Stripe listed, and how many were new to the database."""

    seen: int
    new: int


def _insert(dialect: Any) -> Any:
    return dialect.insert


_LOG_REFUND = ByDialect(lambda d: _insert(d)(refund_log).on_conflict_do_nothing(index_elements=["refund_id"]))


def _upsert_charge(dialect: Any) -> Any:
    statement = _insert(dialect)(stripe_charges)
    new = statement.excluded
    return statement.on_conflict_do_update(index_elements=["charge_id"], set_={
        "created_at": new.created_at, "product": new.product, "amount": new.amount,
        "amount_refunded": new.amount_refunded, "currency": new.currency,
        # A fee once known stays known: Stripe may list a charge before its balance transaction exists.
        "fee": func.coalesce(new.fee, stripe_charges.c.fee),
        "fee_currency": func.coalesce(new.fee_currency, stripe_charges.c.fee_currency),
        "synced_at": new.synced_at,
    })


_CACHE_CHARGE = ByDialect(_upsert_charge)


def import_refunds(db: Database, refunds: Iterable[ListedRefund]) -> SyncResult:
    """Log every refund of `refunds` that `refund_log` lacks as `decision = 'external'`, at the time Stripe
    made it. Refunds this service made (their `refund_key` metadata names one of our requests) are left to
    the service, which logs them itself. Running it again adds nothing."""
    seen = new = 0
    for batch in _batches(refunds):
        seen += len(batch)
        with db.transaction() as conn:
            rows = [_log_row(r) for r in batch if not _ours(conn, r)]
            known = _logged(conn, [row["refund_id"] for row in rows])
            rows = [row for row in rows if row["refund_id"] not in known]
            if rows:
                conn.execute(_LOG_REFUND[conn.dialect.name], rows)
            new += len(rows)
    return SyncResult(seen, new)


def cache_charges(db: Database, charges: Iterable[ListedCharge], *, now: datetime) -> SyncResult:
    """Write every charge of `charges` into `stripe_charges` (new, or refreshed: refunded amount, fee)."""
    seen = new = 0
    for batch in _batches(charges):
        seen += len(batch)
        with db.transaction() as conn:
            ids = [c.charge_id for c in batch]
            new += len(ids) - len(set(conn.scalars(select(stripe_charges.c.charge_id)
                                                   .where(stripe_charges.c.charge_id.in_(ids)))))
            conn.execute(_CACHE_CHARGE[conn.dialect.name], [_charge_row(c, now) for c in batch])
    return SyncResult(seen, new)


def _batches(items: Iterable[T]) -> Iterator[list[T]]:
    """Lists of at most BATCH items; each is read (from Stripe) before its transaction starts."""
    iterator = iter(items)
    while batch := list(islice(iterator, BATCH)):
        yield batch


def _ours(conn: Connection, refund: ListedRefund) -> bool:
    key = (refund.info.metadata or {}).get("refund_key")
    return bool(key) and conn.execute(select(refund_requests.c.id)
                                      .where(refund_requests.c.stripe_idempotency_key == key)).first() is not None


def _logged(conn: Connection, refund_ids: list[str]) -> set[str]:
    if not refund_ids:
        return set()
    return set(conn.scalars(select(refund_log.c.refund_id).where(refund_log.c.refund_id.in_(refund_ids))))


def _log_row(refund: ListedRefund) -> dict[str, Any]:
    info = refund.info
    return {"refund_id": info.refund_id, "request_id": None, "charge_id": info.charge_id, "amount": info.amount,
            "currency": info.currency, "status": info.status, "processed_at": refund.created,
            "reason": refund.reason, "decision": "external", "approved_by": None, "product": None,
            "failure_reason": info.failure_reason, "status_changed_at": refund.created, "checked_at": None}


def _charge_row(charge: ListedCharge, now: datetime) -> dict[str, Any]:
    return {"charge_id": charge.charge_id, "created_at": charge.created, "product": charge.product,
            "amount": charge.amount, "amount_refunded": charge.amount_refunded, "currency": charge.currency,
            "fee": charge.fee, "fee_currency": charge.fee_currency, "synced_at": now}
