"""Read use cases: the approval queue and one request's whole story. Reads only; no write lock."""

from __future__ import annotations

from typing import Any

from . import store
from .db import Database
from .errors import RequestNotFound

__all__ = ["history", "pending"]


def pending(db: Database, limit: int, after: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` entries of the approval queue after position `after` (a pending id), in the order they
    were queued, as plain dicts (`records.QueueEntry`'s fields); and how many entries the whole queue has."""
    with db.read() as conn:
        entries = store.list_pending(conn, limit, after)
        total = store.count_pending(conn)
    return [entry.as_dict() for entry in entries], total


def history(db: Database, request_id: int) -> dict[str, Any]:
    """One request with its approval, Stripe refunds and audit trail, each row as a plain dict with its
    table's columns. Raises RequestNotFound."""
    with db.read() as conn:
        request = store.get_request(conn, request_id)
        if request is None:
            raise RequestNotFound(f"No refund request with id {request_id}.")
        queued = store.get_pending_for_request(conn, request_id)
        return {
            "request": request.as_dict(),
            "pending": queued.as_dict() if queued is not None else None,
            "refunds": [entry.as_dict() for entry in store.log_rows_for_request(conn, request_id)],
            "history": [entry.as_dict() for entry in store.audit_for_request(conn, request_id)],
            "approvals": [entry.as_dict() for entry in store.approvals_for_request(conn, request_id)],
        }
