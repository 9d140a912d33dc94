"""One JSON error shape for every error: `{"error": "<code>", "message": "<sentence>"}` (`responses.Error`).

Views never build an error answer: they raise. Domain exceptions (`errors.RefundError`) get their status
from their code here; `HttpRefusal` is for what the HTTP layer refuses itself, before any use case runs.
"""

from __future__ import annotations

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .errors import RefundError
from .responses import Error, respond

__all__ = ["DEFAULT_REFUSAL_STATUS", "STATUS_BY_CODE", "HttpRefusal", "error_answer", "register", "status_of"]

# Domain codes the HTTP layer knows; any other refusal from Stripe is a conflict with the charge.
STATUS_BY_CODE = {
    "invalid_json": 400,
    "invalid_request": 400,
    "invalid_event": 400,
    "unsupported_media_type": 415,
    "event_too_early": 409,
    "unauthorized": 401,
    "charge_not_found": 404,
    "not_found": 404,
    "not_pending": 409,
    "already_approved": 409,
    "approver_exists": 409,
    "approver_not_found": 404,
    "self_approval": 403,
    "over_approval_limit": 403,
    "forbidden": 403,
    "invalid_link": 404,
    "charge_already_refunded": 409,
    "amount_exceeds_refundable": 409,
    "charge_disputed": 409,
    "idempotency_mismatch": 422,
    "refused_by_policy": 422,
    "duplicate_pending": 409,
    "stripe_unavailable": 502,
    "stripe_misconfigured": 502,
}
DEFAULT_REFUSAL_STATUS = 409


class HttpRefusal(Exception):
    """A request the HTTP layer refuses itself (no credentials, a bad signature, an endpoint not configured):
    answered with `code`, `message` and `status` as the one error shape."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def status_of(code: str) -> int:
    """The HTTP status of a domain error code."""
    return STATUS_BY_CODE.get(code, DEFAULT_REFUSAL_STATUS)


def error_answer(code: str, message: str, status: int | None = None, *, request_id: int | None = None) -> Response:
    """The JSON error answer, with its status (looked up from `code` unless given)."""
    # Trusted values: constructed, not validated, so that an error handler cannot fail on its own answer.
    return respond(Error.model_construct(error=code, message=message, request_id=request_id),
                   status or status_of(code))


def register(app: Flask) -> None:
    """Turn every refusal, every HTTP error (404 route, 405 method, 413 ...) and every crash into the JSON shape."""

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if isinstance(exc, RequestEntityTooLarge) and app.config.get("MAX_CONTENT_LENGTH"):
            limit = int(app.config["MAX_CONTENT_LENGTH"])
            message = f"The request body is larger than the limit of {_size(limit)} ({limit:,} bytes)."
        response = error_answer(code, message, exc.code or 500)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # keeps Allow on 405, Retry-After, ...
                response.headers[name] = value
        return response

    @app.errorhandler(RefundError)
    def _domain(exc: RefundError) -> Response:
        return error_answer(exc.code, exc.message)

    @app.errorhandler(HttpRefusal)
    def _refusal(exc: HttpRefusal) -> Response:
        return error_answer(exc.code, exc.message, exc.status)

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_answer("internal_error", "Something went wrong on our side; nothing was lost, try again.", 500)


def _size(count: int) -> str:
    """`64 KiB` for 65,536 bytes; bytes when not a whole number of KiB."""
    return f"{count // 1024} KiB" if count % 1024 == 0 else f"{count:,} bytes"
