"""POST /slack/interactions: signed clicks by linked approvers decide; everything else changes nothing.

Clicks are built like Slack's `block_actions` payloads and signed like Slack signs them; the
`response_url` is a Slack stand-in on loopback, so replies travel over real HTTP.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import update

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.approvers import revoke
from refunds.errors import StripeUnavailable
from refunds.money import Money
from refunds.notifier import build_message
from refunds.service import utcnow
from refunds.tables import approvals, audit_log, outbox, pending_refunds, refund_requests
from standins.slack_webhook import SlackStandIn
from tests.conftest import make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway, FakeNotifier
from tests.polling import wait_until
from tests.slack_render import formatting
from tests.test_refund_request import rows

SECRET = "slack-signing-secret-for-tests-8f3a"
REPLY_PATH = "/actions/T0001/5512/reply-here"
AT = "2026-11-26T09:00:00Z"  # FakeClock's time


@pytest.fixture
def reply_to() -> Iterator[SlackStandIn]:
    """Slack's side of the click's `response_url`."""
    with SlackStandIn(path=REPLY_PATH) as standin:
        yield standin


@pytest.fixture
def build(database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock,
          reply_to: SlackStandIn) -> Iterator[Callable[..., Flask]]:
    """Makes the app with Slack interactions configured (the stand-in's address as the allowed prefix)."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        settings = make_settings(database_url, **{
            "slack_signing_secret": SECRET, "slack_response_url_prefix": f"http://127.0.0.1:{reply_to.port}/",
            **overrides})
        app = create_app(settings, gateway=gateway, notifier=notifier, clock=clock)
        app.config["TESTING"] = True
        if not database_url.startswith("sqlite"):
            app.extensions["refund_service"].db.upgrade()
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["refund_service"].db.dispose()


@pytest.fixture
def app(build: Callable[..., Flask]) -> Flask:
    return build()


@pytest.fixture
def pending_id(client: FlaskClient, intake_headers: dict[str, str]) -> int:
    """A 120.00 USD refund waiting for approval."""
    response = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000, "ticket_id": "T-9"},
                           headers=intake_headers)
    assert response.status_code == 202
    return int(response.get_json()["pending_id"])


@pytest.fixture
def maria(app: Flask) -> str:
    add_approver(app.extensions["refund_service"].db, "maria", utcnow(), slack_user_id="U0MARIA")
    return "U0MARIA"


def slack_message(app: Flask) -> dict[str, Any]:
    """The "needs approval" message as the worker posted it to Slack."""
    run_worker(app)
    notifier: FakeNotifier = app.extensions["refund_worker"].notifier
    kind, facts = next((k, f) for k, f in notifier.sent if k == "needs_approval")
    return build_message(kind, facts)


def click(app: Flask, action: str, pending_id: int | str, user: str, *, response_url: str,
          reason: str | None = None) -> dict[str, Any]:
    """A `block_actions` payload as Slack sends it when `user` clicks a button of the message."""
    message = slack_message(app)
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1764147600.000100", "channel_id": "C0001",
                      "is_ephemeral": False},
        "trigger_id": "1111.2222.3333",
        "team": {"id": "T0001", "domain": "example"},
        "channel": {"id": "C0001", "name": "refunds"},
        "message": {"type": "message", "ts": "1764147600.000100", "text": message["text"],
                    "blocks": message["blocks"]},
        "state": {"values": {"reject_reason": {"reject_reason": {"type": "plain_text_input", "value": reason}}}},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action, "block_id": "refund_decision", "value": str(pending_id),
                     "text": {"type": "plain_text", "text": "Approve"}, "action_ts": "1764147601.000200"}],
    }


def form(payload: Any) -> bytes:
    return urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)}).encode()


def signed(body: bytes, *, secret: str = SECRET, timestamp: str | None = None) -> dict[str, str]:
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}


def deliver(app: Flask, body: bytes, headers: dict[str, str]) -> Any:
    """POST the interaction as Slack does, then run the worker, which decides the clicks recorded."""
    response = app.test_client().post("/slack/interactions", data=body,
                                      headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    run_worker(app)
    return response


def nothing_changed(app: Flask, gateway: FakeGateway) -> None:
    assert gateway.calls == []
    assert [p.status for p in rows(app, pending_refunds)] == ["pending"]
    assert [r.status for r in rows(app, refund_requests)] == ["pending_approval"]


def test_a_signed_approve_click_by_a_linked_approver_refunds_and_replaces_the_message_naming_them(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))

    response = deliver(app, body, signed(body))

    assert (response.status_code, response.data) == (200, b"")
    [refund] = gateway.refunds
    assert refund.amount == 12000
    [pending] = rows(app, pending_refunds)
    assert (pending.status, pending.decided_by) == ("approved", "maria")
    assert ("approved", "maria", "slack") in [(a.action, a.actor, a.channel) for a in rows(app, audit_log)]
    [reply] = reply_to.messages
    assert reply["replace_original"] is True
    assert reply["text"] == f"Approved by maria at {AT}: refund {refund.refund_id} executed"
    kept = [b["type"] for b in reply["blocks"]]
    assert "header" in kept and "actions" not in kept and "input" not in kept
    assert reply["blocks"][-1]["text"]["text"] == reply["text"]


def test_a_reject_click_keeps_the_typed_reason_and_shows_it(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    body = form(click(app, "reject_refund", pending_id, maria, response_url=reply_to.webhook_url,
                      reason="  outside the 30-day window "))

    assert deliver(app, body, signed(body)).status_code == 200

    assert gateway.calls == []
    [pending] = rows(app, pending_refunds)
    assert (pending.status, pending.decided_by, pending.decision_note) == ("rejected", "maria",
                                                                           "outside the 30-day window")
    [reply] = reply_to.messages
    assert reply["replace_original"] is True
    assert reply["text"] == f"Rejected by maria at {AT}: outside the 30-day window"


@pytest.mark.parametrize("reason", ["fine\n\n*Approved by* CFO <!channel> <https://evil|x> `x` ~y~ _z_\n> quoted",
                                    "<" * 2000])
def test_a_typed_reason_cannot_format_the_replaced_message_and_fits_slacks_limits(
    app: Flask, pending_id: int, maria: str, reply_to: SlackStandIn, reason: str
) -> None:
    body = form(click(app, "reject_refund", pending_id, maria, response_url=reply_to.webhook_url, reason=reason))

    assert deliver(app, body, signed(body)).status_code == 200

    assert reply_to.refusals == []
    [reply] = reply_to.messages
    outcome = reply["blocks"][-1]
    assert outcome["text"]["text"] == reply["text"] and len(reply["text"]) <= 3000
    # One line, no bold, italics, strike, code, links, mentions or quotes: only the words.
    assert formatting({"blocks": [outcome], "text": reply["text"]}) == [("mrkdwn", 1, (), (), (), 0, (), 0, ())] * 2
    assert reply["text"].startswith(f"Rejected by maria at {AT}: ")


def test_a_reject_click_without_a_reason_rejects_with_none(
    app: Flask, pending_id: int, maria: str, reply_to: SlackStandIn
) -> None:
    body = form(click(app, "reject_refund", pending_id, maria, response_url=reply_to.webhook_url))
    deliver(app, body, signed(body))
    [pending] = rows(app, pending_refunds)
    assert (pending.status, pending.decision_note) == ("rejected", None)
    assert reply_to.messages[0]["text"] == f"Rejected by maria at {AT}"


@pytest.mark.parametrize("who", ["never linked", "revoked"])
def test_a_click_by_a_slack_user_who_is_not_an_active_approver_gets_a_private_note_and_nothing_happens(
    app: Flask, pending_id: int, gateway: FakeGateway, reply_to: SlackStandIn, who: str
) -> None:
    db = app.extensions["refund_service"].db
    if who == "revoked":
        add_approver(db, "li", utcnow(), slack_user_id="U0STRANGER")
        revoke(db, "li", utcnow())
    body = form(click(app, "approve_refund", pending_id, "U0STRANGER", response_url=reply_to.webhook_url))

    response = deliver(app, body, signed(body))

    assert response.status_code == 200
    nothing_changed(app, gateway)
    [note] = reply_to.messages
    assert (note["response_type"], note["replace_original"]) == ("ephemeral", False)
    assert "U0STRANGER" in note["text"] and "not linked to an active approver" in note["text"]


def _wrong_secret(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, signed(body, secret="not-" + SECRET)


def _six_minutes_old(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, signed(body, timestamp=str(int(time.time()) - 360))


def _six_minutes_ahead(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, signed(body, timestamp=str(int(time.time()) + 360))


def _altered_body(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"approve_refund", b"reject_refund_"), signed(body)


def _no_headers(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {}


def _no_timestamp(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {"X-Slack-Signature": signed(body)["X-Slack-Signature"]}


def _no_signature(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {"X-Slack-Request-Timestamp": signed(body)["X-Slack-Request-Timestamp"]}


def _non_integer_timestamp(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, signed(body, timestamp="soon")


def _signature_of_another_scheme(body: bytes) -> tuple[bytes, dict[str, str]]:
    headers = signed(body)
    return body, {**headers, "X-Slack-Signature": headers["X-Slack-Signature"].replace("v0=", "v1=")}


@pytest.mark.parametrize("tamper", [
    _wrong_secret, _six_minutes_old, _six_minutes_ahead, _altered_body, _no_headers, _no_timestamp,
    _no_signature, _non_integer_timestamp, _signature_of_another_scheme,
])
def test_a_click_whose_signature_does_not_verify_is_refused_with_401_and_changes_nothing(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn,
    tamper: Callable[[bytes], tuple[bytes, dict[str, str]]],
) -> None:
    body, headers = tamper(form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url)))

    response = deliver(app, body, headers)

    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    nothing_changed(app, gateway)
    assert reply_to.attempts == 0


@pytest.mark.parametrize(("body", "named"), [
    (b"", "payload"),
    (b"hello", "payload"),
    (form("{not json"), "not JSON"),
    (form([1, 2]), "JSON object"),
    (form({"type": "no_such_thing"}), "type"),
    (form({"type": "block_actions", "actions": []}), "user.id"),
    (form({"type": "block_actions", "user": {"id": "U0MARIA\x00"}, "actions": []}), "user.id"),
    # Not Slack member ids by limits.SLACK_USER_ID_PATTERN, the rule the API and the CLI use too.
    (form({"type": "block_actions", "user": {"id": "B0BOT"}, "actions": []}), "user.id"),
    (form({"type": "block_actions", "user": {"id": "U1"}, "actions": []}), "user.id"),
    (form({"type": "block_actions", "user": {"id": "u0maria"}, "actions": []}), "user.id"),
    (form({"type": "block_actions", "user": {"id": "U0MARIA"}, "actions": "approve"}), "actions"),
    (form({"type": "block_actions", "user": {"id": "U0MARIA"},
           "actions": [{"action_id": "approve_refund", "value": "one"}]}), "value"),
    (form({"type": "block_actions", "user": {"id": "U0MARIA"},
           "actions": [{"action_id": "approve_refund", "value": "99999999999"}]}), "value"),
    (form({"type": "block_actions", "user": {"id": "U0MARIA"},
           "actions": [{"action_id": "approve_refund", "value": 1}]}), "value"),
])
def test_a_signed_body_that_is_not_a_slack_click_is_refused_with_400_and_changes_nothing(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn, body: bytes, named: str
) -> None:
    response = deliver(app, body, signed(body))

    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_payload"
    assert named in response.get_json()["message"]
    nothing_changed(app, gateway)
    assert reply_to.attempts == 0


def test_a_body_that_is_not_utf8_is_refused_with_401_as_it_cannot_be_signed(app: Flask, gateway: FakeGateway) -> None:
    response = deliver(app, b"payload=\xff", {"X-Slack-Request-Timestamp": str(int(time.time())),
                                             "X-Slack-Signature": "v0=" + "0" * 64})
    assert response.status_code == 401


@pytest.mark.parametrize("payload", [
    {"type": "view_closed", "user": {"id": "U0MARIA"}},
    {"type": "block_actions", "user": {"id": "U0MARIA"}, "actions": [{"action_id": "reject_reason", "value": "x"}]},
])
def test_other_slack_interactions_are_acknowledged_and_ignored(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn, payload: dict[str, Any]
) -> None:
    body = form({**payload, "response_url": reply_to.webhook_url})
    response = deliver(app, body, signed(body))
    assert (response.status_code, response.data) == (200, b"")
    nothing_changed(app, gateway)
    assert reply_to.attempts == 0


def test_without_a_signing_secret_the_endpoint_answers_503(build: Callable[..., Flask]) -> None:
    app = build(slack_signing_secret=None)
    body = form({"type": "block_actions"})
    response = deliver(app, body, signed(body))
    assert response.status_code == 503
    assert response.get_json()["error"] == "slack_not_configured"


def test_a_response_url_on_another_server_is_never_called(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with SlackStandIn(path=REPLY_PATH) as elsewhere:
        url = elsewhere.webhook_url
        body = form(click(app, "approve_refund", pending_id, maria, response_url=url))

        with caplog.at_level(logging.INFO):
            response = deliver(app, body, signed(body))

        assert response.status_code == 200
        assert elsewhere.attempts == 0
    assert reply_to.attempts == 0
    assert len(gateway.refunds) == 1  # the click was Slack's own: the decision stands, only the reply is dropped
    assert "not under SLACK_RESPONSE_URL_PREFIX" in caplog.text
    assert url not in caplog.text


@pytest.mark.parametrize("slash", ["/", ""])
def test_a_look_alike_host_does_not_pass_for_the_allowed_prefix(
    build: Callable[..., Flask], reply_to: SlackStandIn, intake_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture, slash: str,
) -> None:
    app = build(slack_response_url_prefix=f"http://127.0.0.1:{reply_to.port}{slash}")
    add_approver(app.extensions["refund_service"].db, "maria", utcnow(), slack_user_id="U0MARIA")
    queued = app.test_client().post("/refund-request", json={"charge_id": "ch_big"}, headers=intake_headers)
    look_alike = f"http://127.0.0.1:{reply_to.port}.example.net{REPLY_PATH}"
    body = form(click(app, "reject_refund", queued.get_json()["pending_id"], "U0MARIA", response_url=look_alike))

    deliver(app, body, signed(body))

    assert "not under SLACK_RESPONSE_URL_PREFIX" in caplog.text
    assert [p.status for p in rows(app, pending_refunds)] == ["rejected"]


def test_an_approver_over_their_limit_is_told_privately_and_the_buttons_stay_for_the_others(
    app: Flask, pending_id: int, gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    add_approver(app.extensions["refund_service"].db, "li", utcnow(), limits=[Money(5000, "usd")], slack_user_id="U0LI")
    body = form(click(app, "approve_refund", pending_id, "U0LI", response_url=reply_to.webhook_url))

    deliver(app, body, signed(body))

    nothing_changed(app, gateway)
    [note] = reply_to.messages
    assert (note["response_type"], note["replace_original"]) == ("ephemeral", False)
    assert "over_approval_limit" in note["text"] and "li's approval limit" in note["text"]


def test_a_click_on_a_refund_already_decided_replaces_the_message_with_who_decided_it(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))
    deliver(app, body, signed(body))
    again = form(click(app, "reject_refund", pending_id, maria, response_url=reply_to.webhook_url, reason="late"))

    deliver(app, again, signed(again))

    assert len(gateway.refunds) == 1
    first, second = reply_to.messages
    assert first["text"].startswith("Approved by maria")
    assert second["replace_original"] is True
    assert f"Pending refund {pending_id} is already approved (by maria)" in second["text"]


def test_under_the_two_person_rule_a_click_records_the_approval_and_asks_for_a_second(
    build: Callable[..., Flask], gateway: FakeGateway, reply_to: SlackStandIn, intake_headers: dict[str, str]
) -> None:
    app = build(two_person_threshold=10000)
    add_approver(app.extensions["refund_service"].db, "maria", utcnow(), slack_user_id="U0MARIA")
    queued = app.test_client().post("/refund-request", json={"charge_id": "ch_big", "amount": 12000},
                                    headers=intake_headers)
    body = form(click(app, "approve_refund", queued.get_json()["pending_id"], "U0MARIA",
                      response_url=reply_to.webhook_url))

    deliver(app, body, signed(body))

    assert gateway.calls == []
    [reply] = reply_to.messages
    assert reply["text"] == f"maria's approval recorded at {AT}; a second approver is needed"
    run_worker(app)
    assert "needs_second_approval" in app.extensions["refund_worker"].notifier.kinds()


def test_a_click_while_stripe_is_down_says_the_refund_is_being_retried(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    gateway.fail_next = [StripeUnavailable("Stripe answered 503")]
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))

    deliver(app, body, signed(body))

    assert [r.status for r in rows(app, refund_requests)] == ["executing"]
    assert reply_to.messages[0]["text"].startswith(f"Approved by maria at {AT}: Stripe has not confirmed")


def test_slack_failing_to_take_the_reply_is_logged_and_the_decision_stands(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply_to.set_down(404)
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))
    with caplog.at_level(logging.WARNING):
        assert deliver(app, body, signed(body)).status_code == 200
    assert len(gateway.refunds) == 1
    assert "slack response_url answered 404" in caplog.text


def test_nothing_logged_names_the_response_url_or_the_signing_secret(
    app: Flask, pending_id: int, maria: str, reply_to: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    reply_to.fail_next(1, 500)  # so the failure is logged too
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))
    with caplog.at_level(logging.DEBUG):
        deliver(app, body, signed(body))
        stranger = form(click(app, "approve_refund", pending_id, "U0NOBODY", response_url=reply_to.webhook_url))
        deliver(app, stranger, signed(stranger))
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("standins"))
    assert "answered 500" in ours  # the log was captured
    assert REPLY_PATH not in ours
    assert SECRET not in ours


def test_a_click_that_stripe_refuses_says_so_with_stripes_code(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    gateway.charges["ch_big"].amount_refunded = 19000  # refunded elsewhere meanwhile
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))

    deliver(app, body, signed(body))

    assert gateway.refunds == []
    [reply] = reply_to.messages
    assert reply["replace_original"] is True
    assert reply["text"].startswith(f"Approved by maria at {AT}, but Stripe refused the refund:")
    assert reply["text"].endswith("(`amount_too_large`)")


def test_an_approver_clicking_approve_on_a_refund_they_asked_for_by_email_is_refused_privately(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    add_approver(app.extensions["refund_service"].db, "li", utcnow(), slack_user_id="U0LI", emails=["li@example.com"])
    asked = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000,
                                                  "requested_by": "Li@Example.com"}, headers=intake_headers)
    body = form(click(app, "approve_refund", asked.get_json()["pending_id"], "U0LI",
                      response_url=reply_to.webhook_url))

    deliver(app, body, signed(body))

    nothing_changed(app, gateway)
    [note] = reply_to.messages
    assert note["response_type"] == "ephemeral"
    assert "self_approval" in note["text"]


def click_rows(app: Flask) -> list[Any]:
    return [m for m in rows(app, outbox) if m.kind == "slack_click"]


def test_a_click_recorded_before_the_process_died_is_decided_once_by_the_next_processs_worker(
    build: Callable[..., Flask], app: Flask, pending_id: int, maria: str, gateway: FakeGateway,
    reply_to: SlackStandIn,
) -> None:
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))

    response = app.test_client().post("/slack/interactions", data=body,
                                      headers={**signed(body), "Content-Type": "application/x-www-form-urlencoded"})

    # Slack has its answer and the click is in the database, undecided: the process that answered dies now,
    # before its worker ran.
    assert (response.status_code, response.data) == (200, b"")
    [recorded] = click_rows(app)
    assert recorded.delivered_at is None
    nothing_changed(app, gateway)
    app.extensions["refund_service"].db.dispose()

    restarted = build()
    restarted.extensions["refund_worker"].run_once()

    [refund] = gateway.refunds
    assert refund.amount == 12000
    [pending] = rows(restarted, pending_refunds)
    assert (pending.status, pending.decided_by) == ("approved", "maria")
    assert [(a.approver, a.channel) for a in rows(restarted, approvals)] == [("maria", "slack")]
    [reply] = reply_to.messages
    assert reply["text"] == f"Approved by maria at {AT}: refund {refund.refund_id} executed"
    [done] = click_rows(restarted)
    assert done.delivered_at is not None
    assert REPLY_PATH not in done.payload  # the response_url is not kept once the click is done


def test_a_click_whose_worker_died_after_deciding_is_not_decided_again_and_the_reply_says_what_happened(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn
) -> None:
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))
    deliver(app, body, signed(body))
    [refund] = gateway.refunds
    # The row as it stood when a worker died after the deciding transaction, before marking the click done.
    [row] = click_rows(app)
    with app.extensions["refund_service"].db.transaction() as conn:
        conn.execute(update(outbox).where(outbox.c.id == row.id).values(
            delivered_at=None, claimed_until=None,
            payload=json.dumps({**json.loads(row.payload), "response_url": reply_to.webhook_url})))

    assert run_worker(app) == 1

    assert len(gateway.refunds) == 1
    assert [(a.approver, a.channel) for a in rows(app, approvals)] == [("maria", "slack")]
    assert [a.actor for a in rows(app, audit_log) if a.action == "approved"] == ["maria"]
    first, second = reply_to.messages
    assert first["text"] == second["text"] == f"Approved by maria at {AT}: refund {refund.refund_id} executed"
    assert second["replace_original"] is True


def test_a_click_whose_work_fails_after_deciding_is_logged_kept_and_answered_later_without_a_second_decision(
    app: Flask, pending_id: int, maria: str, gateway: FakeGateway, reply_to: SlackStandIn, clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not a Stripe error the service knows: the worker stops in the middle, after the approval committed.
    gateway.fail_next = [RuntimeError("the worker stopped here")]  # type: ignore[list-item]
    body = form(click(app, "approve_refund", pending_id, maria, response_url=reply_to.webhook_url))

    with caplog.at_level(logging.ERROR):
        assert deliver(app, body, signed(body)).status_code == 200

    assert "slack click" in caplog.text and "failed" in caplog.text
    assert gateway.refunds == []
    [note] = reply_to.messages
    assert (note["response_type"], note["replace_original"]) == ("ephemeral", False)
    assert "kept and will be tried again" in note["text"]
    [row] = click_rows(app)
    assert row.delivered_at is None

    clock.advance(timedelta(minutes=5))
    run_worker(app)

    assert len(gateway.refunds) == 1
    assert [(a.approver, a.channel) for a in rows(app, approvals)] == [("maria", "slack")]
    assert [p.status for p in rows(app, pending_refunds)] == ["approved"]
    _, answer = reply_to.messages
    assert answer["replace_original"] is True
    assert answer["text"].startswith("Approved by maria at ")
    assert "Stripe has not confirmed the refund yet" in answer["text"]  # true when the click was answered
    assert [c.delivered_at is not None for c in click_rows(app)] == [True]


def test_the_in_process_worker_decides_a_click_at_once_rather_than_at_its_next_poll(
    build: Callable[..., Flask], gateway: FakeGateway, notifier: FakeNotifier, reply_to: SlackStandIn,
    intake_headers: dict[str, str],
) -> None:
    app = build(worker_poll_seconds=300.0)
    add_approver(app.extensions["refund_service"].db, "maria", utcnow(), slack_user_id="U0MARIA")
    worker = app.extensions["refund_worker"]
    worker.start_thread()
    try:
        queued = app.test_client().post("/refund-request", json={"charge_id": "ch_big", "amount": 12000},
                                        headers=intake_headers)
        # Once the worker posted "needs approval", it has gone idle for 300 s.
        worker.wake()
        wait_until(lambda: "needs_approval" in notifier.kinds(), timeout=10, what="the needs-approval message")
        message = build_message(*next((k, f) for k, f in notifier.sent if k == "needs_approval"))
        payload = {"type": "block_actions", "user": {"id": "U0MARIA"}, "response_url": reply_to.webhook_url,
                   "message": {"blocks": message["blocks"]},
                   "actions": [{"action_id": "approve_refund", "value": str(queued.get_json()["pending_id"])}]}
        body = form(payload)
        app.test_client().post("/slack/interactions", data=body,
                               headers={**signed(body), "Content-Type": "application/x-www-form-urlencoded"})
        wait_until(lambda: bool(reply_to.messages), timeout=10, what="the reply to the click")
    finally:
        worker.stop()
    assert len(gateway.refunds) == 1
    assert reply_to.messages[0]["text"].startswith("Approved by maria at ")
