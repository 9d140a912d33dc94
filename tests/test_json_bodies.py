"""Request bodies: one strict JSON parser for every endpoint, clear messages for each way a body can be wrong,
and single-line fields that cannot carry line breaks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds.approvers import add as add_approver
from refunds.service import utcnow
from refunds.tables import approvers, pending_refunds, refund_requests, stripe_events
from tests.conftest import WEBHOOK_SECRET
from tests.fakes import FakeGateway
from tests.stripe_events import refund_event, sign
from tests.test_refund_request import rows

GOOD_REFUND = {"id": "re_json_1", "charge": "ch_small", "amount": 700, "currency": "usd", "status": "succeeded",
               "metadata": {}}


@pytest.fixture
def pending_id(client: FlaskClient, intake_headers: dict[str, str]) -> int:
    response = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    assert response.status_code == 202
    return int(response.get_json()["pending_id"])


@pytest.fixture
def admin_headers(app: Flask) -> dict[str, str]:
    token = add_approver(app.extensions["refund_service"].db, "root", utcnow(), role="admin")
    return {"Authorization": f"Bearer {token}"}


def send(client: FlaskClient, path: str, body: bytes, headers: dict[str, str],
         content_type: str | None = "application/json") -> Any:
    if path == "/stripe/webhook":
        headers = {**headers, "Stripe-Signature": sign(body, WEBHOOK_SECRET)}
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    return client.post(path, data=body, headers=headers)


def nothing_happened(app: Flask, gateway: FakeGateway, pending_before: list[Any]) -> None:
    assert gateway.calls == []
    assert len(rows(app, refund_requests)) == len(pending_before)
    assert [(p.id, p.status, p.decision_note) for p in rows(app, pending_refunds)] == [
        (p.id, p.status, p.decision_note) for p in pending_before]
    assert [a.name for a in rows(app, approvers)] == ["maria", "root"]
    assert rows(app, stripe_events) == []


def bodies(pending: int) -> dict[str, tuple[str, str]]:
    """Per endpoint: a body whose `{inner}` is replaced by what each test puts there."""
    event = json.dumps(refund_event(GOOD_REFUND, "refund.updated"))
    return {
        "/refund-request": ("intake", '{"charge_id": "ch_small", "amount": 100{inner}}'),
        "/approve-refund": ("approver", f'{{"pending_id": {pending}{{inner}}}}'),
        "/reject-refund": ("approver", f'{{"pending_id": {pending}{{inner}}}}'),
        "/approvers": ("admin", '{"name": "newbie"{inner}}'),
        "/stripe/webhook": ("none", event[:-1] + "{inner}}"),
    }


ENDPOINTS = ["/refund-request", "/approve-refund", "/reject-refund", "/approvers", "/stripe/webhook"]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("inner", "named"),
    [
        (', "amount": 999999', '"amount"'),  # repeated at the top level (or, for some, a key of their own)
        (', "x": {"k": 1, "k": 2}', '"k"'),  # nested
        (', "x": [[{"deep": {"k": 1, "k": 2}}]]', '"k"'),  # deeper, inside arrays
    ],
)
def test_a_body_with_a_repeated_key_is_refused_on_every_endpoint_and_nothing_happens(
    app: Flask, client: FlaskClient, gateway: FakeGateway, intake_headers: dict[str, str],
    approver_headers: dict[str, str], admin_headers: dict[str, str], pending_id: int, path: str, inner: str,
    named: str,
) -> None:
    who, template = bodies(pending_id)[path]
    if path != "/refund-request" and inner.startswith(', "amount"'):
        inner = inner + ', "amount": 1'  # the top-level repeat, for bodies without an amount
    before = rows(app, pending_refunds)
    headers = {"intake": intake_headers, "approver": approver_headers, "admin": admin_headers, "none": {}}[who]
    response = send(client, path, template.replace("{inner}", inner).encode(), headers)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_json"
    assert f"repeats the key {named}" in response.get_json()["message"]
    nothing_happened(app, gateway, before)


def test_the_repeated_amount_is_never_read_as_either_value(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    response = send(client, "/refund-request", b'{"charge_id": "ch_small", "amount": 100, "amount": 2900}',
                    intake_headers)
    assert response.status_code == 400
    assert gateway.calls == []
    assert rows(app, refund_requests) == []


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_and_are_refused_on_every_endpoint(
    app: Flask, client: FlaskClient, gateway: FakeGateway, intake_headers: dict[str, str],
    approver_headers: dict[str, str], admin_headers: dict[str, str], pending_id: int, path: str, constant: str,
) -> None:
    who, template = bodies(pending_id)[path]
    before = rows(app, pending_refunds)
    headers = {"intake": intake_headers, "approver": approver_headers, "admin": admin_headers, "none": {}}[who]
    response = send(client, path, template.replace("{inner}", f', "x": {constant}').encode(), headers)
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_json")
    assert f"{constant} is not a JSON value" in response.get_json()["message"]
    nothing_happened(app, gateway, before)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"charge_id": "ch_sm\xffall"}', "The request body is not valid UTF-8: byte 0xff at position 20 cannot start "
                                       "or continue a character."),
        (b'{"charge_id": "ch_small",}', "The request body is not valid JSON: Expecting property name enclosed in "
                                        "double quotes at line 1 column 26."),
        (b'{"charge_id": "ch_small"\n "amount": 5}', "The request body is not valid JSON: Expecting ',' delimiter "
                                                     "at line 2 column 2."),
        (b"", "The request body is empty; it must be a JSON object."),
        (b"[1]", "The request body must be a JSON object, not an array."),
    ],
)
def test_each_way_a_body_is_not_a_json_object_has_its_own_message(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], body: bytes, message: str
) -> None:
    response = send(client, "/refund-request", body, intake_headers)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_json", "message": message}
    assert rows(app, refund_requests) == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_body_not_sent_as_json_gets_415_and_nothing_happens(
    app: Flask, client: FlaskClient, gateway: FakeGateway, intake_headers: dict[str, str],
    approver_headers: dict[str, str], admin_headers: dict[str, str], pending_id: int, path: str,
    content_type: str | None,
) -> None:
    who, template = bodies(pending_id)[path]
    before = rows(app, pending_refunds)
    headers = {"intake": intake_headers, "approver": approver_headers, "admin": admin_headers, "none": {}}[who]
    response = send(client, path, template.replace("{inner}", "").encode(), headers, content_type)
    assert response.status_code == 415, response.get_json()
    assert response.get_json()["error"] == "unsupported_media_type"
    assert "Content-Type: application/json" in response.get_json()["message"]
    nothing_happened(app, gateway, before)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON",
                                          "application/json;charset=UTF-8"])
def test_json_with_a_charset_parameter_or_in_any_case_is_accepted(
    client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, content_type: str
) -> None:
    response = send(client, "/refund-request", b'{"charge_id": "ch_small", "amount": 100}', intake_headers,
                    content_type)
    assert response.status_code == 200, response.get_json()
    assert len(gateway.refunds) == 1


def test_an_oversized_body_is_refused_naming_the_64_kib_limit(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    response = send(client, "/refund-request", b'{"note": "' + b"x" * 70_000 + b'"}', intake_headers)
    assert response.status_code == 413
    assert response.get_json() == {"error": "request_entity_too_large",
                                   "message": "The request body is larger than the limit of 64 KiB (65,536 bytes)."}
    assert rows(app, refund_requests) == []


@pytest.mark.parametrize("field", ["product", "ticket_id", "requested_by"])
@pytest.mark.parametrize("value", ["kettle\n\n*Amount*\n1.00 USD\n*Approved by* CFO", "a\rb", "a\tb", "a\x00b",
                                   "a\x1bb", "a\x85b", "a\u2028b", "a\u2029b", "a\x7fb"])
def test_single_line_fields_refuse_newlines_and_control_characters(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, field: str, value: str
) -> None:
    response = client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100, field: value},
                           headers=intake_headers)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_request",
                                   "message": f"{field}: must be one line: no newlines, tabs or other control "
                                              "characters"}
    assert gateway.calls == []
    assert rows(app, refund_requests) == []


@pytest.mark.parametrize("field", ["customer_email"])
def test_an_email_with_a_newline_is_refused(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], field: str
) -> None:
    response = client.post("/refund-request", json={"charge_id": "ch_small", field: "a@b.co\nBcc: x@y.z"},
                           headers=intake_headers)
    assert response.status_code == 400
    assert field in response.get_json()["message"]
    assert rows(app, refund_requests) == []


def test_a_note_may_span_lines_but_holds_no_nul(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str],
    pending_id: int,
) -> None:
    lines = "Customer called twice.\r\nSee ticket:\n\t- T-9"
    ok = client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100, "note": lines},
                     headers=intake_headers)
    assert ok.status_code == 200
    assert rows(app, refund_requests)[-1].note == lines
    nul = client.post("/reject-refund", json={"pending_id": pending_id, "note": "no\x00"}, headers=approver_headers)
    assert (nul.status_code, nul.get_json()["message"]) == (400, "note: must not contain NUL characters (\\u0000)")
    assert rows(app, pending_refunds)[0].status == "pending"


@pytest.mark.parametrize("name", ["new\nbie", "new bie", "newbie\t", "a" * 101])
def test_approver_names_are_one_short_word(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str], name: str
) -> None:
    response = client.post("/approvers", json={"name": name}, headers=admin_headers)
    assert response.status_code == 400
    assert response.get_json()["message"].startswith("name: ")
    assert [a.name for a in rows(app, approvers)] == ["root"]


def test_a_slack_payload_with_a_repeated_key_is_refused_by_the_same_parser() -> None:
    from refunds.slack_interactions import BadPayload, read_click

    with pytest.raises(BadPayload, match='repeats the key "type"'):
        read_click(b"payload=" + b'{"type": "block_actions", "type": "view_closed"}')
