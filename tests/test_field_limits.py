"""API limits and database columns are one source of truth (refunds/limits.py): whatever the API accepts, the
database stores in full, on SQLite (which does not enforce lengths) and on PostgreSQL (which does)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel
from sqlalchemy import Column, String

from refunds import limits
from refunds.approvers import add as add_approver
from refunds.openapi import openapi_document
from refunds.schemas import NewApproverBody, RefundRequestBody, RejectBody, StripeEvent, StripeRefund
from refunds.service import utcnow
from refunds.tables import (
    approval_link_uses,
    approvals,
    approvers,
    audit_log,
    charge_ledger,
    pending_refunds,
    refund_log,
    refund_requests,
    stripe_events,
)
from tests.conftest import WEBHOOK_SECRET
from tests.fakes import FakeGateway
from tests.stripe_events import refund_event, signed
from tests.test_refund_request import rows

LONG_CHARGE = "ch_" + "C" * (limits.STRIPE_ID - 3)
LONG_INTENT = "pi_" + "P" * (limits.STRIPE_ID - 3)
INTENT_CHARGE = "ch_" + "I" * (limits.STRIPE_ID - 3)
LONG_NAME = "n" * (limits.APPROVER_NAME - 6) + ".admin"
LONG_SLACK_ID = "U" + "A" * (limits.SLACK_USER_ID - 1)

# Where each string field of each model is stored. A new field must be added here, so its limit is checked.
STORED_IN: dict[type[BaseModel], dict[str, list[Column[Any]]]] = {
    RefundRequestBody: {
        "charge_id": [refund_requests.c.charge_id, pending_refunds.c.charge_id, refund_log.c.charge_id,
                      charge_ledger.c.charge_id],
        "payment_intent_id": [refund_requests.c.payment_intent_id],
        "reason": [refund_requests.c.reason, pending_refunds.c.reason, refund_log.c.reason],
        "product": [refund_requests.c.product, refund_log.c.product],
        "customer_email": [refund_requests.c.customer_email],
        "ticket_id": [refund_requests.c.ticket_id],
        "note": [refund_requests.c.note],
        "requested_by": [refund_requests.c.requested_by, audit_log.c.actor],
    },
    RejectBody: {"note": [pending_refunds.c.decision_note, audit_log.c.detail]},
    NewApproverBody: {
        "name": [approvers.c.name, approvals.c.approver, approval_link_uses.c.approver, audit_log.c.actor],
        "role": [approvers.c.role],
        "slack_user_id": [approvers.c.slack_user_id],
        "approval_limits": [],  # an object: its keys (currencies) are checked in test_approver_limit_currencies
    },
    StripeEvent: {"id": [stripe_events.c.id], "type": [stripe_events.c.type]},
    StripeRefund: {
        "id": [refund_log.c.refund_id, refund_requests.c.stripe_refund_id],
        "charge": [refund_log.c.charge_id],
        "currency": [refund_log.c.currency, refund_requests.c.currency],
        "status": [refund_log.c.status],
        "failure_reason": [refund_log.c.failure_reason],
        "metadata": [],  # read (refund_key), never stored
        "object": [],  # the constant "refund"
    },
}


def _string_fields(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """Each string property of the model's JSON schema (optional ones without their `null`)."""
    found = {}
    for name, prop in model.model_json_schema()["properties"].items():
        variants = [v for v in prop.get("anyOf", [prop]) if v.get("type") != "null"]
        string = next((v for v in variants if v.get("type") == "string" or "enum" in v), None)
        if string is not None or prop.get("type") == "object" or any(v.get("type") == "object" for v in variants):
            found[name] = string or {}
    return found


def _longest(schema: dict[str, Any]) -> int | None:
    if "enum" in schema:
        return max(len(value) for value in schema["enum"])
    if "const" in schema:
        return len(schema["const"])
    return schema.get("maxLength")


@pytest.mark.parametrize("model", list(STORED_IN), ids=lambda m: m.__name__)
def test_every_string_field_has_a_limit_that_fits_each_column_it_is_stored_in(model: type[BaseModel]) -> None:
    fields = _string_fields(model)
    assert set(fields) == set(STORED_IN[model]), "a string field is missing from STORED_IN, or one is gone"
    for name, columns in STORED_IN[model].items():
        if not columns:
            continue
        longest = _longest(fields[name])
        assert longest is not None, f"{model.__name__}.{name} has no maximum length"
        for column in columns:
            assert isinstance(column.type, String)
            if column.type.length is not None:  # Text: any length
                assert longest <= column.type.length, f"{model.__name__}.{name} ({longest}) overflows {column}"


def test_the_idempotency_key_header_and_the_approver_path_fit_their_columns() -> None:
    document = openapi_document()
    [header] = document["paths"]["/refund-request"]["post"]["parameters"]
    assert header["schema"]["maxLength"] <= (refund_requests.c.idempotency_key.type.length or 0)
    [name] = document["paths"]["/approvers/{name}"]["delete"]["parameters"]
    assert name["schema"]["maxLength"] == approvers.c.name.type.length


def test_every_string_field_at_its_maximum_length_is_stored_in_full(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    db = app.extensions["refund_service"].db
    gateway.add_charge(LONG_CHARGE, 20000)
    gateway.add_charge(INTENT_CHARGE, 20000, payment_intent_id=LONG_INTENT)
    admin = {"Authorization": f"Bearer {add_approver(db, 'root', utcnow(), role='admin')}"}

    # An approver whose name and Slack id are as long as allowed.
    added = client.post("/approvers", json={"name": LONG_NAME, "slack_user_id": LONG_SLACK_ID}, headers=admin)
    assert added.status_code == 201, added.get_json()
    long_approver = {"Authorization": f"Bearer {added.get_json()['token']}"}
    stored_approver = next(a for a in rows(app, approvers) if a.name == LONG_NAME)
    assert stored_approver.slack_user_id == LONG_SLACK_ID

    # A refund request with every string at its maximum, by charge and by payment intent.
    text = {
        "product": "p" * limits.SHORT_TEXT,
        "ticket_id": "t" * limits.SHORT_TEXT,
        "requested_by": "r" * limits.SHORT_TEXT,
        "customer_email": "e" * (limits.EMAIL - len("@example.com")) + "@example.com",
        "note": ("line\n" * limits.NOTE)[: limits.NOTE - 1] + "!",
    }
    key = "k" * limits.IDEMPOTENCY_KEY
    by_charge = client.post("/refund-request", json={"charge_id": LONG_CHARGE, "amount": 15000, **text},
                            headers={**intake_headers, "Idempotency-Key": key})
    by_intent = client.post("/refund-request", json={"payment_intent_id": LONG_INTENT, "amount": 15000, **text},
                            headers=intake_headers)
    assert (by_charge.status_code, by_intent.status_code) == (202, 202), (by_charge.get_json(), by_intent.get_json())
    first, second = rows(app, refund_requests)
    assert (first.charge_id, first.idempotency_key, second.payment_intent_id, second.charge_id) == (
        LONG_CHARGE, key, LONG_INTENT, INTENT_CHARGE)
    for stored in (first, second):
        assert {name: getattr(stored, name) for name in text} == text
    assert {row.actor for row in rows(app, audit_log) if row.action == "requested"} == {text["requested_by"]}
    assert [p.charge_id for p in rows(app, pending_refunds)] == [LONG_CHARGE, INTENT_CHARGE]

    # Rejected with the longest note; approved (and refunded) by the approver with the longest name.
    note = "n" * limits.NOTE
    rejected = client.post("/reject-refund", json={"pending_id": by_charge.get_json()["pending_id"], "note": note},
                           headers=long_approver)
    approved = client.post("/approve-refund", json={"pending_id": by_intent.get_json()["pending_id"]},
                           headers=long_approver)
    assert (rejected.status_code, approved.status_code) == (200, 200), (rejected.get_json(), approved.get_json())
    first_pending, second_pending = rows(app, pending_refunds)
    assert (first_pending.decision_note, first_pending.decided_by, second_pending.decided_by) == (
        note, LONG_NAME, LONG_NAME)
    assert [a.approver for a in rows(app, approvals)] == [LONG_NAME]
    assert {(row.action, row.actor, row.detail) for row in rows(app, audit_log)} >= {
        ("rejected", LONG_NAME, note), ("approved", LONG_NAME, "approval 1 of 1")}
    assert [row.charge_id for row in rows(app, refund_log)] == [INTENT_CHARGE]


def test_signed_stripe_events_with_every_field_at_its_maximum_length_are_stored_in_full(
    app: Flask, client: FlaskClient
) -> None:
    refund = {"id": "re_" + "R" * (limits.STRIPE_ID - 3), "charge": "ch_" + "C" * (limits.STRIPE_ID - 3),
              "amount": 99_999_999_999, "currency": "usd", "status": "failed",
              "failure_reason": "f" * limits.FAILURE_REASON, "metadata": {}}
    event = refund_event(refund, "refund.failed")
    event["id"] = "evt_" + "E" * (limits.STRIPE_ID - 4)
    other = {**refund_event(refund, "refund.failed"), "type": "x" * limits.EVENT_TYPE}
    for sent in (event, other):
        payload, headers = signed(sent, WEBHOOK_SECRET)
        response = client.post("/stripe/webhook", data=payload, headers=headers)
        assert response.status_code == 200, response.get_json()
    assert {(row.id, row.type) for row in rows(app, stripe_events)} == {
        (event["id"], "refund.failed"), (other["id"], other["type"])}
    [logged] = rows(app, refund_log)
    assert (logged.refund_id, logged.charge_id, logged.amount, logged.currency, logged.status,
            logged.failure_reason) == (refund["id"], refund["charge"], refund["amount"], "usd", "failed",
                                       refund["failure_reason"])


def test_a_signed_request_whose_webhook_id_is_as_long_as_allowed_is_stored_with_it_as_its_key(
    database_url: str, gateway: FakeGateway
) -> None:
    from refunds import create_app
    from tests.conftest import INTAKE_SIGNING_SECRET, make_settings
    from tests.test_signed_intake import body_of, send
    from tests.test_signed_intake import signed as signed_intake

    app = create_app(make_settings(database_url, intake_signing_secrets=(INTAKE_SIGNING_SECRET,)), gateway=gateway)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    msg_id = "m" * (limits.IDEMPOTENCY_KEY - len("webhook:"))
    body = body_of({"charge_id": "ch_small", "amount": 100, "requested_by": "r" * limits.SHORT_TEXT})
    response = send(app.test_client(), body, signed_intake(body, msg_id=msg_id))
    assert response.status_code == 200, response.get_json()
    [stored] = rows(app, refund_requests)
    assert (stored.idempotency_key, stored.requested_by) == ("webhook:" + msg_id, "r" * limits.SHORT_TEXT)
    app.extensions["refund_service"].db.dispose()
