"""Signed Stripe events are checked like any input: what cannot be stored is a 400 naming the field, never a 500
(Stripe retries a 500 for days) and never a half-recorded event."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds.tables import refund_log, stripe_events
from tests.conftest import WEBHOOK_SECRET
from tests.stripe_events import refund_event, sign
from tests.test_refund_request import rows

GOOD_REFUND = {"id": "re_valid_1", "charge": "ch_small", "amount": 700, "currency": "usd", "status": "succeeded",
               "failure_reason": None, "metadata": {}}


def deliver_raw(client: FlaskClient, payload: bytes) -> Any:
    return client.post("/stripe/webhook", data=payload, headers={
        "Stripe-Signature": sign(payload, WEBHOOK_SECRET), "Content-Type": "application/json; charset=utf-8"})


@pytest.mark.parametrize(
    ("change", "raw", "named"),
    [
        # JSON numbers beyond what any amount can be: 1e309 is infinite for Python, 2**70 overflows BIGINT.
        ({"amount": 123}, ("123", "1e309"), "data.object.amount"),
        ({"amount": 2**70}, None, "data.object.amount"),
        ({"amount": -1}, None, "data.object.amount"),
        ({"amount": 10.5}, None, "data.object.amount"),
        ({"metadata": ["refund_key", "x"]}, None, "data.object.metadata"),
        ({"metadata": {"refund_key": 5}}, None, "data.object.metadata.refund_key"),
        ({"currency": "usdx"}, None, "data.object.currency"),
        ({"currency": "USD"}, None, "data.object.currency"),
        ({"failure_reason": "f" * 101, "status": "failed"}, None, "data.object.failure_reason"),
        ({"charge": "ch_" + "c" * 253}, None, "data.object.charge"),
        ({"id": "re_" + "r" * 253}, None, "data.object.id"),
        ({"status": "s" * 33}, None, "data.object.status"),
        ({"id": None}, None, "data.object.id"),
        # NUL: PostgreSQL text cannot hold it, so comparing or storing it fails there (a 500 before).
        ({"metadata": {"refund_key": "rk\x00"}}, None, "data.object.metadata.refund_key"),
        ({"metadata": {"refund\x00key": "rk_1"}}, None, "data.object.metadata"),
        ({"id": "re_\x00"}, None, "data.object.id"),
        ({"charge": "ch_\x00"}, None, "data.object.charge"),
        ({"status": "succeeded\x00"}, None, "data.object.status"),
        ({"failure_reason": "lost\x00", "status": "failed"}, None, "data.object.failure_reason"),
        ({"currency": "us\x00"}, None, "data.object.currency"),
        # Stripe's own metadata limits: keys of up to 40 characters, values of up to 500, at most 50 keys.
        ({"metadata": {"k" * 41: "v"}}, None, "data.object.metadata"),
        ({"metadata": {"refund_key": "v" * 501}}, None, "data.object.metadata.refund_key"),
        ({"metadata": {f"k{n}": "v" for n in range(51)}}, None, "data.object.metadata"),
    ],
)
def test_a_signed_refund_event_the_service_cannot_store_is_refused_naming_the_field_and_nothing_is_recorded(
    app: Flask, client: FlaskClient, change: dict[str, Any], raw: tuple[str, str] | None, named: str
) -> None:
    payload = json.dumps(refund_event({**GOOD_REFUND, **change}, "refund.updated")).encode()
    if raw is not None:
        payload = payload.replace(f'"amount": {raw[0]}'.encode(), f'"amount": {raw[1]}'.encode())
        assert raw[1].encode() in payload
    response = deliver_raw(client, payload)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_event"
    assert named in response.get_json()["message"]
    assert rows(app, stripe_events) == []  # not even marked as seen: a corrected delivery is applied
    assert rows(app, refund_log) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [({"id": "evt_" + "e" * 252}, "id"), ({"type": "t" * 101}, "type"), ({"created": 1e309}, "created"),
     ({"data": []}, "data"), ({"id": "evt_\x00"}, "id"), ({"type": "refund.updated\x00"}, "type")],
)
def test_a_signed_event_whose_envelope_cannot_be_stored_is_refused_naming_the_field(
    app: Flask, client: FlaskClient, change: dict[str, Any], named: str
) -> None:
    event = {**refund_event(GOOD_REFUND, "refund.updated"), **change}
    payload = json.dumps(event).encode().replace(b"Infinity", b"1e309")
    response = deliver_raw(client, payload)
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_event"), response.get_json()
    assert response.get_json()["message"].startswith(f"Not a Stripe event: {named}")
    assert rows(app, stripe_events) == []


def test_metadata_at_stripes_limits_is_accepted_and_a_refund_key_that_is_not_ours_is_logged_as_external(
    app: Flask, client: FlaskClient
) -> None:
    metadata = {"refund_key": "v" * 500, **{"k" * 38 + f"{n:02}": "v" * 500 for n in range(49)}}
    event = refund_event({**GOOD_REFUND, "metadata": metadata}, "refund.updated")
    response = deliver_raw(client, json.dumps(event).encode())
    assert response.get_json() == {"received": True, "result": "applied"}
    assert [row.decision for row in rows(app, refund_log)] == ["external"]


def test_a_valid_refund_event_after_a_refused_one_is_applied(app: Flask, client: FlaskClient) -> None:
    bad = refund_event({**GOOD_REFUND, "currency": "usdx"}, "refund.updated")
    assert deliver_raw(client, json.dumps(bad).encode()).status_code == 400
    good = deliver_raw(client, json.dumps(refund_event(GOOD_REFUND, "refund.updated")).encode())
    assert good.get_json() == {"received": True, "result": "applied"}
    [logged] = rows(app, refund_log)
    assert (logged.refund_id, logged.amount, logged.currency, logged.decision) == ("re_valid_1", 700, "usd",
                                                                                   "external")


def test_events_about_other_objects_are_not_held_to_the_refund_model(app: Flask, client: FlaskClient) -> None:
    event = refund_event({}, "charge.dispute.created")
    event["data"]["object"] = {"object": "dispute", "id": "dp_1", "amount": 10**30, "metadata": []}
    response = deliver_raw(client, json.dumps(event).encode())
    assert response.get_json() == {"received": True, "result": "ignored"}
    assert [row.type for row in rows(app, stripe_events)] == ["charge.dispute.created"]
