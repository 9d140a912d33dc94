"""Who may approve what: roles, limits, the two-person rule, no self-approval, expiry and escalation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.money import Money
from refunds.service import utcnow
from refunds.tables import approvals, audit_log, pending_refunds, refund_log, refund_requests
from tests.conftest import make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier
from tests.test_refund_request import rows


@pytest.fixture
def app(database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock) -> Any:
    """The service with the two-person rule above 100.00 and escalation/expiry at 4 h / 72 h."""
    settings = make_settings(database_url, two_person_threshold=10_000)
    app = create_app(settings, gateway=gateway, notifier=notifier, clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


def token_for(app: Flask, name: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {add_approver(app.extensions['refund_service'].db, name, utcnow(), **kwargs)}"}


def queue(client: FlaskClient, intake_headers: dict[str, str], amount: int, **extra: Any) -> int:
    response = client.post("/refund-request", json={"charge_id": "ch_big", "amount": amount, **extra},
                           headers=intake_headers)
    assert response.status_code == 202, response.get_json()
    return int(response.get_json()["pending_id"])


def approve(client: FlaskClient, pending_id: int, headers: dict[str, str]) -> Any:
    return client.post("/approve-refund", json={"pending_id": pending_id}, headers=headers)


def test_above_the_two_person_threshold_two_different_approvers_are_needed(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, notifier: FakeNotifier
) -> None:
    maria, li = token_for(app, "maria"), token_for(app, "li")
    pending_id = queue(client, intake_headers, 15_000)

    first = approve(client, pending_id, maria)
    assert (first.status_code, first.get_json()["status"]) == (202, "awaiting_second_approval")
    assert gateway.calls == []
    again = approve(client, pending_id, maria)
    assert (again.status_code, again.get_json()["error"]) == (409, "already_approved")
    assert gateway.calls == []

    second = approve(client, pending_id, li)
    assert (second.status_code, second.get_json()["status"]) == (200, "approved")
    assert len(gateway.refunds) == 1
    assert [(a.approver, a.channel) for a in rows(app, approvals)] == [("maria", "api"), ("li", "api")]
    assert rows(app, refund_log)[0].approved_by == "maria, li"
    run_worker(app)
    assert notifier.kinds() == ["needs_approval", "needs_second_approval", "approved"]


def test_at_or_under_the_two_person_threshold_one_approval_executes(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    pending_id = queue(client, intake_headers, 10_000)
    assert approve(client, pending_id, token_for(app, "maria")).status_code == 200
    assert len(gateway.refunds) == 1


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("nobody", 401, "unauthorized"),
        ("wrong token", 401, "unauthorized"),
        ("revoked", 401, "unauthorized"),
        ("over limit", 403, "over_approval_limit"),
        ("requester", 403, "self_approval"),
        ("second approval by the same person", 409, "already_approved"),
    ],
)
def test_each_refused_approver_gets_the_right_status_and_stripe_sees_nothing(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway,
    who: str, status: int, code: str,
) -> None:
    pending_id = queue(client, intake_headers, 15_000, requested_by="Sam@Support.example")
    db = app.extensions["refund_service"].db
    if who == "nobody":
        headers: dict[str, str] = {}
    elif who == "wrong token":
        headers = {"Authorization": "Bearer apr_wrong"}
    elif who == "revoked":
        headers = token_for(app, "gone")
        from refunds.approvers import revoke

        revoke(db, "gone", utcnow())
    elif who == "over limit":
        headers = token_for(app, "junior", limits=[Money(10_000, "usd")])
    elif who == "requester":
        headers = token_for(app, "sam@support.example")
    else:
        headers = token_for(app, "maria")
        assert approve(client, pending_id, headers).status_code == 202
    response = approve(client, pending_id, headers)
    assert (response.status_code, response.get_json()["error"]) == (status, code)
    assert gateway.calls == []
    assert rows(app, pending_refunds)[0].status == "pending"


def test_an_approver_within_their_limit_may_approve(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    pending_id = queue(client, intake_headers, 9_000)
    assert approve(client, pending_id, token_for(app, "junior", limits=[Money(9_000, "usd")])).status_code == 200
    assert len(gateway.refunds) == 1


def test_admins_manage_approvers_over_the_api_and_others_may_not(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    admin, plain = token_for(app, "root", role="admin"), token_for(app, "maria")
    assert client.get("/approvers", headers=plain).status_code == 403
    assert client.post("/approvers", json={"name": "x"}, headers=plain).status_code == 403
    created = client.post("/approvers", headers=admin,
                          json={"name": "li", "approval_limits": {"usd": 5_000}, "slack_user_id": "U123ABC"})
    assert created.status_code == 201
    li = {"Authorization": f"Bearer {created.get_json()['token']}"}
    assert client.get("/pending-refunds", headers=li).status_code == 200
    listed = {a["name"]: a for a in client.get("/approvers", headers=admin).get_json()["approvers"]}
    assert (listed["li"]["approval_limits"], listed["li"]["slack_user_id"], listed["li"]["active"]) == (
        [{"amount": 5_000, "currency": "usd", "display": "50.00 USD"}], "U123ABC", True)
    assert client.delete("/approvers/li", headers=admin).status_code == 200
    assert client.get("/pending-refunds", headers=li).status_code == 401
    assert client.delete("/approvers/li", headers=admin).status_code == 404


def test_a_refund_waiting_too_long_is_escalated_once_then_expires(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway,
    notifier: FakeNotifier, clock: FakeClock,
) -> None:
    pending_id = queue(client, intake_headers, 9_000)
    clock.advance(timedelta(hours=4, minutes=1))
    run_worker(app)
    clock.advance(timedelta(hours=1))
    run_worker(app)
    assert notifier.kinds() == ["needs_approval", "escalated"]
    clock.advance(timedelta(hours=68))
    run_worker(app)
    assert notifier.kinds()[-1] == "expired"
    assert rows(app, pending_refunds)[0].status == "expired"
    assert rows(app, refund_requests)[0].status == "expired"
    late = approve(client, pending_id, token_for(app, "maria"))
    assert (late.status_code, late.get_json()["error"]) == (409, "not_pending")
    assert gateway.calls == []
    assert [a.action for a in rows(app, audit_log)][-2:] == ["escalated", "expired"]


def test_an_approval_by_someone_revoked_since_no_longer_counts(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    from refunds.approvers import revoke

    maria, li = token_for(app, "maria"), token_for(app, "li")
    pending_id = queue(client, intake_headers, 15_000)
    assert approve(client, pending_id, maria).status_code == 202
    revoke(app.extensions["refund_service"].db, "maria", utcnow())
    second = approve(client, pending_id, li)
    assert (second.status_code, second.get_json()["status"]) == (202, "awaiting_second_approval")
    assert gateway.calls == []
    assert approve(client, pending_id, token_for(app, "ana")).status_code == 200
    assert rows(app, refund_log)[0].approved_by == "li, ana"


def test_two_long_approver_names_fit_in_the_log(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    first, second = "a" * 90 + "@example.com"[:10], "b" * 90 + "@example.com"[:10]
    pending_id = queue(client, intake_headers, 15_000)
    assert approve(client, pending_id, token_for(app, first)).status_code == 202
    assert approve(client, pending_id, token_for(app, second)).status_code == 200
    assert rows(app, refund_log)[0].approved_by == f"{first}, {second}"
    assert len(gateway.refunds) == 1


def test_revoking_a_name_no_database_can_hold_is_a_404_not_a_500(app: Flask, client: FlaskClient) -> None:
    admin = token_for(app, "root", role="admin")
    for name in ("a%00b", "x" * 101, "sp%20ace"):
        response = client.delete(f"/approvers/{name}", headers=admin)
        assert (response.status_code, response.get_json()["error"]) == (404, "approver_not_found")
