"""HTTP handlers: authenticate, validate, call the service, translate the outcome to JSON."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from pydantic import BaseModel, ValidationError

from . import approvers
from .approval_links import ApprovalLinks
from .errors import Forbidden, InvalidRequest
from .http_errors import domain_error_response, error_response
from .intake_auth import WEBHOOK_KEY_PREFIX, IntakeAuth, IntakeCaller
from .json_body import parse_object
from .limits import APPROVER_NAME, APPROVER_NAME_PATTERN, IDEMPOTENCY_KEY
from .money import Money
from .openapi import openapi_document
from .pagination import decode_cursor, encode_cursor, page_limit
from .schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_ID,
    ApproveBody,
    NewApproverBody,
    RefundRequestBody,
    RejectBody,
    describe,
)
from .service import Actor, Outcome, RefundCommand, RefundService
from .tables import iso_utc

bp = Blueprint("refunds", __name__)

Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[..., Any]


def _service() -> RefundService:
    service: RefundService = current_app.extensions["refund_service"]
    return service


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def intake_auth(view: Handler) -> Handler:
    """Run `view` only for an authenticated intake request (see IntakeAuth), with `g.intake` saying who sent it."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        authenticator: IntakeAuth = current_app.extensions["intake_auth"]
        # The signature covers these exact bytes; cached, so that the view parses the same ones.
        caller = authenticator.authenticate(request.headers, request.get_data(cache=True))
        if caller is None:
            return error_response("unauthorized", "Send the intake token as 'Authorization: Bearer <INTAKE_TOKEN>', "
                                                  "or sign the request with INTAKE_SIGNING_SECRET (Standard Webhooks: "
                                                  "webhook-id, webhook-timestamp within 5 minutes, webhook-signature).")
        g.intake = caller
        return view(*args, **kwargs)

    return wrapped


def approver_auth(view: Handler) -> Handler:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = _bearer()
        approver = approvers.authenticate(_service().db, token) if token else None
        if approver is None:
            return error_response("unauthorized", "Send a valid approver token as 'Authorization: Bearer <token>'.")
        g.approver = approver.name
        g.approver_record = approver
        return view(*args, **kwargs)

    return wrapped


def _parse(model: type[Model]) -> Model:
    """The request's JSON body as `model`. Raises UnsupportedMediaType, InvalidJson or InvalidRequest."""
    data = parse_object(request.get_data(cache=False), request.mimetype)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None


def _idempotency_key() -> str | None:
    """The Idempotency-Key header, or None. Raises InvalidRequest for one that cannot be a key."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _fits_idempotency_key(key):
        raise InvalidRequest(f"Idempotency-Key: must be 1 to {IDEMPOTENCY_KEY} visible ASCII characters (spaces "
                             "allowed between them).")
    if key.startswith(WEBHOOK_KEY_PREFIX):
        raise InvalidRequest(f"Idempotency-Key: {WEBHOOK_KEY_PREFIX!r} starts the keys of signed requests; choose "
                             "another key.")
    return key


def _intake_idempotency_key(caller: IntakeCaller) -> str | None:
    """What makes this request's retries safe. Raises InvalidRequest.

    A signed request's key is `webhook:<webhook-id>`: the id is signed, so a replay cannot choose a fresh key, and
    the prefix (refused in the header) keeps it apart from every Idempotency-Key. A token request's key is its
    optional Idempotency-Key header, which is checked on a signed request too, but not used there.
    """
    key = _idempotency_key()
    if caller.webhook_id is None:
        return key
    signed_key = WEBHOOK_KEY_PREFIX + caller.webhook_id
    if not _fits_idempotency_key(signed_key):
        longest = IDEMPOTENCY_KEY - len(WEBHOOK_KEY_PREFIX)
        raise InvalidRequest(f"webhook-id: must be 1 to {longest} visible ASCII characters (spaces allowed between "
                             "them).")
    return signed_key


def _fits_idempotency_key(key: str) -> bool:
    return len(key) <= IDEMPOTENCY_KEY and re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key) is not None


def _answer(outcome: Outcome, success: dict[str, Any], status: int) -> tuple[Response, int]:
    if outcome.status == "failed":
        assert outcome.error is not None
        return domain_error_response(outcome.error, request_id=outcome.request_id)
    if outcome.status == "processing":
        return jsonify({"status": "processing", "request_id": outcome.request_id}), 202
    return jsonify(success), status


@bp.post("/refund-request")
@intake_auth
def refund_request() -> Any:
    body = _parse(RefundRequestBody)
    key = _intake_idempotency_key(g.intake)
    outcome = _service().request_refund(RefundCommand(**body.model_dump()), idempotency_key=key,
                                        channel="signed" if g.intake.channel == "signed" else "api")
    if outcome.status == "pending_approval":
        return jsonify({"status": "pending_approval", "pending_id": outcome.pending_id,
                        "request_id": outcome.request_id}), 202
    return _answer(outcome, {"status": "auto_approved", "refund_id": outcome.refund_id,
                             "request_id": outcome.request_id}, 200)


@bp.post("/approve-refund")
@approver_auth
def approve_refund() -> Any:
    body = _parse(ApproveBody)
    outcome = _service().approve(body.pending_id, Actor(g.approver, "api"))
    if outcome.status == "awaiting_second_approval":
        return jsonify({"status": "awaiting_second_approval", "request_id": outcome.request_id,
                        "pending_id": outcome.pending_id, "approved_by": g.approver}), 202
    return _answer(outcome, {"status": "approved", "refund_id": outcome.refund_id,
                             "request_id": outcome.request_id, "approved_by": g.approver}, 200)


@bp.post("/reject-refund")
@approver_auth
def reject_refund() -> Any:
    body = _parse(RejectBody)
    outcome = _service().reject(body.pending_id, Actor(g.approver, "api"), body.note)
    return jsonify({"status": "rejected", "request_id": outcome.request_id, "rejected_by": g.approver}), 200


@bp.get("/pending-refunds")
@approver_auth
def pending_refunds() -> Any:
    limit = page_limit(request.args.get("limit"))
    rows, total = _service().pending(limit + 1, decode_cursor(request.args.get("cursor")))
    more, rows = len(rows) > limit, rows[:limit]  # one more than asked tells whether a next page exists
    following = url_for(".pending_refunds", limit=limit,
                        cursor=encode_cursor(rows[-1]["pending_id"])) if more else None
    links: ApprovalLinks | None = current_app.extensions.get("approval_links")
    items = []
    for row in rows:
        money = Money(row.pop("amount"), row.pop("currency"))
        item = {**row, **money.as_json(), "requested_at": _iso(row["requested_at"])}
        if links is not None:  # the caller's own one-click link, bound to them and this amount
            item["approval_link"] = links.url(row["pending_id"], g.approver, money.amount, money.currency,
                                              credential=g.approver_record.token_hash)
        items.append(item)
    return jsonify({"pending": items, "count": total, "next": following})


@bp.get("/approvers")
@approver_auth
def list_approvers() -> Any:
    _admin_only()
    return jsonify({"approvers": [a.as_json() for a in approvers.list_all(_service().db)]})


@bp.post("/approvers")
@approver_auth
def add_approver() -> Any:
    _admin_only()
    body = _parse(NewApproverBody)
    try:
        emails = approvers.normalise_emails(body.emails or ())
        token = approvers.add(_service().db, body.name, _service().clock(), role=body.role,
                              approval_limit=body.approval_limit, slack_user_id=body.slack_user_id, emails=emails)
    except ValueError as exc:  # an address that is not one once normalised (a full-width at sign, say)
        return error_response("invalid_request", str(exc))
    current_app.logger.info("approver %s added by %s", body.name, g.approver)
    return jsonify({"name": body.name, "role": body.role, "approval_limit": body.approval_limit,
                    "slack_user_id": body.slack_user_id, "emails": emails, "token": token}), 201


@bp.delete("/approvers/<name>")
@approver_auth
def revoke_approver(name: str) -> Any:
    _admin_only()
    if not re.fullmatch(APPROVER_NAME_PATTERN, name):  # same rule as POST /approvers; no NUL reaches SQL
        return error_response("approver_not_found", f"No active approver named {name[:APPROVER_NAME]!r}.")
    approvers.revoke(_service().db, name, _service().clock())
    current_app.logger.info("approver %s revoked by %s", name, g.approver)
    return jsonify({"name": name, "revoked": True})


def _admin_only() -> None:
    if not g.approver_record.is_admin:
        raise Forbidden(f"{g.approver} is not an admin.")


@bp.get("/refunds/<int:request_id>")
@approver_auth
def refund_history(request_id: int) -> Any:
    if request_id > MAX_ID:  # no such id can exist, and the database cannot even compare it
        return error_response("not_found", f"No refund request with id {request_id}.")
    found = _service().history(request_id)
    req = found["request"]
    body = {
        "request_id": req["id"],
        "status": req["status"],
        "decision": req["decision"],
        "policy_explanation": req["policy_explanation"],
        "charge_id": req["charge_id"],
        "payment_intent_id": req["payment_intent_id"],
        **_money_or_nulls(req["amount"], req["currency"]),
        "reason": req["reason"],
        "product": req["product"],
        "customer_email": req["customer_email"],
        "ticket_id": req["ticket_id"],
        "note": req["note"],
        "stripe_refund_id": req["stripe_refund_id"],
        "error": {"code": req["error_code"], "message": req["error_message"]} if req["error_code"] else None,
        "created_at": _iso(req["created_at"]),
        "resolved_at": _iso(req["resolved_at"]),
        "approval": _approval(found["pending"], found["approvals"]),
        "refunds": [
            {"refund_id": r["refund_id"], "status": r["status"], **Money(r["amount"], r["currency"]).as_json(),
             "processed_at": _iso(r["processed_at"])}
            for r in found["refunds"]
        ],
        "history": [
            {"at": _iso(h["at"]), "action": h["action"], "actor": h["actor"], "channel": h["channel"],
             "detail": h["detail"]}
            for h in found["history"]
        ],
    }
    return jsonify(body)


def _money_or_nulls(amount: int | None, currency: str | None) -> dict[str, object]:
    """Amount, currency and display; null until the charge was read from Stripe (received, or failed before)."""
    if amount is None or currency is None:
        return {"amount": None, "currency": None, "display": None}
    return Money(amount, currency).as_json()


def _approval(pending: dict[str, Any] | None, approvals: list[dict[str, Any]]) -> dict[str, Any] | None:
    if pending is None:
        return None
    return {"pending_id": pending["id"], "status": pending["status"], "decided_by": pending["decided_by"],
            "decided_at": _iso(pending["decided_at"]), "note": pending["decision_note"],
            "approvals": [{"approver": a["approver"], "channel": a["channel"], "at": _iso(a["at"])}
                          for a in approvals]}


def _iso(value: Any) -> str | None:
    return iso_utc(value) if value is not None else None


@bp.get("/healthz")
def healthz() -> Any:
    if _service().db.ping():
        return jsonify({"status": "ok"})
    return error_response("database_unavailable", "The database does not answer.", 503)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())
