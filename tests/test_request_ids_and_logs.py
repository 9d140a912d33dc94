"""Request ids (`X-Request-Id`) and JSON log lines (`LOG_FORMAT=json`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from refunds import create_app, store
from refunds.errors import StripeUnavailable
from refunds.logs import configure, sane_request_id
from tests.conftest import INTAKE_TOKEN, STRIPE_KEY, make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier

HEADERS = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


@pytest.fixture
def json_app(tmp_path: Path, gateway: FakeGateway, notifier: FakeNotifier) -> Iterator[Flask]:
    app = create_app(make_settings(f"sqlite:///{tmp_path}/refunds.db", log_format="json"),
                     gateway=gateway, notifier=notifier)
    yield app
    app.extensions["refund_service"].db.dispose()
    configure("text")  # take the JSON handler off the root logger again


def _json_lines(text: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_requests_json_log_lines_carry_the_request_id_it_was_sent_with(
        json_app: Flask, gateway: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    answer = json_app.test_client().post("/refund-request", headers={**HEADERS, "X-Request-Id": "zendesk-4711"},
                                         json={"charge_id": "ch_small", "amount": 1500})
    assert answer.status_code == 200 and len(gateway.refunds) == 1
    assert answer.headers["X-Request-Id"] == "zendesk-4711"
    lines = _json_lines(capsys.readouterr().err)
    [executed] = [line for line in lines if "executed as" in line["message"]]
    assert executed["request_id"] == "zendesk-4711"
    assert executed["level"] == "INFO" and executed["logger"] == "refunds.execution"
    assert executed["time"].endswith("Z")
    assert all(STRIPE_KEY not in json.dumps(line) and INTAKE_TOKEN not in json.dumps(line) for line in lines)


def test_a_line_logged_outside_a_request_has_no_request_id(json_app: Flask,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("refunds.test").warning("outside %s", "any request")
    [line] = _json_lines(capsys.readouterr().err)
    assert line["message"] == "outside any request" and "request_id" not in line


def test_a_request_without_an_id_gets_a_new_one_in_the_answer(json_app: Flask) -> None:
    client = json_app.test_client()
    first, second = client.get("/healthz"), client.get("/healthz")
    assert len(first.headers["X-Request-Id"]) == 32
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.mark.parametrize("hostile", ["a b", "x" * 101, "id\u00e9", "", "id\tnext"])
def test_a_hostile_request_id_is_replaced_by_a_new_one(json_app: Flask, hostile: str) -> None:
    answer = json_app.test_client().get("/healthz", headers={"X-Request-Id": hostile})
    assert answer.headers["X-Request-Id"] != hostile
    assert len(answer.headers["X-Request-Id"]) == 32


def test_an_id_with_a_newline_cannot_forge_a_log_line() -> None:
    assert "\n" not in sane_request_id('x\n{"level": "INFO"}')
    assert sane_request_id("x" * 100) == "x" * 100


@pytest.fixture
def json_logs(app: Flask) -> Iterator[Flask]:
    """`app` (on both databases) with JSON log lines on stderr."""
    configure("json")
    yield app
    configure("text")


def test_stripe_gets_the_request_id_a_refund_was_requested_with_in_its_metadata(
        json_logs: Flask, gateway: FakeGateway) -> None:
    answer = json_logs.test_client().post("/refund-request", headers={**HEADERS, "X-Request-Id": "abc-123"},
                                          json={"charge_id": "ch_small", "amount": 1500})
    assert answer.status_code == 200
    [call] = gateway.calls
    assert call.metadata is not None and call.metadata["trace_id"] == "abc-123"
    with json_logs.extensions["refund_service"].db.read() as conn:
        assert store.get_request(conn, answer.get_json()["request_id"]).trace_id == "abc-123"  # type: ignore[union-attr]


def test_the_worker_lines_about_a_request_carry_the_id_it_was_requested_with(
        json_logs: Flask, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock,
        capsys: pytest.CaptureFixture[str]) -> None:
    gateway.fail_next.append(StripeUnavailable("Stripe answered 503"))
    answer = json_logs.test_client().post("/refund-request", headers={**HEADERS, "X-Request-Id": "abc-123"},
                                          json={"charge_id": "ch_small", "amount": 1500})
    assert answer.status_code == 202 and len(gateway.refunds) == 0
    capsys.readouterr()

    clock.advance(timedelta(minutes=10))
    run_worker(json_logs)
    assert len(gateway.refunds) == 1 and notifier.kinds() == ["auto_approved"]
    lines = _json_lines(capsys.readouterr().err)
    [executed] = [line for line in lines if "executed as" in line["message"]]
    [delivered] = [line for line in lines if "delivered" in line["message"]]
    assert executed["request_id"] == "abc-123" and executed["logger"] == "refunds.execution"
    assert delivered["request_id"] == "abc-123" and delivered["logger"] == "refunds.worker"
    assert gateway.calls[-1].metadata is not None and gateway.calls[-1].metadata["trace_id"] == "abc-123"


def test_the_worker_lines_of_another_request_do_not_carry_the_id(
        json_logs: Flask, gateway: FakeGateway, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.fail_next.append(StripeUnavailable("Stripe answered 503"))
    json_logs.test_client().post("/refund-request", headers={**HEADERS, "X-Request-Id": "abc-123"},
                                 json={"charge_id": "ch_small", "amount": 1500})
    capsys.readouterr()
    clock.advance(timedelta(minutes=10))
    run_worker(json_logs)
    logging.getLogger("refunds.test").warning("after the worker's pass")
    [after] = [line for line in _json_lines(capsys.readouterr().err) if line["message"] == "after the worker's pass"]
    assert "request_id" not in after


def test_the_stripe_stand_ins_refund_carries_the_request_id_in_its_metadata(database_url: str) -> None:
    from standins.stripe_api import StripeStandIn

    with StripeStandIn(api_key=STRIPE_KEY) as stripe:
        charge = stripe.add_charge(3000, "usd")["id"]
        app = create_app(make_settings(database_url, stripe_api_base=stripe.base_url))
        if not database_url.startswith("sqlite"):
            app.extensions["refund_service"].db.upgrade()
        try:
            answer = app.test_client().post("/refund-request", headers={**HEADERS, "X-Request-Id": "abc-123"},
                                            json={"charge_id": charge, "amount": 1500})
        finally:
            app.extensions["refund_service"].db.dispose()
        assert answer.status_code == 200
        [refund] = stripe.refunds
        assert refund["metadata"]["trace_id"] == "abc-123"
