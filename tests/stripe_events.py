"""Builds Stripe webhook deliveries signed the way Stripe signs them (t=..., v1=HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any

_ids = itertools.count(1)


def refund_event(refund: dict[str, Any], event_type: str, *, created: int | None = None) -> dict[str, Any]:
    return {
        "id": f"evt_test_{next(_ids)}",
        "object": "event",
        "type": event_type,
        "created": created if created is not None else int(time.time()),
        "data": {"object": {"object": "refund", **refund}},
        "livemode": False,
        "api_version": "2024-06-20",
    }


def sign(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for `payload`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signed(event: dict[str, Any], secret: str, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps(event).encode()
    return payload, {"Stripe-Signature": sign(payload, secret, **kwargs), "Content-Type": "application/json"}
