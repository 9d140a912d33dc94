"""HTTP handlers: authenticate, parse, call one use case, answer with one response model (`responses`).

Nothing here builds JSON or an error by hand: parsing raises InvalidRequest (or InvalidJson,
UnsupportedMediaType), refusals raise, and `http_errors` turns every exception into the one error shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from pydantic import BaseModel, ValidationError

from . import approvers
from .approval_links import ApprovalLinks
from .errors import ApproverNotFound, Forbidden, InvalidRequest, RequestNotFound
from .http_errors import HttpRefusal, error_answer
from .intake_auth import WEBHOOK_KEY_PREFIX, IntakeAuth, IntakeCaller
from .json_body import parse_object
from .limits import APPROVER_NAME, APPROVER_NAME_PATTERN, IDEMPOTENCY_KEY
from .money import Money
from .openapi import openapi_document
from .pagination import decode_cursor, encode_cursor, page_limit
from .responses import (
    ApprovalLimit,
    Approved,
    Approver,
    ApproverList,
    AutoApproved,
    AwaitingSecondApproval,
    DryRun,
    Health,
    NewApprover,
    PendingPage,
    PendingRefund,
    Processing,
    Queued,
    RefundHistory,
    Rejected,
    Revoked,
    respond,
)
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

__all__ = ["approver_auth", "bp", "intake_auth"]

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
            raise HttpRefusal("unauthorized", "Send the intake token as 'Authorization: Bearer <INTAKE_TOKEN>', or "
                                              "sign the request with INTAKE_SIGNING_SECRET (Standard Webhooks: "
                                              "webhook-id, webhook-timestamp within 5 minutes, webhook-signature).",
                              401)
        g.intake = caller
        return view(*args, **kwargs)

    return wrapped


def approver_auth(view: Handler) -> Handler:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = _bearer()
        approver = approvers.authenticate(_service().db, token) if token else None
        if approver is None:
            raise HttpRefusal("unauthorized", "Send a valid approver token as 'Authorization: Bearer <token>'.", 401)
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


def _unfinished(outcome: Outcome) -> Response:
    """The answer to an outcome neither refunded nor queued: 202 `processing` while Stripe is retried, else
    (failed) the error, naming the request."""
    if outcome.status == "processing":
        return respond(Processing.of(outcome), 202)
    assert outcome.status in ("failed", "refused") and outcome.error is not None
    return error_answer(outcome.error.code, outcome.error.message, request_id=outcome.request_id)


@bp.post("/refund-request")
@intake_auth
def refund_request() -> Response:
    body = _parse(RefundRequestBody)
    key = _intake_idempotency_key(g.intake)
    fields = body.model_dump(exclude={"dry_run"})
    if body.dry_run:  # changes nothing, so it needs no idempotency: the key is checked, never stored
        return respond(DryRun.model_validate(_service().dry_run(RefundCommand(**fields)), from_attributes=True))
    outcome = _service().request_refund(RefundCommand(**fields), idempotency_key=key,
                                        channel="signed" if g.intake.channel == "signed" else "api")
    if outcome.status == "pending_approval":
        return respond(Queued.of(outcome), 202)
    if outcome.status == "auto_approved":
        return respond(AutoApproved.of(outcome))
    return _unfinished(outcome)


@bp.post("/approve-refund")
@approver_auth
def approve_refund() -> Response:
    body = _parse(ApproveBody)
    outcome = _service().approve(body.pending_id, Actor(g.approver, "api"))
    if outcome.status == "awaiting_second_approval":
        return respond(AwaitingSecondApproval.of(outcome, approved_by=g.approver), 202)
    if outcome.status == "approved":
        return respond(Approved.of(outcome, approved_by=g.approver))
    return _unfinished(outcome)


@bp.post("/reject-refund")
@approver_auth
def reject_refund() -> Response:
    body = _parse(RejectBody)
    outcome = _service().reject(body.pending_id, Actor(g.approver, "api"), body.note)
    return respond(Rejected.of(outcome, rejected_by=g.approver))


@bp.get("/pending-refunds")
@approver_auth
def pending_refunds() -> Response:
    limit = page_limit(request.args.get("limit"))
    rows, total = _service().pending(limit + 1, decode_cursor(request.args.get("cursor")))
    more, rows = len(rows) > limit, rows[:limit]  # one more than asked tells whether a next page exists
    items = [PendingRefund.model_validate(row) for row in rows]
    following = url_for(".pending_refunds", limit=limit, cursor=encode_cursor(items[-1].pending_id)) if more else None
    links: ApprovalLinks | None = current_app.extensions.get("approval_links")
    if links is not None:  # the caller's own one-click link, bound to them and this amount
        items = [item.model_copy(update={"approval_link": links.url(
            item.pending_id, g.approver, item.amount, item.currency, credential=g.approver_record.token_hash,
        )}) for item in items]
    return respond(PendingPage(pending=items, count=total, next=following))


@bp.get("/approvers")
@approver_auth
def list_approvers() -> Response:
    _admin_only()
    return respond(ApproverList(approvers=[Approver.of(a) for a in approvers.list_all(_service().db)]))


@bp.post("/approvers")
@approver_auth
def add_approver() -> Response:
    _admin_only()
    body = _parse(NewApproverBody)
    try:
        emails = approvers.normalise_emails(body.emails or ())
        limits = [Money(amount, currency) for currency, amount in sorted((body.approval_limits or {}).items())]
        token = approvers.add(_service().db, body.name, _service().clock(), role=body.role,
                              limits=limits, slack_user_id=body.slack_user_id, emails=emails)
    except ValueError as exc:  # an address that is not one once normalised (a full-width at sign, say)
        raise InvalidRequest(str(exc)) from None
    current_app.logger.info("approver %s added by %s", body.name, g.approver)
    shown = [ApprovalLimit.model_validate(m) for m in limits]
    return respond(NewApprover(name=body.name, role=body.role, approval_limits=shown,
                               slack_user_id=body.slack_user_id, emails=emails, token=token), 201)


@bp.delete("/approvers/<name>")
@approver_auth
def revoke_approver(name: str) -> Response:
    _admin_only()
    if not re.fullmatch(APPROVER_NAME_PATTERN, name):  # same rule as POST /approvers; no NUL reaches SQL
        raise ApproverNotFound(f"No active approver named {name[:APPROVER_NAME]!r}.")
    approvers.revoke(_service().db, name, _service().clock())
    current_app.logger.info("approver %s revoked by %s", name, g.approver)
    return respond(Revoked(name=name))


def _admin_only() -> None:
    if not g.approver_record.is_admin:
        raise Forbidden(f"{g.approver} is not an admin.")


@bp.get("/refunds/<int:request_id>")
@approver_auth
def refund_history(request_id: int) -> Response:
    if request_id > MAX_ID:  # no such id can exist, and the database cannot even compare it
        raise RequestNotFound(f"No refund request with id {request_id}.")
    return respond(RefundHistory.of(_service().history(request_id)))


@bp.get("/healthz")
def healthz() -> Response:
    if not _service().db.ping():
        raise HttpRefusal("database_unavailable", "The database does not answer.", 503)
    return respond(Health())


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
