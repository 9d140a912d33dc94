"""POST /stripe/webhook: Stripe's refund events, verified on the raw body, handled once each."""

from __future__ import annotations

from datetime import UTC, datetime

import stripe
from flask import Blueprint, Response, current_app, request

from .http_errors import HttpRefusal
from .json_body import parse_value
from .lifecycle import RefundLifecycle
from .responses import WebhookReceipt, respond
from .schemas import parse_stripe_event
from .stripe_gateway import RefundInfo

__all__ = ["bp"]

bp = Blueprint("stripe_webhooks", __name__)


@bp.post("/stripe/webhook")
def stripe_webhook() -> Response:
    secret = current_app.config["SETTINGS"].stripe_webhook_secret
    if not secret:
        raise HttpRefusal("webhooks_not_configured", "Set STRIPE_WEBHOOK_SECRET to receive Stripe events.", 503)
    payload = request.get_data(cache=False)
    try:
        stripe.WebhookSignature.verify_header(payload, request.headers.get("Stripe-Signature", ""), secret,
                                              stripe.Webhook.DEFAULT_TOLERANCE)
    except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError):
        # Anything wrong with the signature is the sender's problem, never a 500.
        raise HttpRefusal("invalid_signature", "The Stripe-Signature header does not verify this body.",
                          400) from None
    # Signed by Stripe, yet checked like any input: a malformed event is a 400 naming the field, never a 500
    # (which Stripe would retry for days). Raises UnsupportedMediaType, InvalidJson or InvalidEvent.
    event, refund = parse_stripe_event(parse_value(payload, request.mimetype))
    lifecycle: RefundLifecycle = current_app.extensions["refund_lifecycle"]
    info = RefundInfo(refund.id, refund.charge or "", refund.amount, refund.currency, refund.status or "pending",
                      refund.failure_reason, dict(refund.metadata or {})) if refund is not None else None
    result = lifecycle.handle_event(event.id, event.type, info, datetime.fromtimestamp(event.created, tz=UTC))
    return respond(WebhookReceipt.model_validate({"result": result}))
