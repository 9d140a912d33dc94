"""One-click approval links: GET and HEAD show the refund and a form; only its POST acts.

Link scanners, Slack's unfurler and prefetchers GET and HEAD links freely, so viewing never
changes anything. The POST needs the CSRF token that the page set in a SameSite=Strict
cookie and in the form (double submit), and spends the link in the transaction that records the
decision: it acts once, and a link whose decision was refused or never committed is not spent.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import Blueprint, Response, current_app, make_response, render_template, request
from sqlalchemy import Connection

from . import limits, store
from .approval_links import ApprovalLinks, LinkClaims
from .errors import LinkInvalid, RefundError
from .money import Money
from .service import CREDENTIAL_CHANGED, Actor, RefundService
from .tables import iso_utc

bp = Blueprint("approval_pages", __name__, template_folder="templates")

CSRF_COOKIE = "refund_csrf"
USED = "This approval link was already used."
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


def _service() -> RefundService:
    service: RefundService = current_app.extensions["refund_service"]
    return service


def _links() -> ApprovalLinks | None:
    links: ApprovalLinks | None = current_app.extensions.get("approval_links")
    return links


@bp.get("/approval-links/<token>")
def show(token: str) -> Response:
    """The confirmation page (HEAD gets the same headers, no body). Changes nothing."""
    try:
        claims, context = _load(token)
    except LinkInvalid as exc:
        return _page_error(exc.message, 404)
    csrf = secrets.token_urlsafe(24)
    response = _page(context, status=200, csrf_token=csrf, approver=claims.approver)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="Strict", secure=request.is_secure,
                        path=request.path, max_age=3600)
    return response


@bp.post("/approval-links/<token>")
def act(token: str) -> Response:
    """Approve or reject as the link's approver, once. Needs the page's CSRF token."""
    try:
        claims, context = _load(token)
    except LinkInvalid as exc:
        return _page_error(exc.message, 404)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    form_token = request.form.get("csrf_token", "")
    if not cookie or not hmac.compare_digest(cookie.encode(), form_token.encode()):
        return _page(context, status=403, message="This form expired or did not come from this page; "
                                                  "open the link again.")
    action = request.form.get("action")
    if action not in ("approve", "reject"):
        return _page(context, status=400, message="Choose Approve or Reject.")
    service = _service()
    actor = Actor(claims.approver, "link")
    links = _links()
    assert links is not None  # _load refused the link otherwise

    def issued_for(token_hash: str) -> bool:
        # Checked again where the decision is made: a token re-issued since _load kills this link there too.
        return links.matches(claims, token_hash)

    used_at = service.clock()  # read before the transaction: a clock never runs while the write lock is held

    def spend(conn: Connection) -> None:
        # In the deciding transaction: the link is spent if and only if it decided. A refusal (a rule, a
        # refund decided meanwhile) or a crash leaves it unspent; a concurrent use of it waits here and loses.
        if not store.use_link(conn, claims.nonce, context["request"].id, claims.approver, used_at):
            raise LinkInvalid(USED)

    try:
        if action == "approve":
            outcome = service.approve(claims.pending_id, actor, credential=issued_for, with_decision=spend)
            message = {
                "approved": f"Approved by {claims.approver}: refund {outcome.refund_id} was sent to Stripe.",
                "awaiting_second_approval": f"{claims.approver}'s approval is recorded; a second approver is needed.",
                "processing": "Approved; Stripe is busy, the refund will be sent shortly.",
            }.get(outcome.status, f"Approved, but the refund failed: {outcome.error.message if outcome.error else ''}")
        else:
            # As the API's note: at most limits.NOTE characters, and no NUL (PostgreSQL text cannot hold one).
            note = (request.form.get("note") or "").replace("\x00", "").strip()[:limits.NOTE] or None
            service.reject(claims.pending_id, actor, note, credential=issued_for, with_decision=spend)
            message = f"Rejected by {claims.approver}."
    except LinkInvalid as exc:
        return _page_error(exc.message, 404)
    except RefundError as exc:
        message = exc.message
    _, context = _load(token, allow_used=True)
    return _page(context, status=200, message=message)


def _load(token: str, *, allow_used: bool = False) -> tuple[LinkClaims, dict[str, Any]]:
    """The link's claims and what the page shows. Raises LinkInvalid for anything off."""
    links = _links()
    if links is None:
        raise LinkInvalid("Approval links are not enabled on this service.")
    claims = links.read(token)
    service = _service()
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
        request_row = store.get_request(conn, pending.request_id)
        approvals = store.approvers_of(conn, pending.request_id)
    context = {
        "request": request_row,
        "pending": pending,
        "money": str(Money(pending.amount, pending.currency)),
        "requested_at": iso_utc(pending.requested_at, "seconds"),
        "approvals": ", ".join(approvals),
        "required": service.approvals_required(pending.amount),
        "actionable": pending.status == "pending",
    }
    return claims, context


def _page(context: dict[str, Any], *, status: int, message: str | None = None, csrf_token: str | None = None,
          approver: str | None = None) -> Response:
    html = render_template("approval.html", message=message, csrf_token=csrf_token, approver=approver,
                           **{**context, "actionable": context["actionable"] and csrf_token is not None})
    response = make_response(html, status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _page_error(message: str, status: int) -> Response:
    response = make_response(render_template("link_error.html", message=message), status)
    response.headers.update(SECURITY_HEADERS)
    return response
