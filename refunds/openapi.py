"""The OpenAPI 3.1 document served at /openapi.json.

Request bodies come from the pydantic models that validate them, so the two cannot drift;
tests run schemathesis against this document to prove the responses match too.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from pydantic import BaseModel

from . import limits
from .intake_auth import WEBHOOK_KEY_PREFIX
from .pagination import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT
from .schemas import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_ID,
    REASONS,
    ApproveBody,
    NewApproverBody,
    RefundRequestBody,
    RejectBody,
    StripeEvent,
    StripeRefund,
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
    return {
        "required": True,
        "description": "JSON (RFC 8259) in UTF-8, sent with `Content-Type: application/json` (parameters such as "
                       "`charset=utf-8` are fine); at most 64 KiB. A key repeated in one object, at any depth, and "
                       "the non-JSON constants NaN and Infinity are refused with `400 invalid_json`.",
        "content": {"application/json": {"schema": schema}},
    }


def _stripe_event_schema() -> dict[str, Any]:
    """The event's schema, where `data.object` must be a valid refund when it says it is one."""
    schema = _body_schema(StripeEvent)
    data_object = schema["properties"]["data"]["properties"]["object"]
    data_object.update({
        "if": {"type": "object", "required": ["object"], "properties": {"object": {"const": "refund"}}},
        "then": _inline_defs(StripeRefund.model_json_schema(), {}),  # as Stripe sends it: nulls allowed
    })
    return schema


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
AWAITING_SECOND = {
    "type": "object",
    "required": ["status", "request_id", "pending_id", "approved_by"],
    "properties": {"status": {"const": "awaiting_second_approval"}, "request_id": {"type": "integer"},
                   "pending_id": {"type": "integer"}, "approved_by": {"type": "string"}},
}
APPROVER: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "role": {"enum": ["approver", "admin"]},
                   "approval_limit": {"type": ["integer", "null"]}, "slack_user_id": {"type": ["string", "null"]},
                   "emails": {"type": "array", "items": {"type": "string"},
                              "description": "Their email addresses, normalised (NFKC, case-folded, trimmed)."},
                   "active": {"type": "boolean"}, "created_at": {"type": "string"}},
}


def HTML(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


AUTH_ERRORS = {"401": _error("Missing or wrong bearer token.")}
SIGNED_INTAKE = {
    "type": "apiKey",
    "in": "header",
    "name": "webhook-signature",
    "description": (
        "Standard Webhooks (https://www.standardwebhooks.com/), verified with INTAKE_SIGNING_SECRET. Three headers: "
        "`webhook-id`, the message's unique id, which is the request's idempotency key (a replay gets the first "
        "answer and does nothing more; the same id with another body gets `422 idempotency_mismatch`); "
        "`webhook-timestamp`, Unix seconds, within 5 minutes of the server's clock either way; and "
        "`webhook-signature`, `v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` keyed "
        "with the base64-decoded part of the `whsec_` secret. Several signatures, separated by spaces, are allowed "
        "while a secret is rotated; one valid signature is enough."
    ),
}
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
# Every operation that reads a JSON body answers these when the body itself is wrong.
BODY_ERRORS = {
    "413": _error("`request_entity_too_large`: the body is over the 64 KiB limit."),
    "415": _error("`unsupported_media_type`: the body was not sent as `Content-Type: application/json`."),
}
BAD_INPUT = {
    "400": _error("`invalid_json` (not UTF-8, not JSON, a repeated key, NaN or Infinity, or not an object; "
                  "`message` says which and where) or `invalid_request` (a field is invalid; `message` names it)."),
    **BODY_ERRORS,
}
SLACK_INTERACTIONS = {"post": {
    "operationId": "slackInteraction",
    "summary": "Approve and Reject clicked in Slack: the Slack app's Interactivity Request URL.",
    "description": (
        "Slack signs each request with the app's signing secret (SLACK_SIGNING_SECRET): `X-Slack-Signature` is "
        "`v0=` and the hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`; requests older than 5 "
        "minutes are refused. The clicking Slack user must be linked to an active approver "
        "(`approvers add|set NAME --slack-user U...`). The click is recorded, then answered with an empty 200; "
        "the worker decides it once and its outcome replaces the message through the payload's "
        "`response_url` (only under SLACK_RESPONSE_URL_PREFIX). Anyone else gets a note only they can see, "
        "and nothing is decided."
    ),
    "security": [],
    "parameters": [
        {"name": "X-Slack-Signature", "in": "header", "required": True, "schema": {"type": "string"}},
        {"name": "X-Slack-Request-Timestamp", "in": "header", "required": True,
         "description": "Unix seconds.", "schema": {"type": "string"}},
    ],
    "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object",
        "required": ["payload"],
        "properties": {"payload": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "Slack's interaction payload: for a click, `type` `block_actions`, `user.id`, "
                           "`actions[0].action_id` (`approve_refund` or `reject_refund`) and `.value` (the "
                           "pending id), `state.values` (the optional `reject_reason`) and `response_url`. "
                           "Other interaction types are acknowledged and ignored.",
        }},
    }}}},
    "responses": {
        "200": {"description": "Received; the outcome follows in Slack."},
        "400": _error("`invalid_payload`: signed, but `payload` is not a Slack interaction; `message` says why."),
        "401": _error("`invalid_signature`: missing, wrong or older than 5 minutes."),
        "503": _error("`slack_not_configured`: SLACK_SIGNING_SECRET is unset."),
    },
}}


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
    pending_item: dict[str, Any] = {
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
            "approval_link": {"type": "string", "description": "Your signed one-click link (when links are on)."},
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
                "enum": ["received", "pending_approval", "executing", "succeeded", "failed", "rejected", "expired"],
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
                    "status": {"type": "string", "description": "`pending`, `approved`, `rejected` or `expired`."},
                    "decided_by": NULLABLE_STRING,
                    "decided_at": NULLABLE_DATE_TIME,
                    "note": NULLABLE_STRING,
                    "approvals": {"type": "array", "description": "Each approval: who, through which channel, when.",
                                  "items": {"type": "object", "required": ["approver", "channel", "at"],
                                            "properties": {"approver": {"type": "string"},
                                                           "channel": {"type": "string"},
                                                           "at": {"type": "string", "format": "date-time"}}}},
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
            "description": "Support-tool refund requests, a threshold policy, Stripe refunds, an approval queue.\n\n"
                           "String format `unambiguous` (people's names and addresses): no invisible or control "
                           "characters (zero-width space and joiners, U+2060, U+FEFF, bidi controls, tabs, "
                           "newlines) and no word mixing scripts (a Cyrillic і in a Latin name); otherwise "
                           "`400 invalid_request` naming the field.",
        },
        "components": {
            "securitySchemes": {
                "intakeToken": {"type": "http", "scheme": "bearer", "description": "INTAKE_TOKEN"},
                "signedIntake": SIGNED_INTAKE,
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
                    "security": [{"intakeToken": []}, {"signedIntake": []}],
                    "parameters": [{
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "A repeat with the same key returns the first answer and does nothing more. "
                                       "1 to 255 visible ASCII characters, spaces allowed between them, not starting "
                                       f"with `{WEBHOOK_KEY_PREFIX}`. Checked on signed requests too, but there the "
                                       "`webhook-id` is the key.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
                                   "pattern": IDEMPOTENCY_KEY_PATTERN,
                                   "not": {"pattern": f"^{re.escape(WEBHOOK_KEY_PREFIX)}"}},
                    }],
                    "requestBody": _json_body(refund_body),
                    "responses": {
                        "200": _ok("Refunded on Stripe now.", refund_ok, HISTORY_LINK),
                        "202": _ok("Queued for a manager, or accepted and being retried against Stripe.",
                                   {"oneOf": [queued, PROCESSING]}, {**HISTORY_LINK, **DECISION_LINKS}),
                        **stripe_errors,
                        **BAD_INPUT,
                        "400": _error("`invalid_json` (not UTF-8, not JSON, a repeated key, NaN or Infinity, or not "
                                      "an object; `message` says which and where) or `invalid_request` (a field is "
                                      "invalid, or `Idempotency-Key` (or a signed request's `webhook-id`) cannot be "
                                      "a key; `message` names it)."),
                        "401": _error("No valid bearer token and no valid signature: a signature header missing or "
                                      "malformed, a timestamp more than 5 minutes away, or no signature made with a "
                                      "configured secret over this exact body."),
                        "422": _error("`idempotency_mismatch`: the key (or the signed `webhook-id`) was used with "
                                      "another body."),
                    },
                }
            },
            "/approve-refund": {
                "post": {
                    "operationId": "approveRefund",
                    "summary": "Approve a pending refund. It executes once enough different approvers approved "
                               "(two above TWO_PERSON_THRESHOLD); a second approval never refunds twice.",
                    "security": [{"approverToken": []}],
                    "requestBody": _json_body(_body_schema(ApproveBody)),
                    "responses": {
                        "200": _ok("Approved and refunded.", approved, HISTORY_LINK),
                        "202": _ok("Approved; Stripe is being retried, or a second approver is needed.",
                                   {"oneOf": [PROCESSING, AWAITING_SECOND]}, HISTORY_LINK),
                        **BAD_INPUT, **AUTH_ERRORS, **stripe_errors,
                        "403": _error("`self_approval` (they asked for it) or `over_approval_limit`."),
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
                    "summary": "The approval queue, first queued first, a page at a time.",
                    "description": "Follow `next` until it is null to read the whole queue. Pages are keyset "
                                   "pages: refunds decided between two pages never make the next page skip or "
                                   "repeat one, and refunds queued meanwhile come on a later page (even one requested "
                                   "long before, whose assessment waited for Stripe). Items are in the order "
                                   "they were queued; `requested_at` need not grow from item to item.",
                    "security": [{"approverToken": []}],
                    "parameters": [
                        {"name": "limit", "in": "query", "required": False,
                         "description": f"How many refunds a page holds at most (default {DEFAULT_LIMIT}).",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                    "default": DEFAULT_LIMIT}},
                        {"name": "cursor", "in": "query", "required": False,
                         "description": "Where the page starts: opaque, taken from the previous page's `next`. "
                                        "Absent: the start of the queue.",
                         "schema": {"type": "string", "pattern": CURSOR_PATTERN}},
                    ],
                    "responses": {
                        "200": _ok("One page of the queue.", {
                            "type": "object",
                            "required": ["pending", "count", "next"],
                            "properties": {
                                "pending": {"type": "array", "items": pending_item, "maxItems": MAX_LIMIT},
                                "count": {"type": "integer", "minimum": 0,
                                          "description": "How many refunds wait for a decision in the whole "
                                                         "queue (all pages), when this page was read."},
                                "next": {"type": ["string", "null"],
                                         "description": "The path and query of the next page; null on the last "
                                                        "page."},
                            },
                        }),
                        "400": _error("`invalid_request`: `limit` or `cursor` is malformed or out of range; "
                                      "`message` names it."),
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
            "/approvers": {
                "get": {
                    "operationId": "listApprovers",
                    "summary": "Every approver, active or revoked (admins only).",
                    "security": [{"approverToken": []}],
                    "responses": {
                        "200": _ok("The approvers.", {"type": "object", "required": ["approvers"],
                                                      "properties": {"approvers": {"type": "array",
                                                                                   "items": APPROVER}}}),
                        **AUTH_ERRORS, "403": _error("`forbidden`: admins only."),
                    },
                },
                "post": {
                    "operationId": "addApprover",
                    "summary": "Add an approver (admins only); the answer holds their token, shown once.",
                    "security": [{"approverToken": []}],
                    "requestBody": _json_body(_body_schema(NewApproverBody)),
                    "responses": {
                        "201": _ok("Added.", {"type": "object", "required": ["name", "role", "token"],
                                              "properties": {**APPROVER["properties"], "token": {"type": "string"}}}),
                        **BAD_INPUT, **AUTH_ERRORS, "403": _error("`forbidden`: admins only."),
                        "409": _error("`approver_exists`: an active approver has that name, or another approver "
                                      "that Slack user or one of those email addresses (also when a concurrent "
                                      "request took it first)."),
                    },
                },
            },
            "/approvers/{name}": {
                "delete": {
                    "operationId": "revokeApprover",
                    "summary": "Revoke an approver's token at once (admins only).",
                    "security": [{"approverToken": []}],
                    "parameters": [{"name": "name", "in": "path", "required": True,
                                    "schema": {"type": "string", "minLength": 1,
                                               "maxLength": limits.APPROVER_NAME}}],
                    "responses": {
                        "200": _ok("Revoked.", {"type": "object", "required": ["name", "revoked"],
                                                "properties": {"name": {"type": "string"},
                                                               "revoked": {"const": True}}}),
                        **AUTH_ERRORS, "403": _error("`forbidden`: admins only."),
                        "404": _error("`approver_not_found`."),
                    },
                },
            },
            "/approval-links/{token}": {
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "operationId": "showApprovalLink",
                    "summary": "The confirmation page of a signed one-click link. Viewing changes nothing.",
                    "security": [],
                    "responses": {"200": HTML("The refund and its Approve / Reject form."),
                                  "404": HTML("Expired, used, tampered, or no longer matching its refund.")},
                },
                "post": {
                    "operationId": "actOnApprovalLink",
                    "summary": "Approve or reject from the page (needs its CSRF token); the link acts once.",
                    "security": [],
                    "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                        "type": "object",
                        "properties": {"action": {"enum": ["approve", "reject"]}, "csrf_token": {"type": "string"},
                                       "note": {"type": "string", "maxLength": limits.NOTE}},
                    }}}},
                    "responses": {"200": HTML("The outcome."), "400": HTML("No action chosen."),
                                  "403": HTML("Missing or wrong CSRF token."),
                                  "404": HTML("Expired, used, tampered, or no longer matching its refund.")},
                },
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
                    "requestBody": _json_body(_stripe_event_schema()),
                    "responses": {
                        "200": _ok("Received.", {
                            "type": "object",
                            "required": ["received", "result"],
                            "properties": {"received": {"const": True},
                                           "result": {"enum": ["applied", "ignored", "duplicate"]}},
                        }),
                        **BODY_ERRORS,
                        "400": _error("`invalid_signature`, `invalid_json` (signed, but not JSON, or with a repeated "
                                      "key, NaN or Infinity), or `invalid_event` (signed JSON, but not a Stripe event "
                                      "this service can store: a field missing, of the wrong type or too long; "
                                      "`message` names it)."),
                        "409": _error("`event_too_early`: about a refund of ours not recorded yet; Stripe retries."),
                        "503": _error("`webhooks_not_configured`: STRIPE_WEBHOOK_SECRET is unset."),
                    },
                }
            },
            "/slack/interactions": SLACK_INTERACTIONS,
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
