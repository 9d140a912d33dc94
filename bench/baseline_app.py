"""The baseline the service is measured against: a bare Flask endpoint, the same two Stripe calls.

`POST /refund-request` takes the service's body (`{"charge_id": ..., "amount": ...}`) and its
`Idempotency-Key` header, retrieves the charge and creates the refund with stripe-python's
`StripeClient`, configured as the service configures it (explicit retries, a requests session with
a timeout), and answers 200 with the refund's id. It stores nothing, checks no token and has no
policy: whatever the service spends beyond this is the price of what it does for each request.

    STRIPE_SECRET_KEY=... STRIPE_API_BASE=http://127.0.0.1:PORT gunicorn 'bench.baseline_app:create_app()'
"""

from __future__ import annotations

import os
from typing import Any

import stripe
from flask import Flask, jsonify, request


def create_app(api_key: str | None = None, api_base: str | None = None) -> Flask:
    """The baseline app; `api_key` and `api_base` default to STRIPE_SECRET_KEY and STRIPE_API_BASE."""
    app = Flask(__name__)
    client = stripe.StripeClient(
        api_key or os.environ["STRIPE_SECRET_KEY"],
        max_network_retries=2,
        base_addresses={"api": (api_base or os.environ["STRIPE_API_BASE"]).rstrip("/")},
        http_client=stripe.RequestsClient(timeout=20),
    )

    @app.post("/refund-request")
    def refund_request() -> Any:
        body = request.get_json()
        key = request.headers.get("Idempotency-Key")
        charge = client.v1.charges.retrieve(body["charge_id"])
        refund = client.v1.refunds.create(
            params={"charge": charge.id, "amount": body["amount"], "reason": "requested_by_customer",
                    "metadata": {"request_key": key or ""}},
            options={"idempotency_key": key} if key else {},
        )
        return jsonify({"status": "auto_approved", "refund_id": refund.id}), 200

    return app
