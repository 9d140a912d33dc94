"""Slack messages: their shape (pure), and links made at delivery, never stored or logged."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds import create_app
from refunds.approval_links import ApprovalLinks
from refunds.approvers import add as add_approver
from refunds.approvers import revoke
from refunds.money import Money
from refunds.notifier import TITLES, DeliveryFailed, LogNotifier, SlackNotifier, build_message
from refunds.service import utcnow
from refunds.tables import outbox
from standins.slack_webhook import SlackStandIn
from tests.conftest import make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway
from tests.test_refund_request import rows

FACTS = {"request_id": 7, "pending_id": 3, "charge_id": "ch_big", "amount": 20000, "currency": "usd",
         "reason": "requested_by_customer", "product": "kettle", "customer_email": "ana@example.com",
         "ticket_id": "T-9", "policy_explanation": "200.00 USD is above the 50.00 USD threshold."}
LINKS = [("maria", "https://refunds.example/approval-links/tok-maria"),
         ("li", "https://refunds.example/approval-links/tok-li")]
DECISION_KINDS = ["needs_approval", "needs_second_approval", "escalated"]
LINK_SECRET = "link-secret-for-tests-0123456789abcdef"


def blocks_of(message: dict[str, Any], block_type: str) -> list[dict[str, Any]]:
    return [b for b in message["blocks"] if b["type"] == block_type]


def all_text(message: dict[str, Any]) -> str:
    return json.dumps(message["blocks"])


@pytest.mark.parametrize("kind", DECISION_KINDS)
def test_a_message_waiting_for_a_decision_has_a_reason_box_and_two_buttons_carrying_the_pending_id(kind: str) -> None:
    message = build_message(kind, {**FACTS, "actor": "li"})

    [reason] = blocks_of(message, "input")
    assert reason["optional"] is True
    assert reason["label"]["text"] == "Reason for rejection"
    assert (reason["element"]["type"], reason["element"]["action_id"]) == ("plain_text_input", "reject_reason")
    [actions] = blocks_of(message, "actions")
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["style"], approve["value"]) == ("approve_refund", "primary", "3")
    assert (reject["action_id"], reject["style"], reject["value"]) == ("reject_refund", "danger", "3")
    assert "200.00 USD" in approve["confirm"]["text"]["text"]
    assert "confirm" not in reject


@pytest.mark.parametrize("kind", DECISION_KINDS)
def test_the_curl_instructions_stay_on_every_message_waiting_for_a_decision(kind: str) -> None:
    message = build_message(kind, FACTS, base_url="https://refunds.example")
    assert "curl -X POST https://refunds.example/approve-refund" in all_text(message)
    assert '\\"pending_id\\": 3' in all_text(message)


@pytest.mark.parametrize("kind", ["auto_approved", "approved", "rejected", "expired", "failed"])
def test_messages_about_a_decided_refund_have_no_buttons_links_or_reason_box(kind: str) -> None:
    message = build_message(kind, {**FACTS, "refund_id": "re_1", "note": "no", "error_code": "x"},
                            approval_links=LINKS)
    assert {b["type"] for b in message["blocks"]}.isdisjoint({"actions", "input"})
    assert "approval-links" not in all_text(message)


def test_links_appear_one_per_approver_only_when_given() -> None:
    without = build_message("needs_approval", FACTS)
    assert "approval-links" not in all_text(without)

    message = build_message("needs_approval", FACTS, approval_links=LINKS)
    lines = re.findall(r"<(https://[^|>]+)\|([^>]+)>", all_text(message))
    assert lines == [(url, f"Approve or reject as {name}") for name, url in LINKS]


@pytest.mark.parametrize("kind", [*DECISION_KINDS, "approved", "expired"])
def test_the_text_line_never_holds_a_link(kind: str) -> None:
    message = build_message(kind, FACTS, approval_links=LINKS, base_url="https://refunds.example")
    assert "http" not in message["text"]


@pytest.mark.parametrize("mention", ["<!here>", "<!subteam^S0123ABC>"])
def test_an_escalation_starts_with_the_mention_and_says_how_long_the_refund_waited(mention: str) -> None:
    message = build_message("escalated", FACTS, escalation_mention=mention, escalate_after=timedelta(hours=4))

    assert message["text"].startswith(f"{mention} ")
    assert "more than 4 h" in message["text"]
    first = message["blocks"][0]
    assert first["text"]["text"].startswith(f"{mention} This refund has waited more than 4 h")


def test_an_escalation_shows_the_exact_wait_when_the_facts_carry_it() -> None:
    message = build_message("escalated", {**FACTS, "waited_seconds": 5 * 3600 + 30 * 60},
                            escalate_after=timedelta(hours=4))
    assert "waiting 5 h 30 min" in message["text"]


def test_a_second_approval_request_names_the_first_approver_and_leaves_out_their_link() -> None:
    message = build_message("needs_second_approval", {**FACTS, "actor": "maria"}, approval_links=LINKS)

    assert "Approved by maria; a second, different approver is needed." in all_text(message)
    assert "as maria" not in all_text(message)
    assert "Approve or reject as li" in all_text(message)
    assert message["text"].startswith(TITLES["needs_second_approval"])


def test_an_expired_message_says_nothing_was_refunded() -> None:
    message = build_message("expired", FACTS)
    assert message["text"].startswith(TITLES["expired"])
    assert "nothing was refunded" in all_text(message)


def test_text_from_the_support_tool_cannot_mention_anyone_or_make_a_link() -> None:
    message = build_message("rejected", {**FACTS, "product": "<!channel> kettle", "note": "<https://evil|click>"})
    text = all_text(message)
    assert "<!channel>" not in text and "&lt;!channel&gt; kettle" in text
    assert "<https://evil" not in text


def test_many_approvers_links_are_split_to_fit_slacks_section_limit() -> None:
    links = [(f"approver-{i}", f"https://refunds.example/approval-links/{'x' * 150}{i}") for i in range(60)]
    message = build_message("needs_approval", FACTS, approval_links=links)
    sections = [b for b in message["blocks"] if str(b.get("block_id", "")).startswith("approval_links")]
    assert len(sections) > 1
    assert all(len(b["text"]["text"]) <= 3000 for b in sections)
    assert all_text(message).count("Approve or reject as approver-") == 60


@pytest.mark.parametrize("kind", [*TITLES, "something_new"])
def test_every_message_is_json_and_within_slacks_block_limits(kind: str) -> None:
    message = build_message(kind, {**FACTS, "actor": "maria", "refund_id": "re_1", "note": "n",
                                   "error_code": "declined", "error_message": "no"}, approval_links=LINKS)
    assert json.loads(json.dumps(message)) == message
    assert len(message["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 150 for b in message["blocks"] if b["type"] == "header")


def test_the_log_notifier_logs_only_the_text_line(caplog: pytest.LogCaptureFixture) -> None:
    notifier = LogNotifier(approval_links=lambda pending_id, amount, currency: LINKS)
    with caplog.at_level(logging.DEBUG):
        notifier.send("needs_approval", FACTS)
    assert "Refund needs approval: 200.00 USD on ch_big (request #7)" in caplog.text
    assert "approval-links" not in caplog.text


def test_links_that_cannot_be_made_now_mean_the_message_is_not_delivered_yet() -> None:
    def broken(pending_id: int, amount: int, currency: str) -> list[tuple[str, str]]:
        raise ConnectionError("database down")

    with pytest.raises(DeliveryFailed, match="approval links not made"):
        SlackNotifier("http://127.0.0.1:9/never", approval_links=broken).send("needs_approval", FACTS)


# -- wired in create_app: links for each approver who may decide, made when the message is sent ---------------


@pytest.fixture
def slack_app(database_url: str, gateway: FakeGateway, clock: FakeClock, slack: SlackStandIn) -> Iterator[Flask]:
    settings = make_settings(database_url, slack_webhook_url=slack.webhook_url, approval_link_secret=LINK_SECRET,
                             public_base_url="https://refunds.example", slack_escalation_mention="<!subteam^S42>",
                             slack_approval_links=True, two_person_threshold=50_000)
    app = create_app(settings, gateway=gateway, clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


def test_slack_gets_a_link_for_each_approver_who_may_decide_and_the_outbox_keeps_none(
    slack_app: Flask, slack: SlackStandIn, intake_headers: dict[str, str]
) -> None:
    db = slack_app.extensions["refund_service"].db
    add_approver(db, "maria", utcnow())
    add_approver(db, "li", utcnow(), limits=[Money(5_000, "usd")])  # 50.00: too little for this refund
    add_approver(db, "old", utcnow())
    revoke(db, "old", utcnow())
    client: FlaskClient = slack_app.test_client()
    queued = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    assert queued.status_code == 202

    run_worker(slack_app)

    [message] = slack.messages
    links = re.findall(r"<(https://refunds\.example/approval-links/[^|>]+)\|Approve or reject as ([^>]+)>",
                       json.dumps(message["blocks"]))
    assert [name for _, name in links] == ["maria"]
    claims = ApprovalLinks(LINK_SECRET, ttl_seconds=3600, base_url=None).read(links[0][0].rsplit("/", 1)[1])
    pending_id = queued.get_json()["pending_id"]
    assert (claims.pending_id, claims.approver, claims.amount, claims.currency) == (pending_id, "maria", 12000, "usd")
    assert all("approval-links" not in row.payload for row in rows(slack_app, outbox))


def test_slack_escalations_start_with_the_configured_mention(
    slack_app: Flask, slack: SlackStandIn, intake_headers: dict[str, str], clock: FakeClock
) -> None:
    slack_app.test_client().post("/refund-request", json={"charge_id": "ch_big", "amount": 12000},
                                 headers=intake_headers)
    run_worker(slack_app)
    clock.advance(timedelta(hours=5))
    run_worker(slack_app)

    needs_approval, escalation = slack.wait_for(2)
    assert needs_approval["text"].startswith(":hourglass")
    assert escalation["text"].startswith("<!subteam^S42> ")
    assert "waiting 5 h" in escalation["text"]  # the exact wait, from the request time
    assert [b["type"] for b in escalation["blocks"]].count("actions") == 1


def test_shared_messages_carry_no_links_unless_asked_and_never_under_the_two_person_rule(
    database_url: str, gateway: FakeGateway, clock: FakeClock, slack: SlackStandIn, intake_headers: dict[str, str]
) -> None:
    """Everyone in the channel sees every link, so anyone could act as any listed approver."""
    for extra, amount in (({}, 12_000), ({"slack_approval_links": True, "two_person_threshold": 10_000}, 12_000)):
        settings = make_settings(database_url, slack_webhook_url=slack.webhook_url, approval_link_secret=LINK_SECRET,
                                 public_base_url="https://refunds.example", **extra)
        app = create_app(settings, gateway=gateway, clock=clock)
        if not database_url.startswith("sqlite"):
            app.extensions["refund_service"].db.upgrade()
        add_approver(app.extensions["refund_service"].db, f"maria{len(slack.messages)}", utcnow())
        queued = app.test_client().post("/refund-request", json={"charge_id": "ch_big", "amount": amount},
                                        headers=intake_headers)
        assert queued.status_code == 202
        run_worker(app)
        assert "approval-links" not in json.dumps(slack.messages[-1])
        app.extensions["refund_service"].db.dispose()
