"""The one way a refund request changes status: `transition()`.

It refuses a move `states.TRANSITIONS` does not list, writes the new status with a guarded UPDATE (only
if the request is still where the caller saw it), its audit row, and its outbox message, all in the
caller's transaction; and it returns the request as written, so nobody needs to read it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from . import store
from .records import RefundRequest
from .states import RequestStatus, check_transition

__all__ = ["LostRace", "Message", "facts", "transition"]


class LostRace(Exception):
    """The request was no longer in the status the caller read: another process moved it first.

    Let it leave the caller's `with db.transaction()` block, so that everything written with the
    transition rolls back, then stand aside (the other process carries the request on).
    """

    def __init__(self, request: RefundRequest, to: RequestStatus) -> None:
        super().__init__(f"refund request {request.id} left {request.status} before it could move to {to}")
        self.request_id = request.id


@dataclass(frozen=True)
class Message:
    """An outbox message sent with a transition: its kind, and facts beyond the request's own."""

    kind: str
    extra: dict[str, Any] = field(default_factory=dict)


def transition(conn: Connection, request: RefundRequest, to: RequestStatus, *, at: datetime, actor: str,
               channel: str, action: str | None = None, detail: str | None = None,
               message: Message | None = None, **changes: Any) -> RefundRequest:
    """Move `request` from the status it has to `to`, with `changes` to its other columns.

    Writes, in the caller's transaction: the row (only if still in `request.status`), an audit row
    (`action`, default the new status's name, by `actor` through `channel`, with `detail`) and, if
    given, `message` for the outbox (the request's facts as written, plus `message.extra`).
    Returns the request as written. Raises IllegalTransition for a move the table does not allow
    (a programming error), LostRace when another process moved the request first.
    """
    check_transition(request.status, to)
    values = {**changes, "status": to, "updated_at": at}
    if not store.update_request(conn, request.id, expect_status=request.status, **values):
        raise LostRace(request, to)
    moved = replace(request, **values)
    store.add_audit(conn, request.id, at=at, action=action or to.value, actor=actor, channel=channel, detail=detail)
    if message is not None:
        store.enqueue(conn, request_id=request.id, kind=message.kind, at=at, payload=facts(moved, **message.extra))
    return moved


def facts(request: RefundRequest, **extra: Any) -> dict[str, Any]:
    """What a notification about `request` says, frozen at the moment of the change (extras set to None
    are left out)."""
    known = {
        "request_id": request.id,
        "charge_id": request.charge_id,
        "amount": request.amount,
        "currency": request.currency,
        "reason": request.reason,
        "product": request.product,
        "customer_email": request.customer_email,
        "ticket_id": request.ticket_id,
        "policy_explanation": request.policy_explanation,
        "policy_rule": request.policy_rule,
        "policy_version": request.policy_version,
    }
    known.update({k: v for k, v in extra.items() if v is not None})
    return known
