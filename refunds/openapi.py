"""The OpenAPI 3.1 document served at /openapi.json.

Request bodies come from the pydantic models that validate them, so the two cannot drift;
tests run schemathesis against this document to prove the responses match too.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel

from .schemas import ApproveBody, RefundRequestBody, RejectBody

ERROR = {"$ref": "#/components/schemas/Error"}


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with optional fields as plain types (explicit nulls are refused)."""
    schema = copy.deepcopy(model.model_json_schema())
    for prop in schema.get("properties", {}).values():
        variants = prop.pop("anyOf", None)
        if variants:
            prop.update(next(v for v in variants if v.get("type") != "null"))
        if prop.get("default") is None:
            prop.pop("default", None)
    return schema


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


MONEY_FIELDS: dict[str, Any] = {
    "amount": {"type": "integer", "description": "Minor units of the currency."},
    "currency": {"type": "string", "description": "ISO 4217 code, lower case."},
    "display": {"type": "string", "description": "For people, e.g. '120.00 USD'."},
}
NULLABLE_STRING = {"type": ["string", "null"]}
PROCESSING = {
    "type": "object",
    "required": ["status", "request_id"],
    "properties": {"status": {"const": "processing"}, "request_id": {"type": "integer"}},
}
AUTH_ERRORS = {"401": _error("Missing or wrong bearer token.")}
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
        "required": ["request_id", "status", "amount", "currency", "history"],
        "properties": {
            "request_id": {"type": "integer"},
            "status": {"enum": ["pending_approval", "executing", "succeeded", "failed", "rejected"]},
            "decision": {"enum": ["auto_approve", "needs_approval"]},
            "policy_explanation": {"type": "string"},
            "charge_id": {"type": "string"},
            "payment_intent_id": NULLABLE_STRING,
            **MONEY_FIELDS,
            "stripe_refund_id": NULLABLE_STRING,
            "approval": {"type": ["object", "null"]},
            "refunds": {"type": "array", "items": {"type": "object"}},
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "action", "actor", "channel"],
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
                        "description": "A repeat with the same key returns the first answer and does nothing more.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }],
                    "requestBody": _json_body(refund_body),
                    "responses": {
                        "200": _ok("Refunded on Stripe now.", refund_ok),
                        "202": _ok("Queued for a manager, or accepted and being retried against Stripe.",
                                   {"oneOf": [queued, PROCESSING]}),
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
                        "200": _ok("Approved and refunded.", approved),
                        "202": _ok("Approved; Stripe is being retried.", PROCESSING),
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
                        }),
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
                                    "schema": {"type": "integer", "minimum": 1}}],
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
