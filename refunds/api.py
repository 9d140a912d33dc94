"""HTTP handlers: authenticate, validate, call the service, translate the outcome to JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError

from . import approvers
from .http_errors import domain_error_response, error_response
from .money import Money
from .openapi import openapi_document
from .schemas import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_ID,
    ApproveBody,
    RefundRequestBody,
    RejectBody,
    describe,
)
from .service import Actor, Outcome, RefundCommand, RefundService

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
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = _bearer()
        if token is None or not approvers.tokens_match(token, current_app.config["SETTINGS"].intake_token):
            return error_response("unauthorized", "Send the intake token as 'Authorization: Bearer <INTAKE_TOKEN>'.")
        return view(*args, **kwargs)

    return wrapped


def approver_auth(view: Handler) -> Handler:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = _bearer()
        name = approvers.authenticate(_service().db, token) if token else None
        if name is None:
            return error_response("unauthorized", "Send a valid approver token as 'Authorization: Bearer <token>'.")
        g.approver = name
        return view(*args, **kwargs)

    return wrapped


def _parse(model: type[Model]) -> Model | tuple[Response, int]:
    try:
        data = json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, RecursionError):  # RecursionError: nested too deep (e.g. 60,000 `[`)
        return error_response("invalid_json", "The request body must be a JSON object.")
    if not isinstance(data, dict):
        return error_response("invalid_json", "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return error_response("invalid_request", describe(exc))


def _idempotency_key() -> str | tuple[Response, int] | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        return error_response(
            "invalid_request",
            "Idempotency-Key: must be 1 to 255 visible ASCII characters (spaces allowed between them).",
        )
    return key


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
    if isinstance(body, tuple):
        return body
    key = _idempotency_key()
    if isinstance(key, tuple):
        return key
    outcome = _service().request_refund(RefundCommand(**body.model_dump()), idempotency_key=key)
    if outcome.status == "pending_approval":
        return jsonify({"status": "pending_approval", "pending_id": outcome.pending_id,
                        "request_id": outcome.request_id}), 202
    return _answer(outcome, {"status": "auto_approved", "refund_id": outcome.refund_id,
                             "request_id": outcome.request_id}, 200)


@bp.post("/approve-refund")
@approver_auth
def approve_refund() -> Any:
    body = _parse(ApproveBody)
    if isinstance(body, tuple):
        return body
    outcome = _service().approve(body.pending_id, Actor(g.approver, "api"))
    return _answer(outcome, {"status": "approved", "refund_id": outcome.refund_id,
                             "request_id": outcome.request_id, "approved_by": g.approver}, 200)


@bp.post("/reject-refund")
@approver_auth
def reject_refund() -> Any:
    body = _parse(RejectBody)
    if isinstance(body, tuple):
        return body
    outcome = _service().reject(body.pending_id, Actor(g.approver, "api"), body.note)
    return jsonify({"status": "rejected", "request_id": outcome.request_id, "rejected_by": g.approver}), 200


@bp.get("/pending-refunds")
@approver_auth
def pending_refunds() -> Any:
    items = []
    for row in _service().pending():
        money = Money(row.pop("amount"), row.pop("currency"))
        items.append({**row, **money.as_json(), "requested_at": _iso(row["requested_at"])})
    return jsonify({"pending": items, "count": len(items)})


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
        "approval": _approval(found["pending"]),
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


def _approval(pending: dict[str, Any] | None) -> dict[str, Any] | None:
    if pending is None:
        return None
    return {"pending_id": pending["id"], "status": pending["status"], "decided_by": pending["decided_by"],
            "decided_at": _iso(pending["decided_at"]), "note": pending["decision_note"]}


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value is not None else None


@bp.get("/healthz")
def healthz() -> Any:
    if _service().db.ping():
        return jsonify({"status": "ok"})
    return error_response("database_unavailable", "The database does not answer.", 503)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())
