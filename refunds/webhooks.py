"""POST /stripe/webhook: Stripe's refund events, verified on the raw body, handled once each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import stripe
from flask import Blueprint, current_app, jsonify, request
from pydantic import ValidationError

from .http_errors import error_response
from .lifecycle import RefundLifecycle
from .schemas import StripeEvent, describe

bp = Blueprint("stripe_webhooks", __name__)


@bp.post("/stripe/webhook")
def stripe_webhook() -> Any:
    secret = current_app.config["SETTINGS"].stripe_webhook_secret
    if not secret:
        return error_response("webhooks_not_configured", "Set STRIPE_WEBHOOK_SECRET to receive Stripe events.", 503)
    payload = request.get_data(cache=False)
    try:
        stripe.WebhookSignature.verify_header(payload, request.headers.get("Stripe-Signature", ""), secret,
                                              stripe.Webhook.DEFAULT_TOLERANCE)
    except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError):
        # Anything wrong with the signature is the sender's problem, never a 500.
        return error_response("invalid_signature", "The Stripe-Signature header does not verify this body.", 400)
    try:
        # Signed by Stripe, yet checked like any input: a malformed event is a 400, never a 500.
        event = StripeEvent.model_validate_json(payload)
    except ValidationError as exc:
        return error_response("invalid_event", f"Not a Stripe event: {describe(exc)}", 400)
    created = datetime.fromtimestamp(event.created, tz=UTC)
    lifecycle: RefundLifecycle = current_app.extensions["refund_lifecycle"]
    result = lifecycle.handle_event(event.id, event.type, event.data.object, created)
    return jsonify({"received": True, "result": result})
