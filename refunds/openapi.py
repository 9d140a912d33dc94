"""The OpenAPI 3.1 document served at /openapi.json, generated once from the models.

Request bodies come from the pydantic models that parse them (`schemas`), answers from the models
that build them (`responses`): a shape is written once and cannot drift from its description.
What no model holds is declared here, once each: paths, operations and their status codes, headers,
security schemes, links between operations, the HTML pages of approval links, and descriptions.
tests/test_openapi_contract.py runs schemathesis against the document to prove the app answers as it says.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from . import limits
from .intake_auth import WEBHOOK_KEY_PREFIX
from .pagination import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT
from .responses import (
    Approved,
    ApproverList,
    AutoApproved,
    AwaitingSecondApproval,
    DryRun,
    Error,
    Health,
    NewApprover,
    PendingPage,
    Processing,
    Queued,
    RefundHistory,
    Rejected,
    Revoked,
    WebhookReceipt,
)
from .schemas import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_ID,
    ApproveBody,
    NewApproverBody,
    RefundRequestBody,
    RejectBody,
    StripeEvent,
    StripeRefund,
)

__all__ = ["RESPONSE_MODELS", "openapi_document"]

# Every answer's model; each is a schema under `components.schemas`, named as its class.
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error, AutoApproved, DryRun, Queued, Processing, Approved, AwaitingSecondApproval, Rejected, PendingPage,
    RefundHistory, ApproverList, NewApprover, Revoked, Health, WebhookReceipt,
)
REF_TEMPLATE = "#/components/schemas/{model}"


class _Untitled(GenerateJsonSchema):
    """Leaves out the title pydantic derives from each field's name: it only repeats the name."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _plain_optionals(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with each field that may be left out (default None) as its plain type: such a field is absent,
    never null (request bodies refuse an explicit null; answers leave the key out)."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or "default" not in prop or prop["default"] is not None:
            continue
        prop.pop("default")
        variants = prop.pop("anyOf", None)
        if variants:
            prop.update(next(v for v in variants if v.get("type") != "null"))
    return schema


def _response_schemas() -> dict[str, Any]:
    """`components.schemas`: every answer's model in serialization mode, with the models they nest."""
    _, top = models_json_schema([(model, "serialization") for model in RESPONSE_MODELS],
                                ref_template=REF_TEMPLATE, schema_generator=_Untitled)
    schemas: dict[str, Any] = top["$defs"]
    assert all(model.__name__ in schemas for model in RESPONSE_MODELS), "a response model was renamed"
    for schema in schemas.values():
        for name in schema.get("required", ()):  # always in the answer: a default would say nothing
            schema["properties"][name].pop("default", None)
    return {name: _plain_optionals(schema) for name, schema in schemas.items()}


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
    """A request model's JSON schema, inlined, with optional fields as plain types (explicit nulls are refused)."""
    raw = copy.deepcopy(model.model_json_schema())
    return _plain_optionals(_inline_defs(raw, raw.pop("$defs", {})))


def _stripe_event_schema() -> dict[str, Any]:
    """The event's schema, where `data.object` must be a valid refund when it says it is one."""
    schema = _body_schema(StripeEvent)
    schema["properties"]["data"]["properties"]["object"].update({
        "if": {"type": "object", "required": ["object"], "properties": {"object": {"const": "refund"}}},
        "then": _inline_defs(StripeRefund.model_json_schema(), {}),  # as Stripe sends it: nulls allowed
    })
    return schema


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "description": JSON_BODY, "content": {"application/json": {"schema": schema}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _answers(spec: dict[str, Any]) -> dict[str, Any]:
    """Responses from a compact spec: a string is an error answer with that description; `(model or schema,
    description[, links])` a JSON answer; a dict is taken as it is."""
    out: dict[str, Any] = {}
    for status, value in spec.items():
        if isinstance(value, str):
            value = (Error, value)
        if isinstance(value, tuple):
            shape, description, *links = value
            schema = _ref(shape) if isinstance(shape, type) else shape
            value = {"description": description, "content": {"application/json": {"schema": schema}}}
            if links:
                value["links"] = links[0]
        out[status] = value
    return out


def _one_of(*models: type[BaseModel]) -> dict[str, Any]:
    return {"oneOf": [_ref(model) for model in models]}


def _operation(operation_id: str, summary: str, security: list[dict[str, list[str]]], answers: dict[str, Any],
               **more: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "security": security, **more,
            "responses": _answers(answers)}


JSON_BODY = ("JSON (RFC 8259) in UTF-8, sent with `Content-Type: application/json` (parameters such as "
             "`charset=utf-8` are fine); at most 64 KiB. A key repeated in one object, at any depth, and the non-JSON "
             "constants NaN and Infinity are refused with `400 invalid_json`.")
APPROVER: list[dict[str, list[str]]] = [{"approverToken": []}]
AUTH_ERRORS = {"401": "Missing or wrong bearer token."}
ADMIN_ERRORS = {**AUTH_ERRORS, "403": "`forbidden`: admins only."}
# Every operation that reads a JSON body answers these when the body itself is wrong.
BODY_ERRORS = {
    "413": "`request_entity_too_large`: the body is over the 64 KiB limit.",
    "415": "`unsupported_media_type`: the body was not sent as `Content-Type: application/json`.",
}
BAD_INPUT = {
    "400": "`invalid_json` (not UTF-8, not JSON, a repeated key, NaN or Infinity, or not an object; `message` says "
           "which and where) or `invalid_request` (a field is invalid; `message` names it).",
    **BODY_ERRORS,
}
STRIPE_ERRORS = {
    "404": "`charge_not_found` (or `not_found`).",
    "409": "Refused: `charge_already_refunded`, `amount_exceeds_refundable`, `charge_disputed`, `not_pending`, or "
           "a refusal code from Stripe.",
    "502": "`stripe_unavailable` or `stripe_misconfigured`: not the request's fault; retry later.",
}
# How the ids in one answer feed the next call (OpenAPI links; schemathesis follows them too).
HISTORY_LINK = {"GetRefund": {"operationId": "getRefund", "parameters": {"request_id": "$response.body#/request_id"},
                              "description": "The request's history."}}
DECISION_LINKS = {
    f"{verb.capitalize()}Refund": {
        "operationId": f"{verb}Refund",
        "requestBody": {"pending_id": "$response.body#/pending_id"},
        "description": f"{verb.capitalize()} the queued refund (when the answer is `pending_approval`).",
    }
    for verb in ("approve", "reject")
}
LINK_GONE = "Expired, used, tampered, or no longer matching its refund."
SIGNED_INTAKE = (
    "Standard Webhooks (https://www.standardwebhooks.com/), verified with INTAKE_SIGNING_SECRET. Three headers: "
    "`webhook-id`, the message's unique id, which is the request's idempotency key (a replay gets the first answer "
    "and does nothing more; the same id with another body gets `422 idempotency_mismatch`); `webhook-timestamp`, "
    "Unix seconds, within 5 minutes of the server's clock either way; and `webhook-signature`, `v1,` and the base64 "
    "HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` keyed with the base64-decoded part of the `whsec_` "
    "secret. Several signatures, separated by spaces, are allowed while a secret is rotated; one valid signature "
    "is enough."
)
SLACK_INTERACTION = (
    "Slack signs each request with the app's signing secret (SLACK_SIGNING_SECRET): `X-Slack-Signature` is `v0=` "
    "and the hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`; requests older than 5 minutes are "
    "refused. The clicking Slack user must be linked to an active approver (`approvers add|set NAME --slack-user "
    "U...`). The click is recorded, then answered with an empty 200; the worker decides it once and its outcome "
    "replaces the message through the payload's `response_url` (only under SLACK_RESPONSE_URL_PREFIX). Anyone else "
    "gets a note only they can see, and nothing is decided."
)
SLACK_PAYLOAD = (
    "Slack's interaction payload: for a click, `type` `block_actions`, `user.id`, `actions[0].action_id` "
    "(`approve_refund` or `reject_refund`) and `.value` (the pending id), `state.values` (the optional "
    "`reject_reason`) and `response_url`. Other interaction types are acknowledged and ignored."
)
PENDING_PAGES = (
    "Follow `next` until it is null to read the whole queue. Pages are keyset pages: refunds decided between two "
    "pages never make the next page skip or repeat one, and refunds queued meanwhile come on a later page (even one "
    "requested long before, whose assessment waited for Stripe). Items are in the order they were queued; "
    "`requested_at` need not grow from item to item."
)
UNAMBIGUOUS = (
    "Support-tool refund requests, a threshold policy, Stripe refunds, an approval queue.\n\nString format "
    "`unambiguous` (people's names and addresses): no invisible or control characters (zero-width space and "
    "joiners, U+2060, U+FEFF, bidi controls, tabs, newlines) and no word mixing scripts (a Cyrillic і in a Latin "
    "name); otherwise `400 invalid_request` naming the field."
)


def _header(name: str, description: str | None = None, *, required: bool = True,
            schema: dict[str, Any] | None = None) -> dict[str, Any]:
    header = {"name": name, "in": "header", "required": required, "schema": schema or {"type": "string"}}
    return {**header, "description": description} if description else header


IDEMPOTENCY_KEY = _header(
    "Idempotency-Key",
    "A repeat with the same key returns the first answer and does nothing more. 1 to 255 visible ASCII characters, "
    f"spaces allowed between them, not starting with `{WEBHOOK_KEY_PREFIX}`. Checked on signed requests too, but "
    "there the `webhook-id` is the key.",
    required=False,
    schema={"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
            "pattern": IDEMPOTENCY_KEY_PATTERN, "not": {"pattern": f"^{re.escape(WEBHOOK_KEY_PREFIX)}"}},
)


def _paths() -> dict[str, Any]:
    refund_body = _body_schema(RefundRequestBody)
    refund_body["oneOf"] = [{"required": ["charge_id"]}, {"required": ["payment_intent_id"]}]
    slack_form = {"type": "object", "required": ["payload"], "properties": {"payload": {
        "type": "string", "contentMediaType": "application/json", "description": SLACK_PAYLOAD}}}
    link_form = {"type": "object", "properties": {
        "action": {"enum": ["approve", "reject"]}, "csrf_token": {"type": "string"},
        "note": {"type": "string", "maxLength": limits.NOTE}}}
    return {
        "/refund-request": {"post": _operation(
            "requestRefund", "Ask for a refund; small ones execute at once, larger ones wait for approval.",
            [{"intakeToken": []}, {"signedIntake": []}],
            {"200": (_one_of(AutoApproved, DryRun), "Refunded on Stripe now (with the rule that decided), or, for "
                                                    "`\"dry_run\": true`, what the policy would decide and why "
                                                    "(`DryRun`: nothing recorded, refunded or sent).", HISTORY_LINK),
             "202": (_one_of(Queued, Processing), "Queued for a manager, or accepted and being retried against "
                                                  "Stripe.", {**HISTORY_LINK, **DECISION_LINKS}),
             **STRIPE_ERRORS, **BODY_ERRORS,
             "400": "`invalid_json` (not UTF-8, not JSON, a repeated key, NaN or Infinity, or not an object; "
                    "`message` says which and where) or `invalid_request` (a field is invalid, or `Idempotency-Key` "
                    "(or a signed request's `webhook-id`) cannot be a key; `message` names it).",
             "401": "No valid bearer token and no valid signature: a signature header missing or malformed, a "
                    "timestamp more than 5 minutes away, or no signature made with a configured secret over this "
                    "exact body.",
             "409": STRIPE_ERRORS["409"] + " With a policy file: `duplicate_pending` (the charge has a refund "
                                           "waiting for approval; `message` names its pending id).",
             "422": "`idempotency_mismatch`: the key (or the signed `webhook-id`) was used with another body; "
                    "`refused_by_policy`: the policy refused the request (`message` is its explanation)."},
            parameters=[IDEMPOTENCY_KEY], requestBody=_json_body(refund_body))},
        "/approve-refund": {"post": _operation(
            "approveRefund", "Approve a pending refund. It executes once enough different approvers approved (two "
                             "above TWO_PERSON_THRESHOLD); a second approval never refunds twice.", APPROVER,
            {"200": (Approved, "Approved and refunded.", HISTORY_LINK),
             "202": (_one_of(Processing, AwaitingSecondApproval), "Approved; Stripe is being retried, or a second "
                                                                  "approver is needed.", HISTORY_LINK),
             **BAD_INPUT, **AUTH_ERRORS, **STRIPE_ERRORS,
             "403": "`self_approval` (they asked for it) or `over_approval_limit`."},
            requestBody=_json_body(_body_schema(ApproveBody)))},
        "/reject-refund": {"post": _operation(
            "rejectRefund", "Reject a pending refund, with an optional note.", APPROVER,
            {"200": (Rejected, "Rejected.", HISTORY_LINK), **BAD_INPUT, **AUTH_ERRORS,
             "404": "`not_found`: no such pending refund.", "409": "`not_pending`: already decided."},
            requestBody=_json_body(_body_schema(RejectBody)))},
        "/pending-refunds": {"get": _operation(
            "listPendingRefunds", "The approval queue, first queued first, a page at a time.", APPROVER,
            {"200": (PendingPage, "One page of the queue."),
             "400": "`invalid_request`: `limit` or `cursor` is malformed or out of range; `message` names it.",
             **AUTH_ERRORS},
            description=PENDING_PAGES, parameters=[
                {"name": "limit", "in": "query", "required": False,
                 "description": f"How many refunds a page holds at most (default {DEFAULT_LIMIT}).",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
                {"name": "cursor", "in": "query", "required": False,
                 "description": "Where the page starts: opaque, taken from the previous page's `next`. Absent: the "
                                "start of the queue.",
                 "schema": {"type": "string", "pattern": CURSOR_PATTERN}},
            ])},
        "/refunds/{request_id}": {"get": _operation(
            "getRefund", "One refund request, its approval, Stripe refunds and history.", APPROVER,
            {"200": (RefundHistory, "The request."), **AUTH_ERRORS, "404": "`not_found`."},
            parameters=[{"name": "request_id", "in": "path", "required": True,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}])},
        "/healthz": {"get": _operation(
            "health", "200 when the database answers.", [],
            {"200": (Health, "Healthy."), "503": "`database_unavailable`."})},
        "/approvers": {
            "get": _operation("listApprovers", "Every approver, active or revoked (admins only).", APPROVER,
                              {"200": (ApproverList, "The approvers."), **ADMIN_ERRORS}),
            "post": _operation(
                "addApprover", "Add an approver (admins only); the answer holds their token, shown once.", APPROVER,
                {"201": (NewApprover, "Added."), **BAD_INPUT, **ADMIN_ERRORS,
                 "409": "`approver_exists`: an active approver has that name, or another approver that Slack user "
                        "or one of those email addresses (also when a concurrent request took it first)."},
                requestBody=_json_body(_body_schema(NewApproverBody))),
        },
        "/approvers/{name}": {"delete": _operation(
            "revokeApprover", "Revoke an approver's token at once (admins only).", APPROVER,
            {"200": (Revoked, "Revoked."), **ADMIN_ERRORS, "404": "`approver_not_found`."},
            parameters=[{"name": "name", "in": "path", "required": True,
                         "schema": {"type": "string", "minLength": 1, "maxLength": limits.APPROVER_NAME}}])},
        "/approval-links/{token}": {
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _operation(
                "showApprovalLink", "The confirmation page of a signed one-click link. Viewing changes nothing.", [],
                {"200": _html("The refund and its Approve / Reject form."), "404": _html(LINK_GONE)}),
            "post": _operation(
                "actOnApprovalLink", "Approve or reject from the page (needs its CSRF token); the link acts once.",
                [], {"200": _html("The outcome."), "400": _html("No action chosen."),
                     "403": _html("Missing or wrong CSRF token."), "404": _html(LINK_GONE)},
                requestBody={"required": True,
                             "content": {"application/x-www-form-urlencoded": {"schema": link_form}}}),
        },
        **_report_pages(),
        "/stripe/webhook": {"post": _operation(
            "stripeWebhook", "Stripe refund events: refund.created, .updated, .failed, charge.refund.updated.", [],
            {"200": (WebhookReceipt, "Received."), **BODY_ERRORS,
             "400": "`invalid_signature`, `invalid_json` (signed, but not JSON, or with a repeated key, NaN or "
                    "Infinity), or `invalid_event` (signed JSON, but not a Stripe event this service can store: a "
                    "field missing, of the wrong type or too long; `message` names it).",
             "409": "`event_too_early`: about a refund of ours not recorded yet; Stripe retries.",
             "503": "`webhooks_not_configured`: STRIPE_WEBHOOK_SECRET is unset."},
            description="Verified with the Stripe-Signature header and STRIPE_WEBHOOK_SECRET; each event id is "
                        "handled once; a refund's status never moves back from a final state.",
            parameters=[_header("Stripe-Signature")], requestBody=_json_body(_stripe_event_schema()))},
        "/slack/interactions": {"post": _operation(
            "slackInteraction", "Approve and Reject clicked in Slack: the Slack app's Interactivity Request URL.",
            [], {"200": {"description": "Received; the outcome follows in Slack."},
                 "400": "`invalid_payload`: signed, but `payload` is not a Slack interaction; `message` says why.",
                 "401": "`invalid_signature`: missing, wrong or older than 5 minutes.",
                 "503": "`slack_not_configured`: SLACK_SIGNING_SECRET is unset."},
            description=SLACK_INTERACTION,
            parameters=[_header("X-Slack-Signature"), _header("X-Slack-Request-Timestamp", "Unix seconds.")],
            requestBody={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": slack_form}}})},
        "/openapi.json": {"get": _operation("openapi", "This document.", [],
                                            {"200": ({"type": "object"}, "OpenAPI 3.1.")})},
    }


# The daily report's JSON (`reports.render.as_json`, also printed by `report daily --format json`): its sections.
DAILY_REPORT: dict[str, Any] = {
    "type": "object", "description": "One day's refund figures; see the README's \"Daily report\".",
    "required": ["date", "tz", "start", "end", "hours", "paths", "refund_kinds", "reasons", "agents", "approvers",
                 "resolution", "resolution_buckets", "approval_wait", "products", "min_charges", "fees", "queue",
                 "failures"],
    "properties": {
        **{name: {"type": "string"} for name in ("date", "tz", "start", "end")},
        "hours": {"type": "number"}, "min_charges": {"type": "integer"},
        **{name: {"type": "object"} for name in ("paths", "refund_kinds", "reasons", "agents", "approvers",
                                                 "resolution", "resolution_buckets", "approval_wait", "fees",
                                                 "queue")},
        **{name: {"type": "array", "items": {"type": "object"}} for name in ("products", "failures")},
    },
}


def _report_pages() -> dict[str, Any]:
    """The daily report page and the approvers' sign-in (see `report_pages`): HTML, declared compactly."""
    off = _html("Sign-in is off: SESSION_SECRET is unset.")
    moved = {"description": "Where to go next.", "headers": {"Location": {"schema": {"type": "string"}}}}
    form = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {"token": {"type": "string"}, "csrf_token": {"type": "string"},
                                         "next": {"type": "string"}}}}}}
    day = {"type": "string", "format": "date", "pattern": r"^(19|[2-8]\d|9[0-8])\d{2}-(0[1-9]|1[0-2])-\d{2}$",
           "description": "A day from 1900 to 9899 (default: yesterday in REPORT_TZ)."}
    return {
        "/reports/daily": {"get": _operation(
            "dailyReportPage", "One day's report with a 30-day chart, for approvers (signed in, or bearer).",
            APPROVER,
            {"200": {"description": "The page, or with `format=json` the report as `report daily --format json`.",
                     "content": {"text/html": {"schema": {"type": "string"}},
                                 "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="DailyReport")}}}},
             "303": moved, "400": "`invalid_request`: `date` or `format` is not one of those allowed.",
             "401": "Wrong bearer token, or none while sign-in is off."},
            parameters=[{"name": "date", "in": "query", "schema": day},
                        {"name": "format", "in": "query", "schema": {"enum": ["html", "json"]}}])},
        "/sign-in": {
            "get": _operation("signInPage", "The approvers' sign-in form.", [],
                              {"200": _html("The form."), "303": moved, "404": off},
                              parameters=[{"name": "next", "in": "query", "schema": {"type": "string"}}]),
            "post": _operation("signIn", "Sign in with an approver token (needs the form's CSRF token).", [],
                               {"303": moved, "401": _html("Not an active approver's token."),
                                "403": _html("Missing or wrong CSRF token."), "404": off}, requestBody=form),
        },
        "/sign-out": {"post": _operation(
            "signOut", "End the session (needs the page's CSRF token).", [],
            {"303": moved, "403": _html("Missing or wrong CSRF token."), "404": off}, requestBody=form)},
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once per process)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Refund automation service", "version": "1.0.0", "description": UNAMBIGUOUS},
        "components": {
            "securitySchemes": {
                "intakeToken": {"type": "http", "scheme": "bearer", "description": "INTAKE_TOKEN"},
                "signedIntake": {"type": "apiKey", "in": "header", "name": "webhook-signature",
                                 "description": SIGNED_INTAKE},
                "approverToken": {"type": "http", "scheme": "bearer", "description": "A token from `approvers add`."},
            },
            "schemas": {**_response_schemas(), "DailyReport": DAILY_REPORT},
        },
        "paths": _paths(),
    }
