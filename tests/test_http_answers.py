"""The HTTP layer only translates: answers are response models, the document is generated from them, and every
answer keeps the keys and values clients have always seen."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flask import Flask, jsonify
from flask.testing import FlaskClient

from refunds import limits
from refunds.errors import StripeRefused
from refunds.openapi import RESPONSE_MODELS, openapi_document
from refunds.responses import AutoApproved, Error, PendingRefund, RefundHistory, respond
from tests.fakes import FakeGateway

# Every operation's status codes and links, as the hand-written document had them before it was generated.
OPERATIONS = {
    ("/refund-request", "post"): ({"200", "202", "400", "401", "404", "409", "413", "415", "422", "502"},
                                  {"200": {"GetRefund"}, "202": {"GetRefund", "ApproveRefund", "RejectRefund"}}),
    ("/approve-refund", "post"): ({"200", "202", "400", "401", "403", "404", "409", "413", "415", "502"},
                                  {"200": {"GetRefund"}, "202": {"GetRefund"}}),
    ("/reject-refund", "post"): ({"200", "400", "401", "404", "409", "413", "415"}, {"200": {"GetRefund"}}),
    ("/pending-refunds", "get"): ({"200", "400", "401"}, {}),
    ("/refunds/{request_id}", "get"): ({"200", "401", "404"}, {}),
    ("/healthz", "get"): ({"200", "503"}, {}),
    ("/approvers", "get"): ({"200", "401", "403"}, {}),
    ("/approvers", "post"): ({"201", "400", "401", "403", "409", "413", "415"}, {}),
    ("/approvers/{name}", "delete"): ({"200", "401", "403", "404"}, {}),
    ("/approval-links/{token}", "get"): ({"200", "404"}, {}),
    ("/approval-links/{token}", "post"): ({"200", "400", "403", "404"}, {}),
    ("/stripe/webhook", "post"): ({"200", "400", "409", "413", "415", "503"}, {}),
    ("/slack/interactions", "post"): ({"200", "400", "401", "503"}, {}),
    ("/openapi.json", "get"): ({"200"}, {}),
    ("/reports/daily", "get"): ({"200", "303", "400", "401"}, {}),
    ("/sign-in", "get"): ({"200", "303", "404"}, {}),
    ("/sign-in", "post"): ({"303", "401", "403", "404"}, {}),
    ("/sign-out", "post"): ({"303", "403", "404"}, {}),
}
HISTORY_KEYS = {
    "request_id", "status", "decision", "policy_explanation", "charge_id", "payment_intent_id", "amount", "currency",
    "display", "reason", "product", "customer_email", "ticket_id", "note", "stripe_refund_id", "error", "created_at",
    "resolved_at", "approval", "refunds", "history",
}


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], tuple[set[str], dict[str, set[str]]]]:
    return {
        (path, method): (set(op["responses"]), {status: set(answer["links"])
                                                for status, answer in op["responses"].items() if "links" in answer})
        for path, ops in document["paths"].items() for method, op in ops.items() if method != "parameters"
    }


def test_the_generated_document_keeps_every_operation_status_code_and_link(client: FlaskClient) -> None:
    assert _operations(client.get("/openapi.json").get_json()) == OPERATIONS


def test_every_json_answer_in_the_document_is_a_response_model() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert {model.__name__ for model in RESPONSE_MODELS} <= set(schemas)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, answer in op.get("responses", {}).items() if method != "parameters" else ():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or path == "/openapi.json":
                    continue
                refs = [schema] if "$ref" in schema else schema["oneOf"]
                assert all(ref["$ref"].removeprefix("#/components/schemas/") in schemas for ref in refs), \
                    (path, method, status)


def test_the_slack_user_id_carries_its_pattern_in_the_document() -> None:
    document = openapi_document()
    body = document["paths"]["/approvers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["slack_user_id"]["pattern"] == limits.SLACK_USER_ID_PATTERN
    answered = document["components"]["schemas"]["Approver"]["properties"]["slack_user_id"]
    assert {"type": "string", "pattern": limits.SLACK_USER_ID_PATTERN} in answered["anyOf"]


def test_an_answer_is_written_byte_for_byte_as_jsonify_wrote_it(app: Flask) -> None:
    with app.app_context():
        answer = respond(AutoApproved(refund_id="re_1", request_id=7))
        assert answer.get_data() == jsonify({"status": "auto_approved", "refund_id": "re_1",
                                             "request_id": 7}).get_data()
        assert answer.mimetype == "application/json"
        error = respond(Error(error="not_found", message="No such refund."), 404)
        assert (error.status_code, error.get_json()) == (404, {"error": "not_found", "message": "No such refund."})


def test_a_refused_refund_names_its_request_in_the_error(
    client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    gateway.fail_next.append(StripeRefused("Your card was declined.", code="card_declined"))
    response = client.post("/refund-request", json={"charge_id": "ch_small", "amount": 1000}, headers=intake_headers)
    assert response.status_code == 409
    assert response.get_json() == {"error": "card_declined", "message": "Your card was declined.", "request_id": 1}
    assert gateway.calls and not gateway.refunds  # Stripe was asked, and refunded nothing


def test_a_request_history_keeps_every_key_and_value_shape(
    client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str], gateway: FakeGateway
) -> None:
    queued = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 15000}, headers=intake_headers)
    pending_id, request_id = queued.get_json()["pending_id"], queued.get_json()["request_id"]
    assert client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers).status_code == 200
    body = client.get(f"/refunds/{request_id}", headers=approver_headers).get_json()
    assert set(body) == HISTORY_KEYS
    assert (body["amount"], body["currency"], body["display"], body["error"]) == (15000, "usd", "150.00 USD", None)
    assert set(body["approval"]) == {"pending_id", "status", "decided_by", "decided_at", "note", "approvals"}
    assert [set(a) for a in body["approval"]["approvals"]] == [{"approver", "channel", "at"}]
    [refund] = body["refunds"]
    assert set(refund) == {"refund_id", "status", "amount", "currency", "display", "processed_at"}
    assert refund["refund_id"] == gateway.refunds[0].refund_id
    assert all(set(entry) == {"at", "action", "actor", "channel", "detail"} for entry in body["history"])
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == len("2026-11-26T10:39:25.123Z")


def test_answers_are_built_from_typed_records_as_from_dicts() -> None:
    at = datetime(2026, 11, 26, 10, 39, 25, 123000, tzinfo=UTC)
    request = {"id": 3, "status": "failed", "decision": "needs_approval", "policy_explanation": "over 100.00 USD",
               "charge_id": "ch_1", "payment_intent_id": None, "amount": 15000, "currency": "usd",
               "reason": "duplicate", "product": None, "customer_email": None, "ticket_id": None, "note": None,
               "stripe_refund_id": None, "error_code": "charge_disputed", "error_message": "Disputed.",
               "created_at": at, "resolved_at": at}
    pending = {"id": 9, "status": "approved", "decided_by": "maria", "decided_at": at, "decision_note": None}
    found = {"request": request, "pending": pending, "approvals": [{"approver": "maria", "channel": "api", "at": at}],
             "refunds": [], "history": [{"at": at, "action": "failed", "actor": "system", "channel": "worker",
                                         "detail": None}]}
    records = SimpleNamespace(request=SimpleNamespace(**request), pending=SimpleNamespace(**pending),
                              approvals=[SimpleNamespace(**a) for a in found["approvals"]], refunds=[],
                              history=[SimpleNamespace(**h) for h in found["history"]])
    as_dicts = RefundHistory.of(found).model_dump(mode="json")
    assert RefundHistory.of(records).model_dump(mode="json") == as_dicts
    assert as_dicts["error"] == {"code": "charge_disputed", "message": "Disputed."}
    assert as_dicts["approval"]["approvals"] == [{"approver": "maria", "channel": "api",
                                                  "at": "2026-11-26T10:39:25.123Z"}]
    row = {"pending_id": 9, "request_id": 3, "charge_id": "ch_1", "amount": 15000, "currency": "USD",
           "reason": "duplicate", "requested_at": at, "product": None, "customer_email": None, "ticket_id": None,
           "note": None, "policy_explanation": "over 100.00 USD"}
    item = PendingRefund.model_validate(SimpleNamespace(**row)).model_dump(mode="json")
    assert item == PendingRefund.model_validate(row).model_dump(mode="json")
    assert (item["currency"], item["display"], "approval_link" in item) == ("usd", "150.00 USD", False)


def test_no_view_module_touches_the_store_or_sql() -> None:
    views = ("api.py", "approval_pages.py", "slack_interactions.py", "webhooks.py", "http_errors.py", "responses.py")
    for name in views:
        tree = ast.parse((Path(__file__).parent.parent / "refunds" / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    for alias in node.names} | {node.module or "" for node in ast.walk(tree)
                                                if isinstance(node, ast.ImportFrom)}
        assert not imported & {"store", "sqlalchemy", "db"}, name
