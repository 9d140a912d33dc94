"""The OpenAPI 3.1 document served at /openapi.json.

Request bodies come from the pydantic models that validate them, so the two cannot drift;
tests run schemathesis against this document to prove the responses match too.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel

from .schemas import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_ID,
    REASONS,
    ApproveBody,
    RefundRequestBody,
    RejectBody,
    StripeEvent,
)

ERROR = {"$ref": "#/components/schemas/Error"}


def _inline_defs(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with each `{"$ref": "#/$defs/X"}` replaced by X: in an OpenAPI document `#` is its root."""
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline_defs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_defs(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_defs(item, defs) for item in node]
    return node


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with optional fields as plain types (explicit nulls are refused)."""
    raw = copy.deepcopy(model.model_json_schema())
    schema: dict[str, Any] = _inline_defs(raw, raw.pop("$defs", {}))
    for prop in schema.get("properties", {}).values():
        variants = prop.pop("anyOf", None)
        if variants:
            prop.update(next(v for v in variants if v.get("type") != "null"))
        if prop.get("default") is None:
            prop.pop("default", None)
    return schema


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _ok(description: str, schema: dict[str, Any], links: dict[str, Any] | None = None) -> dict[str, Any]:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if links:
        response["links"] = links
    return response


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


MONEY_FIELDS: dict[str, Any] = {
    "amount": {"type": "integer", "description": "Minor units of the currency."},
    "currency": {"type": "string", "description": "ISO 4217 code, lower case."},
    "display": {"type": "string", "description": "For people, e.g. '120.00 USD'."},
}
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_DATE_TIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_MONEY_FIELDS: dict[str, Any] = {
    name: {**field, "type": [field["type"], "null"], "description": f"{field['description']} null until the charge "
                                                                     "was read from Stripe."}
    for name, field in MONEY_FIELDS.items()
}
PROCESSING = {
    "type": "object",
    "required": ["status", "request_id"],
    "properties": {"status": {"const": "processing"}, "request_id": {"type": "integer"}},
}
AUTH_ERRORS = {"401": _error("Missing or wrong bearer token.")}
# How the ids in one answer feed the next call (OpenAPI links; schemathesis follows them too).
HISTORY_LINK = {"GetRefund": {
    "operationId": "getRefund",
    "parameters": {"request_id": "$response.body#/request_id"},
    "description": "The request's history.",
}}
DECISION_LINKS = {
    f"{verb.capitalize()}Refund": {
        "operationId": f"{verb}Refund",
        "requestBody": {"pending_id": "$response.body#/pending_id"},
        "description": f"{verb.capitalize()} the queued refund (when the answer is `pending_approval`).",
    }
    for verb in ("approve", "reject")
}
BAD_INPUT = {"400": _error("The body is not JSON, or a field is invalid; `message` names it.")}


@cache
def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once)."""
    refund_body = _body_schema(RefundRequestBody)
    refund_body["oneOf"] = [{"required": ["charge_id"]}, {"required": ["payment_intent_id"]}]
    refund_ok = {
        "type": "object",
        "required": ["status", "refund_id", "request_id"],
        "properties": {
            "status": {"const": "auto_approved"},
            "refund_id": {"type": "string"},
            "request_id": {"type": "integer"},
        },
    }
    queued = {
        "type": "object",
        "required": ["status", "pending_id", "request_id"],
        "properties": {
            "status": {"const": "pending_approval"},
            "pending_id": {"type": "integer"},
            "request_id": {"type": "integer"},
        },
    }
    approved = {
        "type": "object",
        "required": ["status", "refund_id", "request_id", "approved_by"],
        "properties": {
            "status": {"const": "approved"},
            "refund_id": {"type": "string"},
            "request_id": {"type": "integer"},
            "approved_by": {"type": "string"},
        },
    }
    stripe_errors = {
        "404": _error("`charge_not_found` (or `not_found`)."),
        "409": _error(
            "Refused: `charge_already_refunded`, `amount_exceeds_refundable`, `charge_disputed`, "
            "`not_pending`, or a refusal code from Stripe."
        ),
        "502": _error("`stripe_unavailable` or `stripe_misconfigured`: not the request's fault; retry later."),
    }
    pending_item = {
        "type": "object",
        "properties": {
            "pending_id": {"type": "integer"},
            "request_id": {"type": "integer"},
            "charge_id": {"type": "string"},
            **MONEY_FIELDS,
            "reason": {"type": "string"},
            "requested_at": {"type": "string", "format": "date-time"},
            "product": NULLABLE_STRING,
            "customer_email": NULLABLE_STRING,
            "ticket_id": NULLABLE_STRING,
            "note": NULLABLE_STRING,
            "policy_explanation": {"type": "string"},
        },
        "required": ["pending_id", "request_id", "charge_id", "amount", "currency", "requested_at"],
    }
    history = {
        "type": "object",
        "required": [
            "request_id", "status", "decision", "policy_explanation", "charge_id", "payment_intent_id",
            "amount", "currency", "display", "reason", "product", "customer_email", "ticket_id", "note",
            "stripe_refund_id", "error", "created_at", "resolved_at", "approval", "refunds", "history",
        ],
        "properties": {
            "request_id": {"type": "integer"},
            "status": {
                "enum": ["received", "pending_approval", "executing", "succeeded", "failed", "rejected"],
                "description": "`received` until the charge was read from Stripe.",
            },
            "decision": {"enum": ["auto_approve", "needs_approval", None], "description": "null until assessed."},
            "policy_explanation": NULLABLE_STRING,
            "charge_id": {**NULLABLE_STRING, "description": "null while a payment intent's charge is not known yet."},
            "payment_intent_id": NULLABLE_STRING,
            **NULLABLE_MONEY_FIELDS,
            "reason": {"enum": list(REASONS)},
            "product": NULLABLE_STRING,
            "customer_email": NULLABLE_STRING,
            "ticket_id": NULLABLE_STRING,
            "note": NULLABLE_STRING,
            "stripe_refund_id": NULLABLE_STRING,
            "error": {
                "type": ["object", "null"],
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": NULLABLE_STRING},
                "description": "Why the request failed; null unless it did.",
            },
            "created_at": {"type": "string", "format": "date-time"},
            "resolved_at": NULLABLE_DATE_TIME,
            "approval": {
                "type": ["object", "null"],
                "required": ["pending_id", "status", "decided_by", "decided_at", "note"],
                "properties": {
                    "pending_id": {"type": "integer"},
                    "status": {"type": "string", "description": "`pending`, `approved` or `rejected`."},
                    "decided_by": NULLABLE_STRING,
                    "decided_at": NULLABLE_DATE_TIME,
                    "note": NULLABLE_STRING,
                },
                "description": "The approval queue entry; null for refunds that were auto-approved.",
            },
            "refunds": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["refund_id", "status", "amount", "currency", "display", "processed_at"],
                    "properties": {
                        "refund_id": {"type": "string"},
                        "status": {"type": "string", "description": "Stripe's refund status."},
                        **MONEY_FIELDS,
                        "processed_at": {"type": "string", "format": "date-time"},
                    },
                },
            },
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "action", "actor", "channel", "detail"],
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "action": {"type": "string"},
                        "actor": {"type": "string"},
                        "channel": {"type": "string"},
                        "detail": NULLABLE_STRING,
                    },
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Refund automation service",
            "version": "1.0.0",
            "description": "Support-tool refund requests, a threshold policy, Stripe refunds, an approval queue.",
        },
        "components": {
            "securitySchemes": {
                "intakeToken": {"type": "http", "scheme": "bearer", "description": "INTAKE_TOKEN"},
                "approverToken": {"type": "http", "scheme": "bearer", "description": "A token from `approvers add`."},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                        "message": {"type": "string"},
                        "request_id": {"type": "integer"},
                    },
                },
            },
        },
        "paths": {
            "/refund-request": {
                "post": {
                    "operationId": "requestRefund",
                    "summary": "Ask for a refund; small ones execute at once, larger ones wait for approval.",
                    "security": [{"intakeToken": []}],
                    "parameters": [{
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "A repeat with the same key returns the first answer and does nothing more. "
                                       "1 to 255 visible ASCII characters, spaces allowed between them.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
                                   "pattern": IDEMPOTENCY_KEY_PATTERN},
                    }],
                    "requestBody": _json_body(refund_body),
                    "responses": {
                        "200": _ok("Refunded on Stripe now.", refund_ok, HISTORY_LINK),
                        "202": _ok("Queued for a manager, or accepted and being retried against Stripe.",
                                   {"oneOf": [queued, PROCESSING]}, {**HISTORY_LINK, **DECISION_LINKS}),
                        **BAD_INPUT, **AUTH_ERRORS, **stripe_errors,
                        "422": _error("`idempotency_mismatch`: the key was used with another body."),
                    },
                }
            },
            "/approve-refund": {
                "post": {
                    "operationId": "approveRefund",
                    "summary": "Approve a pending refund; A second approval never refunds twice.",
                    "security": [{"approverToken": []}],
                    "requestBody": _json_body(_body_schema(ApproveBody)),
                    "responses": {
                        "200": _ok("Approved and refunded.", approved, HISTORY_LINK),
                        "202": _ok("Approved; Stripe is being retried.", PROCESSING, HISTORY_LINK),
                        **BAD_INPUT, **AUTH_ERRORS, **stripe_errors,
                    },
                }
            },
            "/reject-refund": {
                "post": {
                    "operationId": "rejectRefund",
                    "summary": "Reject a pending refund, with an optional note.",
                    "security": [{"approverToken": []}],
                    "requestBody": _json_body(_body_schema(RejectBody)),
                    "responses": {
                        "200": _ok("Rejected.", {
                            "type": "object",
                            "required": ["status", "request_id", "rejected_by"],
                            "properties": {"status": {"const": "rejected"}, "request_id": {"type": "integer"},
                                           "rejected_by": {"type": "string"}},
                        }, HISTORY_LINK),
                        **BAD_INPUT, **AUTH_ERRORS,
                        "404": _error("`not_found`: no such pending refund."),
                        "409": _error("`not_pending`: already decided."),
                    },
                }
            },
            "/pending-refunds": {
                "get": {
                    "operationId": "listPendingRefunds",
                    "summary": "The approval queue, oldest first.",
                    "security": [{"approverToken": []}],
                    "responses": {
                        "200": _ok("The queue.", {
                            "type": "object",
                            "required": ["pending", "count"],
                            "properties": {"pending": {"type": "array", "items": pending_item},
                                           "count": {"type": "integer"}},
                        }),
                        **AUTH_ERRORS,
                    },
                }
            },
            "/refunds/{request_id}": {
                "get": {
                    "operationId": "getRefund",
                    "summary": "One refund request, its approval, Stripe refunds and history.",
                    "security": [{"approverToken": []}],
                    "parameters": [{"name": "request_id", "in": "path", "required": True,
                                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}],
                    "responses": {
                        "200": _ok("The request.", history),
                        **AUTH_ERRORS,
                        "404": _error("`not_found`."),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 when the database answers.",
                    "security": [],
                    "responses": {
                        "200": _ok("Healthy.", {"type": "object", "properties": {"status": {"const": "ok"}}}),
                        "503": _error("`database_unavailable`."),
                    },
                }
            },
            "/stripe/webhook": {
                "post": {
                    "operationId": "stripeWebhook",
                    "summary": "Stripe refund events: refund.created, .updated, .failed, charge.refund.updated.",
                    "description": "Verified with the Stripe-Signature header and STRIPE_WEBHOOK_SECRET; each event "
                                   "id is handled once; a refund's status never moves back from a final state.",
                    "security": [],
                    "parameters": [{"name": "Stripe-Signature", "in": "header", "required": True,
                                    "schema": {"type": "string"}}],
                    "requestBody": _json_body(_body_schema(StripeEvent)),
                    "responses": {
                        "200": _ok("Received.", {
                            "type": "object",
                            "required": ["received", "result"],
                            "properties": {"received": {"const": True},
                                           "result": {"enum": ["applied", "ignored", "duplicate"]}},
                        }),
                        "400": _error("`invalid_signature`, or `invalid_event` (signed, but not a Stripe event; "
                                      "`message` names the field)."),
                        "503": _error("`webhooks_not_configured`: STRIPE_WEBHOOK_SECRET is unset."),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "security": [],
                    "responses": {"200": _ok("OpenAPI 3.1.", {"type": "object"})},
                }
            },
        },
    }
