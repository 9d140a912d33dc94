"""Signed one-click approval links: looking never acts; only the page's own POST does, once."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from refunds import create_app
from refunds.approval_links import SALT
from refunds.approvers import add as add_approver
from refunds.approvers import change, revoke
from refunds.errors import LinkInvalid
from refunds.money import Money
from refunds.service import Actor, utcnow
from refunds.tables import approval_link_uses, approvals, audit_log, pending_refunds
from tests.conftest import active_approver, make_settings
from tests.fakes import FakeClock, FakeGateway, FakeNotifier
from tests.test_refund_request import rows

LINK_SECRET = "link-secret-for-tests-0123456789abcdef"
SCANNERS = [
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Barracuda Sentinel; +https://barracuda.com)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0; Pro) SafeLinks",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1",
]


@pytest.fixture
def app(database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock) -> Any:
    settings = make_settings(database_url, approval_link_secret=LINK_SECRET, public_base_url="https://refunds.example")
    app = create_app(settings, gateway=gateway, notifier=notifier, clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


@pytest.fixture
def link(app: Flask, client: FlaskClient, intake_headers: dict[str, str]) -> str:
    """Maria's link for a 150.00 USD refund waiting for approval, as GET /pending-refunds gives it."""
    token = add_approver(app.extensions["refund_service"].db, "maria", utcnow())
    client.post("/refund-request", json={"charge_id": "ch_big", "amount": 15_000, "customer_email": "ana@example.com"},
                headers=intake_headers)
    [item] = client.get("/pending-refunds", headers={"Authorization": f"Bearer {token}"}).get_json()["pending"]
    url: str = item["approval_link"]
    assert url.startswith("https://refunds.example/approval-links/")
    return url.removeprefix("https://refunds.example")


def open_page(client: FlaskClient, path: str) -> tuple[Any, str]:
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    return page, match.group(1) if match else ""


def test_the_page_shows_the_refund_and_needs_no_javascript(client: FlaskClient, link: str) -> None:
    page, csrf = open_page(client, link)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for shown in ("150.00 USD", "ana@example.com", "ch_big", "requested_by_customer", "over the auto-approve"):
        assert shown in html
    assert "<script" not in html and "http-equiv" not in html  # nothing submits by itself
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in page.headers["Cache-Control"]
    assert csrf


def test_scanners_and_unfurlers_opening_the_link_100_times_change_nothing(
    app: Flask, client: FlaskClient, link: str, gateway: FakeGateway
) -> None:
    for i in range(100):
        agent = {"User-Agent": SCANNERS[i % len(SCANNERS)]}
        response = client.head(link, headers=agent) if i % 2 else client.get(link, headers=agent)
        assert response.status_code == 200
    assert gateway.calls == []
    assert rows(app, pending_refunds)[0].status == "pending"
    assert rows(app, approval_link_uses) == []
    assert [a.action for a in rows(app, audit_log)] == ["requested", "needs_approval"]


def test_approving_from_the_page_acts_once_and_is_attributed_to_the_link(
    app: Flask, client: FlaskClient, link: str, gateway: FakeGateway
) -> None:
    _, csrf = open_page(client, link)
    done = client.post(link, data={"csrf_token": csrf, "action": "approve"})
    assert done.status_code == 200
    assert "Approved by maria" in done.get_data(as_text=True)
    assert len(gateway.refunds) == 1
    assert rows(app, pending_refunds)[0].decided_by == "maria"
    assert ("approved", "maria", "link") in [(a.action, a.actor, a.channel) for a in rows(app, audit_log)]

    assert client.get(link).status_code == 404  # spent
    replay = client.post(link, data={"csrf_token": csrf, "action": "approve"})
    assert replay.status_code == 404
    assert "already used" in replay.get_data(as_text=True)
    assert len(gateway.refunds) == 1


def test_rejecting_from_the_page_keeps_the_reason(app: Flask, client: FlaskClient, link: str,
                                                  gateway: FakeGateway) -> None:
    _, csrf = open_page(client, link)
    done = client.post(link, data={"csrf_token": csrf, "action": "reject", "note": "bought in a sale"})
    assert done.status_code == 200
    [pending] = rows(app, pending_refunds)
    assert (pending.status, pending.decision_note) == ("rejected", "bought in a sale")
    assert gateway.calls == []


@pytest.mark.parametrize("csrf", ["", "forged"])
def test_a_post_without_the_pages_csrf_token_is_refused(
    app: Flask, client: FlaskClient, link: str, gateway: FakeGateway, csrf: str
) -> None:
    open_page(client, link)  # the cookie is set, but the form value is missing or wrong
    response = client.post(link, data={"csrf_token": csrf, "action": "approve"})
    assert response.status_code == 403
    assert gateway.calls == []
    assert rows(app, approval_link_uses) == []


def test_a_cross_site_post_without_the_cookie_is_refused(app: Flask, link: str, gateway: FakeGateway) -> None:
    stranger = app.test_client()  # no cookie: the browser never loaded the page from us
    response = stranger.post(link, data={"csrf_token": "anything", "action": "approve"})
    assert response.status_code == 403
    assert gateway.calls == []


def _forge(payload: dict[str, Any], *, secret: str = LINK_SECRET, age: int = 0) -> str:
    class AgedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age

    return "/approval-links/" + URLSafeTimedSerializer(secret, salt=SALT, signer=AgedSigner).dumps(payload)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda link: link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"), id="tampered"),
        pytest.param(lambda link: _forge({"p": 1, "a": "maria", "m": 15_000, "c": "usd", "n": "x"}, age=90_000),
                     id="expired"),
        pytest.param(lambda link: _forge({"p": 1, "a": "maria", "m": 15_000, "c": "usd", "n": "x"},
                                         secret="another-secret-0123456789abcdefghij"), id="other secret"),
        pytest.param(lambda link: _forge({"p": 1, "a": "maria", "m": 1, "c": "usd", "n": "x"}), id="other amount"),
        pytest.param(lambda link: _forge({"p": 2, "a": "maria", "m": 15_000, "c": "usd", "n": "x"}),
                     id="other request"),
        pytest.param(lambda link: _forge({"p": 1, "a": "mallory", "m": 15_000, "c": "usd", "n": "x"}),
                     id="not an approver"),
        pytest.param(lambda link: "/approval-links/not-a-token", id="garbage"),
    ],
)
def test_bad_links_are_refused_and_reach_no_one(
    app: Flask, client: FlaskClient, link: str, gateway: FakeGateway, make: Any
) -> None:
    bad = make(link)
    assert client.get(bad).status_code == 404
    client.set_cookie("refund_csrf", "c", path=bad)
    assert client.post(bad, data={"csrf_token": "c", "action": "approve"}).status_code == 404
    assert gateway.calls == []
    assert rows(app, pending_refunds)[0].status == "pending"


def test_a_revoked_approvers_link_stops_working(app: Flask, client: FlaskClient, link: str,
                                                gateway: FakeGateway) -> None:
    _, csrf = open_page(client, link)
    revoke(app.extensions["refund_service"].db, "maria", utcnow())
    assert client.post(link, data={"csrf_token": csrf, "action": "approve"}).status_code == 404
    assert gateway.calls == []


def _admin_headers(app: Flask) -> dict[str, str]:
    token = add_approver(app.extensions["refund_service"].db, "root", utcnow(), role="admin")
    return {"Authorization": f"Bearer {token}"}


def _franks_link(client: FlaskClient, frank_token: str) -> str:
    [item] = client.get("/pending-refunds", headers={"Authorization": f"Bearer {frank_token}"}).get_json()["pending"]
    return str(item["approval_link"]).removeprefix("https://refunds.example")


def test_a_link_stays_dead_after_its_approver_is_revoked_and_added_again(
    app: Flask, client: FlaskClient, gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    admin = _admin_headers(app)
    frank = client.post("/approvers", json={"name": "frank"}, headers=admin).get_json()["token"]
    client.post("/refund-request", json={"charge_id": "ch_big", "amount": 15_000}, headers=intake_headers)
    old_link = _franks_link(client, frank)
    _, old_csrf = open_page(client, old_link)

    assert client.delete("/approvers/frank", headers=admin).status_code == 200
    assert client.get(old_link).status_code == 404
    new_frank = client.post("/approvers", json={"name": "frank"}, headers=admin)
    assert new_frank.status_code == 201

    # The old link was made for the revoked token: re-issuing frank does not bring it back.
    assert client.get(old_link).status_code == 404
    assert client.head(old_link).status_code == 404
    client.set_cookie("refund_csrf", old_csrf, path=old_link)
    replay = client.post(old_link, data={"csrf_token": old_csrf, "action": "approve"})
    assert replay.status_code == 404
    assert gateway.refunds == [] and gateway.calls == []
    assert rows(app, pending_refunds)[0].status == "pending"
    assert rows(app, approval_link_uses) == []

    new_link = _franks_link(client, new_frank.get_json()["token"])
    _, csrf = open_page(client, new_link)
    done = client.post(new_link, data={"csrf_token": csrf, "action": "approve"})
    assert done.status_code == 200
    assert "Approved by frank" in done.get_data(as_text=True)
    assert len(gateway.refunds) == 1


def test_a_link_made_for_an_earlier_token_is_refused_after_the_cli_reissues_it(
    app: Flask, client: FlaskClient, gateway: FakeGateway, intake_headers: dict[str, str]
) -> None:
    runner = app.test_cli_runner()
    frank = runner.invoke(args=["approvers", "add", "frank"]).output.strip().splitlines()[-1]
    client.post("/refund-request", json={"charge_id": "ch_big", "amount": 15_000}, headers=intake_headers)
    old_link = _franks_link(client, frank)
    assert runner.invoke(args=["approvers", "revoke", "frank"]).exit_code == 0
    assert runner.invoke(args=["approvers", "add", "frank"]).exit_code == 0

    assert client.get(old_link).status_code == 404
    client.set_cookie("refund_csrf", "c", path=old_link)
    assert client.post(old_link, data={"csrf_token": "c", "action": "approve"}).status_code == 404
    assert gateway.calls == []
    assert rows(app, pending_refunds)[0].status == "pending"


class _ReissuingClock(FakeClock):
    """A clock that, once armed, revokes and re-adds maria when it is read for the `at`-th time: a token
    re-issued at that moment of a request, deterministically."""

    def __init__(self, app: Flask, at: int) -> None:
        super().__init__()
        self.app, self.at, self.reads, self.reissued = app, at, 0, False

    def __call__(self) -> Any:
        self.reads += 1
        if self.reads == self.at and not self.reissued:
            self.reissued = True
            db = self.app.extensions["refund_service"].db
            revoke(db, "maria", utcnow())
            add_approver(db, "maria", utcnow())
        return super().__call__()


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_token_reissued_after_the_link_was_checked_but_before_the_decision_stops_the_link(
    app: Flask, client: FlaskClient, link: str, gateway: FakeGateway, action: str
) -> None:
    _, csrf = open_page(client, link)
    service = app.extensions["refund_service"]
    # The POST reads the clock first to spend the link (after the link's own check), then in `approve` or
    # `reject` before the deciding transaction: maria's token is re-issued between those two reads.
    service.clock = clock = _ReissuingClock(app, at=2)
    page = client.post(link, data={"csrf_token": csrf, "action": action, "note": "no"})
    assert clock.reissued
    assert page.status_code == 404
    assert "no longer an approver" in page.get_data(as_text=True)
    assert [p.status for p in rows(app, pending_refunds)] == ["pending"]
    assert rows(app, approvals) == []
    assert [a.action for a in rows(app, audit_log) if a.action in ("approved", "rejected")] == []
    assert gateway.refunds == [] and gateway.calls == []


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_the_service_refuses_a_decision_whose_link_credential_is_stale(
    app: Flask, client: FlaskClient, link: str, gateway: FakeGateway, action: str
) -> None:
    service = app.extensions["refund_service"]
    links = app.extensions["approval_links"]
    claims = links.read(link.removeprefix("/approval-links/"))
    db = service.db
    revoke(db, "maria", utcnow())
    add_approver(db, "maria", utcnow())

    def issued_for(token_hash: str) -> bool:
        return bool(links.matches(claims, token_hash))

    with pytest.raises(LinkInvalid):
        if action == "approve":
            service.approve(claims.pending_id, Actor("maria", "link"), credential=issued_for)
        else:
            service.reject(claims.pending_id, Actor("maria", "link"), None, credential=issued_for)
    assert [p.status for p in rows(app, pending_refunds)] == ["pending"]
    assert rows(app, approvals) == []
    assert gateway.refunds == [] and gateway.calls == []
    # The same approver with her current credential decides as usual.
    fresh = approvers_hash(app, "maria")
    assert not issued_for(fresh)
    outcome = service.approve(claims.pending_id, Actor("maria", "link"),
                              credential=lambda token_hash: token_hash == fresh)
    assert outcome.status == "approved" and len(gateway.refunds) == 1


def approvers_hash(app: Flask, name: str) -> str:
    approver = active_approver(app.extensions["refund_service"].db, name)
    assert approver is not None
    return approver.token_hash


def test_an_approval_refused_by_a_rule_after_the_link_is_checked_spends_nothing_and_the_link_still_works(
    app: Flask, client: FlaskClient, link: str, gateway: FakeGateway
) -> None:
    db = app.extensions["refund_service"].db
    _, csrf = open_page(client, link)
    # Her limit drops under the amount after the page was shown: the deciding transaction, which spends the
    # link first, refuses the approval, so the spend is rolled back with it.
    change(db, "maria", limits=[Money(10_000, "usd")])

    refused = client.post(link, data={"csrf_token": csrf, "action": "approve"})

    assert refused.status_code == 200
    assert "approval limit" in refused.get_data(as_text=True)
    assert rows(app, approval_link_uses) == []
    assert rows(app, approvals) == []
    assert [p.status for p in rows(app, pending_refunds)] == ["pending"]
    assert gateway.calls == []

    # Nothing was decided, so the link was not used: once the limit allows it, the same link acts, once.
    change(db, "maria", limits=[Money(20_000, "usd")])
    _, csrf = open_page(client, link)
    done = client.post(link, data={"csrf_token": csrf, "action": "approve"})
    assert "Approved by maria" in done.get_data(as_text=True)
    assert len(gateway.refunds) == 1
    assert len(rows(app, approval_link_uses)) == 1
    assert client.post(link, data={"csrf_token": csrf, "action": "approve"}).status_code == 404
    assert len(gateway.refunds) == 1
