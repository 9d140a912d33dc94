"""One JSON error shape for every error: `{"error": "<code>", "message": "<sentence>"}`."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .errors import RefundError

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
    "stripe_unavailable": 502,
    "stripe_misconfigured": 502,
}
DEFAULT_REFUSAL_STATUS = 409


def error_response(code: str, message: str, status: int | None = None, **extra: Any) -> tuple[Response, int]:
    """The JSON error body and its status (looked up from `code` unless given)."""
    body: dict[str, Any] = {"error": code, "message": message, **extra}
    return jsonify(body), status or STATUS_BY_CODE.get(code, DEFAULT_REFUSAL_STATUS)


def domain_error_response(exc: RefundError, **extra: Any) -> tuple[Response, int]:
    return error_response(exc.code, exc.message, **extra)


def register(app: Flask) -> None:
    """Turn every HTTP error (404 route, 405 method, 413 ...) and every crash into the JSON shape."""

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if isinstance(exc, RequestEntityTooLarge) and app.config.get("MAX_CONTENT_LENGTH"):
            limit = int(app.config["MAX_CONTENT_LENGTH"])
            message = f"The request body is larger than the limit of {_size(limit)} ({limit:,} bytes)."
        response, status = error_response(code, message, exc.code or 500)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # keeps Allow on 405, Retry-After, ...
                response.headers[name] = value
        return response, status

    @app.errorhandler(RefundError)
    def _domain(exc: RefundError) -> tuple[Response, int]:
        return domain_error_response(exc)

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> tuple[Response, int]:
        app.logger.exception("unhandled error")
        return error_response("internal_error", "Something went wrong on our side; nothing was lost, try again.", 500)


def _size(count: int) -> str:
    """`64 KiB` for 65,536 bytes; bytes when not a whole number of KiB."""
    return f"{count // 1024} KiB" if count % 1024 == 0 else f"{count:,} bytes"
