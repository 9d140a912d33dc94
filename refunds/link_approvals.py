"""Deciding a refund through a signed one-click link: what its page shows, and its one decision.

The use cases behind `approval_pages` (which only translates HTTP): reading a link checks it against
the database (not used, its refund still pending at the same amount, its approver's credential unchanged)
in one read transaction; deciding spends the link in the transaction that records the decision, so that
a link acts once, and a refused or uncommitted decision leaves it unspent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection

from . import store
from .approval_links import ApprovalLinks, LinkClaims
from .errors import LinkInvalid
from .money import Money
from .service import CREDENTIAL_CHANGED, Actor, Outcome, RefundService
from .tables import iso_utc

__all__ = ["USED", "LinkView", "decide", "open_link"]

USED = "This approval link was already used."


@dataclass(frozen=True)
class LinkView:
    """A genuine link and what its page shows: the request and queue entry (records), the amount for people,
    when it was asked for, who approved already, how many approvals it needs, and whether it still waits."""

    claims: LinkClaims
    request: Any
    pending: Any
    money: str
    requested_at: str
    approvals: str
    required: int
    actionable: bool


def open_link(service: RefundService, links: ApprovalLinks | None, token: str, *,
              allow_used: bool = False) -> LinkView:
    """The link `token` and its refund as they stand now. Raises LinkInvalid when links are off, or the
    link is tampered, expired, used (unless `allow_used`), no longer matches its refund, or was made for a
    credential its approver no longer holds."""
    if links is None:
        raise LinkInvalid("Approval links are not enabled on this service.")
    claims = links.read(token)
    with service.db.read() as conn:
        if not allow_used and store.link_used(conn, claims.nonce):
            raise LinkInvalid(USED)
        pending = store.get_pending(conn, claims.pending_id)
        if pending is None or (pending.amount, pending.currency) != (claims.amount, claims.currency):
            raise LinkInvalid("This approval link does not match its refund any more.")
        approver = store.get_active_approver(conn, claims.approver)
        # A revoked or re-issued token kills every link made for it, even when the name is active again.
        if approver is None or not links.matches(claims, approver.token_hash):
            raise LinkInvalid(CREDENTIAL_CHANGED)
        request = store.get_request(conn, pending.request_id)
        approvals = store.approvers_of(conn, pending.request_id)
    return LinkView(claims=claims, request=request, pending=pending, money=str(Money(pending.amount, pending.currency)),
                    requested_at=iso_utc(pending.requested_at, "seconds"), approvals=", ".join(approvals),
                    required=service.approvals_required(pending.amount, pending.currency),
                    actionable=pending.status == "pending")


def decide(service: RefundService, links: ApprovalLinks, view: LinkView, action: Literal["approve", "reject"],
           note: str | None) -> Outcome:
    """Approve or reject `view`'s refund as the link's approver, spending the link with the decision.

    Raises LinkInvalid (the link was used meanwhile, or its approver's token changed since it was read,
    nothing recorded) and whatever `RefundService.approve` or `.reject` raise (the link stays unspent).
    """
    claims = view.claims
    actor = Actor(claims.approver, "link")

    def issued_for(token_hash: str) -> bool:
        # Checked again where the decision is made: a token re-issued since open_link kills this link there too.
        return links.matches(claims, token_hash)

    used_at = service.clock()  # read before the transaction: a clock never runs while the write lock is held

    def spend(conn: Connection) -> None:
        # In the deciding transaction: the link is spent if and only if it decided. A refusal (a rule, a
        # refund decided meanwhile) or a crash leaves it unspent; a concurrent use of it waits here and loses.
        if not store.use_link(conn, claims.nonce, view.request.id, claims.approver, used_at):
            raise LinkInvalid(USED)

    if action == "approve":
        return service.approve(claims.pending_id, actor, credential=issued_for, with_decision=spend)
    return service.reject(claims.pending_id, actor, note, credential=issued_for, with_decision=spend)
