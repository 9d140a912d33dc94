"""`flask --app app report daily | range` and `flask --app app sync` on SQLite and PostgreSQL (issue 10)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from refunds import create_app
from refunds.report_cli import register
from refunds.reports.slack import slack_message
from refunds.stripe_gateway import StripeGateway
from refunds.tables import refund_log, refund_requests, stripe_charges
from standins.slack_limits import check_message
from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn
from tests.conftest import make_settings
from tests.fakes import FakeClock, FakeGateway
from tests.report_history import add_external, add_request, at

KEY = "sk_test_report_sync_key"


@pytest.fixture
def reporting(app: Flask, clock: FakeClock) -> Flask:
    register(app, clock=clock)  # the clock says 2026-11-26 09:00 UTC: "yesterday" is the 25th
    return app


def invoke(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=list(args))
    return result


def seed(app: Flask) -> None:
    with app.extensions["refund_service"].db.transaction() as conn:
        add_request(conn, "auto_approved", amount=1500, currency="jpy", created=at("2026-11-25 10:00"),
                    resolved=at("2026-11-25 10:00:05"), product="mug")
        add_request(conn, "approved", amount=9000, currency="usd", created=at("2026-11-25 10:00"),
                    resolved=at("2026-11-25 12:00"), decided_by="maria")
        add_request(conn, "auto_approved", amount=100, currency="usd", created=at("2026-11-24 10:00"),
                    resolved=at("2026-11-24 10:00:01"))
        add_external(conn, amount=2500, currency="eur", processed=at("2026-11-25 23:30"), charge_id="ch_dash")


def test_report_daily_defaults_to_yesterday_in_utc_and_prints_json_numbers(reporting: Flask) -> None:
    seed(reporting)

    result = invoke(reporting, "report", "daily", "--format", "json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["date"], body["tz"], body["hours"]) == ("2026-11-25", "UTC", 24)
    assert {k: v["count"] for k, v in body["paths"].items() if v["count"]} == {
        "auto_approved": 1, "approved": 1, "external": 1}
    assert body["paths"]["auto_approved"]["amounts"] == [{"amount": 1500, "currency": "jpy", "display": "1,500 JPY"}]
    assert body["resolution"]["approved"]["median_seconds"] == 7200


def test_report_tz_moves_the_day_and_its_boundaries(reporting: Flask) -> None:
    seed(reporting)
    # REPORT_TZ=Asia/Tokyo: 23:30 UTC on the 25th is the 26th in Tokyo
    reporting.config["SETTINGS"] = dataclasses.replace(reporting.config["SETTINGS"], report_tz="Asia/Tokyo")

    tokyo = json.loads(invoke(reporting, "report", "daily", "--format", "json").stdout)
    paris = json.loads(invoke(reporting, "report", "daily", "--date", "2026-11-25", "--tz", "Europe/Paris",
                              "--format", "json").stdout)

    assert (tokyo["date"], tokyo["tz"], tokyo["start"]) == ("2026-11-25", "Asia/Tokyo", "2026-11-24T15:00:00+00:00")
    assert tokyo["paths"]["external"]["count"] == 0
    assert (paris["tz"], paris["paths"]["external"]["count"], paris["paths"]["approved"]["count"]) == (
        "Europe/Paris", 0, 1)


def test_report_daily_table_shows_amounts_with_their_decimals(reporting: Flask) -> None:
    seed(reporting)

    result = invoke(reporting, "report", "daily", "--date", "2026-11-25")

    assert result.exit_code == 0, result.output
    assert "Refunds on 2026-11-25 (UTC, 24 hours" in result.stdout
    assert "1,500 JPY" in result.stdout and "90.00 USD" in result.stdout and "25.00 EUR" in result.stdout


def test_an_unknown_zone_is_refused_by_name(reporting: Flask) -> None:
    result = invoke(reporting, "report", "daily", "--tz", "Mars/Olympus")

    assert result.exit_code == 2
    assert "Mars/Olympus" in result.stderr and "IANA" in result.stderr


def test_report_range_streams_one_csv_header_then_each_days_rows(reporting: Flask) -> None:
    seed(reporting)

    result = invoke(reporting, "report", "range", "--from", "2026-11-23", "--to", "2026-11-25")

    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["date", "tz", "section", "key", "metric", "currency", "value"]
    assert rows.count(rows[0]) == 1
    counts = {r[0]: r[6] for r in rows[1:] if r[2:6] == ["paths", "auto_approved", "count", ""]}
    assert counts == {"2026-11-23": "0", "2026-11-24": "1", "2026-11-25": "1"}
    assert ["2026-11-25", "UTC", "paths", "auto_approved", "amount", "jpy", "1500"] in rows


def test_report_range_as_json_is_an_array_of_days(reporting: Flask) -> None:
    seed(reporting)

    days = json.loads(invoke(reporting, "report", "range", "--from", "2026-11-24", "--to", "2026-11-25",
                             "--format", "json").stdout)

    assert [(d["date"], d["paths"]["auto_approved"]["count"]) for d in days] == [("2026-11-24", 1), ("2026-11-25", 1)]


@pytest.fixture
def slack_app(database_url: str, gateway: FakeGateway, clock: FakeClock, slack: SlackStandIn) -> Iterator[Flask]:
    app = create_app(make_settings(database_url, slack_webhook_url=slack.webhook_url), gateway=gateway, clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    register(app, clock=clock)
    yield app
    app.extensions["refund_service"].db.dispose()


def test_post_slack_sends_one_message_slack_accepts_with_the_numbers(slack_app: Flask, slack: SlackStandIn) -> None:
    seed(slack_app)

    result = invoke(slack_app, "report", "daily", "--post-slack")

    assert result.exit_code == 0, result.output
    [message] = slack.wait_for(1)
    assert message["text"] == "Refunds on 2026-11-25 (UTC): 3 refunded, 0 rejected or expired, 0 failed"
    texts = "\n".join(b["text"]["text"] for b in message["blocks"] if b["type"] == "section")
    assert "auto-approved: 1 (1,500 JPY)" in texts
    assert "made outside the service: 1 (25.00 EUR)" in texts
    assert slack.refusals == []


def test_post_slack_without_a_webhook_says_so_and_fails(reporting: Flask) -> None:
    result = invoke(reporting, "report", "daily", "--post-slack")

    assert result.exit_code == 1
    assert "SLACK_WEBHOOK_URL is not set" in result.stderr


def test_a_huge_breakdown_still_fits_slacks_limits_and_cannot_format(reporting: Flask) -> None:
    with reporting.extensions["refund_service"].db.transaction() as conn:
        for n in range(300):
            add_request(conn, "auto_approved", amount=100, currency="usd", created=at("2026-11-25 10:00"),
                        resolved=at("2026-11-25 10:00"), requested_by=f"*agent* <!channel> {n:03d} " + "x" * 150)
    from zoneinfo import ZoneInfo

    from refunds.reports import daily_report

    with reporting.extensions["refund_service"].db.read() as conn:
        report = daily_report(conn, datetime(2026, 11, 25).date(), ZoneInfo("UTC"), now=datetime.now(UTC))
    message = slack_message(report)

    assert check_message(message) is None
    agents = next(b["text"]["text"] for b in message["blocks"] if "By requesting agent" in b["text"]["text"])
    assert len(agents) <= 3000 and agents.endswith(" more")
    assert "<!channel>" not in agents and "*agent*" not in agents


# -- sync, against the Stripe stand-in over HTTP ---------------------------------------------------------------

@pytest.fixture
def stripe() -> Iterator[StripeStandIn]:
    with StripeStandIn(api_key=KEY) as stand_in:
        yield stand_in


def unix(text: str) -> int:
    return int(at(text).timestamp())


def test_sync_imports_outside_refunds_once_and_caches_charges_with_fees(
    app: Flask, clock: FakeClock, stripe: StripeStandIn
) -> None:
    register(app, clock=clock, stripe=StripeGateway(KEY, api_base=stripe.base_url, timeout_seconds=5))
    for n in range(130):  # more than a page of 100
        stripe.add_charge(1000, "usd", created=unix("2026-11-25 08:00") + n, metadata={"product": "mug"})
    kettle = stripe.add_charge(5000, "eur", created=unix("2026-11-25 09:00"), fee=175, metadata={"product": "kettle"})
    old = stripe.add_charge(3000, "usd", created=unix("2026-11-20 09:00"))
    dashboard = stripe.add_refund(kettle["id"], 2000, created=unix("2026-11-25 15:00"), reason="duplicate")
    stripe.add_refund(old["id"], 3000, created=unix("2026-11-20 10:00"))  # before --since
    failed = stripe.add_refund(kettle["id"], 100, created=unix("2026-11-25 16:00"), status="failed",
                               failure_reason="expired_or_canceled_card")

    first = invoke(app, "sync", "--since", "2026-11-24")
    second = invoke(app, "sync", "--since", "2026-11-24")

    assert first.exit_code == 0, first.output
    assert "2 listed by Stripe, 2 made outside the service imported" in first.stdout
    assert "131 listed by Stripe, 131 new in the cache" in first.stdout
    assert "2 listed by Stripe, 0 made outside the service imported" in second.stdout
    assert "131 listed by Stripe, 0 new in the cache" in second.stdout
    with app.extensions["refund_service"].db.read() as conn:
        logged = conn.execute(select(refund_log).order_by(refund_log.c.processed_at)).all()
        cached = conn.execute(select(func.count()).select_from(stripe_charges)).scalar()
        fee = conn.execute(select(stripe_charges.c.fee, stripe_charges.c.fee_currency, stripe_charges.c.product)
                           .where(stripe_charges.c.charge_id == kettle["id"])).one()
    assert [(r.refund_id, r.decision, r.amount, r.currency, r.status, r.reason, r.processed_at) for r in logged] == [
        (dashboard["id"], "external", 2000, "eur", "succeeded", "duplicate", at("2026-11-25 15:00")),
        (failed["id"], "external", 100, "eur", "failed", None, at("2026-11-25 16:00"))]
    assert (cached, tuple(fee)) == (131, (175, "eur", "kettle"))
    listed = [r for r in stripe.requests if r["method"] == "GET"]
    assert {r["path"] for r in listed} == {"/v1/refunds", "/v1/charges"}
    assert listed[0]["params"]["created"] == {"gte": str(unix("2026-11-24 00:00"))}

    figures = json.loads(invoke(app, "report", "daily", "--date", "2026-11-25", "--format", "json").stdout)
    assert figures["paths"]["external"]["amounts"] == [{"amount": 2000, "currency": "eur", "display": "20.00 EUR"}]
    assert figures["failures"][0]["reason"] == "expired_or_canceled_card"
    assert {p["product"]: (p["refunded_charges"], p["charges"]) for p in figures["products"]} == {
        "kettle": (1, 1), "mug": (0, 130)}
    assert figures["fees"]["kept"] == [{"amount": 175, "currency": "eur", "display": "1.75 EUR"}]


def test_sync_leaves_the_services_own_refunds_to_the_service(
    app: Flask, clock: FakeClock, stripe: StripeStandIn
) -> None:
    register(app, clock=clock, stripe=StripeGateway(KEY, api_base=stripe.base_url, timeout_seconds=5))
    charge = stripe.add_charge(1000, "usd", created=unix("2026-11-25 08:00"))
    with app.extensions["refund_service"].db.transaction() as conn:
        request_id = add_request(conn, "executing", amount=1000, currency="usd", created=at("2026-11-25 08:00"),
                                 resolved=at("2026-11-25 08:00"))
        refund_key = conn.execute(select(refund_requests.c.stripe_idempotency_key)
                                  .where(refund_requests.c.id == request_id)).scalar()
    # Made by the service, which has not recorded it yet (it records it with its request).
    stripe.add_refund(charge["id"], 1000, created=unix("2026-11-25 08:00"), metadata={"refund_key": refund_key})

    result = invoke(app, "sync", "--since", "2026-11-25")

    assert "1 listed by Stripe, 0 made outside the service imported" in result.stdout
    with app.extensions["refund_service"].db.read() as conn:
        assert conn.execute(select(func.count()).select_from(refund_log)).scalar() == 0


def test_the_stand_in_refuses_an_unknown_created_filter_as_stripe_does(stripe: StripeStandIn) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{stripe.base_url}/v1/charges?created[since]=1",
                                     headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"] == {
        "code": "parameter_unknown", "doc_url": "https://stripe.com/docs/error-codes/parameter-unknown",
        "message": "Received unknown parameter: created[since]", "param": "created[since]",
        "type": "invalid_request_error"}


def test_refunds_made_through_the_api_are_in_that_days_report(
    reporting: Flask, client: Any, intake_headers: dict[str, str], approver_headers: dict[str, str],
    clock: FakeClock
) -> None:
    auto = client.post("/refund-request", json={"charge_id": "ch_small", "amount": 2500, "product": "mug"},
                       headers=intake_headers)
    waiting = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 15000, "requested_by": "tom"},
                          headers=intake_headers)
    clock.advance(timedelta(hours=2))
    approved = client.post("/approve-refund", json={"pending_id": waiting.get_json()["pending_id"]},
                           headers=approver_headers)
    assert (auto.status_code, waiting.status_code, approved.status_code) == (200, 202, 200)

    body = json.loads(invoke(reporting, "report", "daily", "--date", "2026-11-26", "--format", "json").stdout)

    assert body["paths"]["auto_approved"]["amounts"] == [{"amount": 2500, "currency": "usd", "display": "25.00 USD"}]
    assert body["paths"]["approved"]["amounts"] == [{"amount": 15000, "currency": "usd", "display": "150.00 USD"}]
    assert (body["refund_kinds"]["partial"]["count"], body["refund_kinds"]["full"]["count"]) == (2, 0)
    assert body["resolution"]["approved"]["median_seconds"] == 7200
    assert body["approval_wait"]["median_seconds"] == 7200
    assert body["approvers"]["maria"]["count"] == 1
    assert body["agents"]["tom"]["count"] == 1
    assert [(p["product"], p["refunded_charges"]) for p in body["products"]] == [(None, 1), ("mug", 1)]


def test_sync_interrupted_by_stripe_keeps_what_it_read_and_a_second_run_completes(
    app: Flask, clock: FakeClock, stripe: StripeStandIn
) -> None:
    register(app, clock=clock, stripe=StripeGateway(KEY, api_base=stripe.base_url, max_network_retries=0,
                                                    timeout_seconds=5))
    for n in range(250):
        stripe.add_charge(1000, "usd", created=unix("2026-11-25 08:00") + n)
    stripe.add_refund(stripe.add_charge(500, "usd", created=unix("2026-11-25 07:00"))["id"],
                      created=unix("2026-11-25 09:00"))
    # A fault matches each request in turn: a "delay" of 0 s lets pages 1 and 2 pass, then page 3 fails.
    stripe.inject("delay", method="GET", path_prefix="/v1/charges", times=2)
    stripe.inject("error", method="GET", path_prefix="/v1/charges", status=500, times=1)  # page 3 fails

    failed = invoke(app, "sync", "--since", "2026-11-25")
    again = invoke(app, "sync", "--since", "2026-11-25")

    assert failed.exit_code == 1
    assert "run sync again" in failed.stderr and "sk_test" not in failed.stderr
    assert again.exit_code == 0, again.output
    assert "1 listed by Stripe, 0 made outside the service imported" in again.stdout
    assert "251 listed by Stripe, 51 new in the cache" in again.stdout
    with app.extensions["refund_service"].db.read() as conn:
        assert conn.execute(select(func.count()).select_from(stripe_charges)).scalar() == 251
        assert conn.execute(select(func.count()).select_from(refund_log)).scalar() == 1


def test_the_gateway_lists_what_stripe_made_from_gte_to_before_lt(stripe: StripeStandIn) -> None:
    gateway = StripeGateway(KEY, api_base=stripe.base_url, timeout_seconds=5)
    made = [stripe.add_charge(100 + n, "usd", created=unix("2026-11-25 00:00") + n * 3600, fee=n)
            for n in range(5)]

    listed = list(gateway.list_charges(created_gte=unix("2026-11-25 01:00"), created_lt=unix("2026-11-25 04:00")))

    assert [(c.charge_id, c.amount, c.fee, c.fee_currency) for c in listed] == [
        (made[n]["id"], 100 + n, n, "usd") for n in (3, 2, 1)]  # newest first, as Stripe lists
    assert listed[0].created == datetime(2026, 11, 25, 3, tzinfo=UTC)
