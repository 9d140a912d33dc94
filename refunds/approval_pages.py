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

from . import limits
from .approval_links import ApprovalLinks
from .errors import LinkInvalid, RefundError
from .link_approvals import LinkView, decide, open_link
from .service import RefundService

__all__ = ["bp"]

bp = Blueprint("approval_pages", __name__, template_folder="templates")

CSRF_COOKIE = "refund_csrf"
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


def _open(token: str, *, allow_used: bool = False) -> LinkView:
    return open_link(_service(), _links(), token, allow_used=allow_used)


@bp.get("/approval-links/<token>")
def show(token: str) -> Response:
    """The confirmation page (HEAD gets the same headers, no body). Changes nothing."""
    try:
        view = _open(token)
    except LinkInvalid as exc:
        return _page_error(exc.message, 404)
    csrf = secrets.token_urlsafe(24)
    response = _page(view, status=200, csrf_token=csrf, approver=view.claims.approver)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="Strict", secure=request.is_secure,
                        path=request.path, max_age=3600)
    return response


@bp.post("/approval-links/<token>")
def act(token: str) -> Response:
    """Approve or reject as the link's approver, once. Needs the page's CSRF token."""
    try:
        view = _open(token)
    except LinkInvalid as exc:
        return _page_error(exc.message, 404)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    form_token = request.form.get("csrf_token", "")
    if not cookie or not hmac.compare_digest(cookie.encode(), form_token.encode()):
        return _page(view, status=403, message="This form expired or did not come from this page; open the link "
                                               "again.")
    action = request.form.get("action")
    if action not in ("approve", "reject"):
        return _page(view, status=400, message="Choose Approve or Reject.")
    links = _links()
    assert links is not None  # open_link refused the link otherwise
    approver = view.claims.approver
    # As the API's note: at most limits.NOTE characters, and no NUL (PostgreSQL text cannot hold one).
    note = (request.form.get("note") or "").replace("\x00", "").strip()[:limits.NOTE] or None
    try:
        outcome = decide(_service(), links, view, "approve" if action == "approve" else "reject", note)
    except LinkInvalid as exc:
        return _page_error(exc.message, 404)
    except RefundError as exc:
        message = exc.message
    else:
        message = {
            "approved": f"Approved by {approver}: refund {outcome.refund_id} was sent to Stripe.",
            "awaiting_second_approval": f"{approver}'s approval is recorded; a second approver is needed.",
            "processing": "Approved; Stripe is busy, the refund will be sent shortly.",
            "rejected": f"Rejected by {approver}.",
        }.get(outcome.status, f"Approved, but the refund failed: {outcome.error.message if outcome.error else ''}")
    return _page(_open(token, allow_used=True), status=200, message=message)


def _page(view: LinkView, *, status: int, message: str | None = None, csrf_token: str | None = None,
          approver: str | None = None) -> Response:
    context: dict[str, Any] = {name: getattr(view, name) for name in
                               ("request", "pending", "money", "requested_at", "approvals", "required")}
    html = render_template("approval.html", message=message, csrf_token=csrf_token, approver=approver,
                           actionable=view.actionable and csrf_token is not None, **context)
    response = make_response(html, status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _page_error(message: str, status: int) -> Response:
    response = make_response(render_template("link_error.html", message=message), status)
    response.headers.update(SECURITY_HEADERS)
    return response
