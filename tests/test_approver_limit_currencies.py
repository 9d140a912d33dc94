"""Approver limits carry a currency: a limit in one currency never covers another (issue 9).

On every path the approval goes through `rules.may_approve`; the CLI reads limits in major units with
their currency (zero- and three-decimal currencies right); migration 0007 moves the old bare limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text

from refunds.approvers import add as add_approver
from refunds.db import alembic_config
from refunds.money import Money
from refunds.schemas import NewApproverBody
from refunds.service import utcnow
from refunds.tables import approver_limits, pending_refunds
from standins.slack_webhook import SlackStandIn
from tests.conftest import active_approver, empty_postgres_database, run_worker
from tests.fakes import FakeGateway
from tests.test_notifier import slack_app  # noqa: F401 - the fixture: Slack stand-in with approval links on
from tests.test_refund_request import rows


def queue(client: FlaskClient, intake_headers: dict[str, str], charge_id: str, amount: int) -> int:
    response = client.post("/refund-request", json={"charge_id": charge_id, "amount": amount}, headers=intake_headers)
    assert response.status_code == 202, response.get_json()
    return int(response.get_json()["pending_id"])


def bearer(app: Flask, name: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {add_approver(app.extensions['refund_service'].db, name, utcnow(), **kwargs)}"}


def cli(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["approvers", *args])
    return result.exit_code, result.output


def test_a_usd_limit_does_not_cover_a_eur_refund_and_stripe_sees_nothing(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    gateway.add_charge("ch_eur", 50_000, currency="eur")
    pending_id = queue(client, intake_headers, "ch_eur", 12_000)
    usd_only = bearer(app, "junior", limits=[Money(1_000_000, "usd")])

    response = client.post("/approve-refund", json={"pending_id": pending_id}, headers=usd_only)

    assert (response.status_code, response.get_json()["error"]) == (403, "over_approval_limit")
    assert "no approval limit in EUR" in response.get_json()["message"]
    assert gateway.calls == []
    assert rows(app, pending_refunds)[0].status == "pending"


def test_a_limit_in_the_refunds_currency_covers_it_and_no_limits_at_all_covers_every_currency(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    gateway.add_charge("ch_eur", 50_000, currency="eur")
    gateway.add_charge("ch_jpy", 500_000, currency="jpy")
    eur = queue(client, intake_headers, "ch_eur", 12_000)
    jpy = queue(client, intake_headers, "ch_jpy", 60_000)
    both = bearer(app, "ana", limits=[Money(100, "usd"), Money(12_000, "eur")])

    assert client.post("/approve-refund", json={"pending_id": eur}, headers=both).status_code == 200
    assert client.post("/approve-refund", json={"pending_id": jpy}, headers=bearer(app, "boss")).status_code == 200
    assert [(r.amount, r.currency) for r in gateway.refunds] == [(12_000, "eur"), (60_000, "jpy")]


def test_slack_offers_approval_links_only_to_approvers_whose_limit_is_in_the_refunds_currency(
    slack_app: Flask, slack: SlackStandIn, intake_headers: dict[str, str], gateway: FakeGateway  # noqa: F811
) -> None:
    gateway.add_charge("ch_eur", 50_000, currency="eur")
    db = slack_app.extensions["refund_service"].db
    add_approver(db, "anyone", utcnow())
    add_approver(db, "eur_ok", utcnow(), limits=[Money(20_000, "eur")])
    add_approver(db, "usd_only", utcnow(), limits=[Money(1_000_000, "usd")])
    queue(slack_app.test_client(), intake_headers, "ch_eur", 12_000)

    run_worker(slack_app)

    [message] = slack.messages
    offered = re.findall(r"Approve or reject as ([^>]+)>", json.dumps(message["blocks"]))
    assert offered == ["anyone", "eur_ok"]


def test_the_cli_reads_limits_in_major_units_for_zero_and_three_decimal_currencies(app: Flask) -> None:
    code, output = cli(app, "add", "li", "--limit", "5000:jpy", "--limit", "5.000:kwd", "--limit", "1.5:usd")

    assert code == 0, output
    li = active_approver(app.extensions["refund_service"].db, "li")
    assert li is not None
    assert li.limits == (Money(5000, "jpy"), Money(5000, "kwd"), Money(150, "usd"))
    assert sorted((r.currency, r.amount) for r in rows(app, approver_limits)) == [
        ("jpy", 5000), ("kwd", 5000), ("usd", 150)]
    code, output = cli(app, "list")
    assert "limit 5,000 JPY, 5.000 KWD, 1.50 USD" in output


@pytest.mark.parametrize(("limit", "reason"), [
    ("50000", "has no currency"),        # the old bare minor units: refused, never guessed
    ("1.5:jpy", "JPY has 0 digit(s)"),
    ("5.0001:kwd", "KWD has 3 digit(s)"),
    ("5:dollars", "not a currency code"),
    ("-5:usd", "not an amount"),
])
def test_a_limit_the_cli_cannot_read_exactly_is_refused_and_nothing_is_written(
    app: Flask, limit: str, reason: str
) -> None:
    code, output = cli(app, "add", "li", "--limit", limit)

    assert code != 0
    assert reason in output and "--limit" in output, output
    assert active_approver(app.extensions["refund_service"].db, "li") is None


def test_the_apis_currency_keys_fit_the_approver_limits_column() -> None:
    keys = NewApproverBody.model_json_schema()["properties"]["approval_limits"]["anyOf"][0]["propertyNames"]
    assert approver_limits.c.currency.type.length is not None
    assert keys["maxLength"] <= approver_limits.c.currency.type.length


def test_two_limits_in_one_currency_are_refused(app: Flask) -> None:
    code, output = cli(app, "add", "li", "--limit", "5:usd", "--limit", "6:usd")
    assert code != 0 and "two approval limits in USD" in output
    assert rows(app, approver_limits) == []


def test_set_limit_replaces_every_limit_and_no_limit_removes_them_all(app: Flask) -> None:
    cli(app, "add", "li", "--limit", "5:usd", "--limit", "5:eur")

    assert cli(app, "set", "li", "--limit", "700:jpy")[0] == 0
    assert [(r.currency, r.amount) for r in rows(app, approver_limits)] == [("jpy", 700)]
    assert cli(app, "set", "li", "--no-limit")[0] == 0
    assert rows(app, approver_limits) == []


def test_the_api_takes_limits_by_currency_and_lists_them_with_their_currency(
    app: Flask, client: FlaskClient
) -> None:
    admin = bearer(app, "root", role="admin")
    body = {"name": "li", "approval_limits": {"jpy": 5000, "kwd": 5000}}
    created = client.post("/approvers", headers=admin, json=body)

    assert created.status_code == 201, created.get_json()
    expected = [{"amount": 5000, "currency": "jpy", "display": "5,000 JPY"},
                {"amount": 5000, "currency": "kwd", "display": "5.000 KWD"}]
    assert created.get_json()["approval_limits"] == expected
    listed = {a["name"]: a for a in client.get("/approvers", headers=admin).get_json()["approvers"]}
    assert (listed["li"]["approval_limits"], listed["root"]["approval_limits"]) == (expected, [])
    assert sorted((r.currency, r.amount) for r in rows(app, approver_limits)) == [("jpy", 5000), ("kwd", 5000)]


@contextmanager
def empty_database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
    else:
        with empty_postgres_database() as url:
            yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_0007_turns_each_bare_limit_into_a_usd_limit_and_keeps_no_limit_as_none(
    kind: str, tmp_path: Path
) -> None:
    with empty_database(kind, tmp_path) as url:
        engine = create_engine(url)
        try:
            command.upgrade(alembic_config(engine), "0004")
            with engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO approvers (name, token_hash, created_at, role, approval_limit) VALUES "
                    "('maria', 'h1', '2026-11-01 10:00:00+00:00', 'approver', 50000), "
                    "('li', 'h2', '2026-11-01 10:00:00+00:00', 'admin', NULL)"))

            command.upgrade(alembic_config(engine), "head")

            with engine.connect() as conn:
                moved = conn.execute(text(
                    "SELECT a.name, l.currency, l.amount FROM approver_limits l JOIN approvers a"
                    " ON a.id = l.approver_id")).all()
            assert [tuple(r) for r in moved] == [("maria", "usd", 50000)]
            assert "approval_limit" not in {c["name"] for c in inspect(engine).get_columns("approvers")}
        finally:
            engine.dispose()
