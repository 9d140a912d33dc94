"""What Slack receives: text from people cannot format, and every message fits Slack's limits.

Messages go through the real notifier to the Slack stand-in, which refuses what Slack refuses;
`tests.slack_render` models what Slack would make of the text that arrives.
"""

from __future__ import annotations

from typing import Any

import pytest

from refunds.notifier import TITLES, SlackNotifier
from standins.slack_webhook import SlackStandIn
from tests.slack_render import formatting, text_objects, unescape

FORGED_PRODUCT = "kettle\n\n*Amount*\n1.00 USD\n*Approved by* CFO"
HOSTILE = [
    FORGED_PRODUCT,
    "<!channel> <!here> <@U0BOSS> <#C0GENERAL> <https://evil.example|click here> <!date^1392734382^{date}|x>",
    "```\ncode\n``` `x` ~strike~ _italic_ *bold* ~_*`mixed`*_~",
    "> quoted\n>> more\n&gt; entity",
    "&lt;!channel&gt; &amp; <b>",
    "line\r\nbreak\u2028sep\u2029para\x0bvt\x85nel\ttab",
    "@channel @here https://evil.example ana@example.com",
]
# Every value in a message's facts that people (or Stripe) wrote.
USER_KEYS = ["charge_id", "reason", "product", "customer_email", "ticket_id", "requested_by", "note", "actor",
             "refund_id", "error_code", "error_message", "policy_explanation"]
LINK = "https://refunds.example/approval-links/tok"


def facts_with(value: str) -> dict[str, Any]:
    return {"request_id": 7, "pending_id": 3, "amount": 20000, "currency": "usd", **dict.fromkeys(USER_KEYS, value)}


def posted(slack: SlackStandIn, kind: str, facts: dict[str, Any], approver: str = "maria") -> dict[str, Any]:
    """The message as the stand-in received it from the real notifier."""
    notifier = SlackNotifier(slack.webhook_url, base_url="https://refunds.example",
                             approval_links=lambda pending_id, amount, currency: [(approver, LINK)])
    notifier.send(kind, facts)
    assert slack.refusals == []
    return slack.messages[-1]


@pytest.mark.parametrize("kind", [*TITLES, "something_new"])
def test_no_user_value_makes_a_bold_label_a_link_a_mention_or_a_new_line(slack: SlackStandIn, kind: str) -> None:
    plain = formatting(posted(slack, kind, facts_with("plain words"), approver="maria"))
    for value in HOSTILE:
        hostile = posted(slack, kind, facts_with(value), approver="_maria_")
        assert formatting(hostile) == plain, value
        assert all("\n" not in obj["text"] for obj in text_objects(hostile) if obj["type"] == "plain_text")


def test_a_forged_product_shows_as_typed_on_one_line_beside_our_bold_label(slack: SlackStandIn) -> None:
    message = posted(slack, "approved", {**facts_with("x"), "product": FORGED_PRODUCT})

    fields = [f for b in message["blocks"] if b["type"] == "section" for f in b.get("fields", [])]
    labels = [f["text"] for f in fields if f["type"] == "mrkdwn"]
    assert labels.count("*Amount*") == 1 and "*Approved by*" not in labels
    product = fields[fields.index({"type": "mrkdwn", "text": "*Product*", "verbatim": True}) + 1]
    assert product["type"] == "plain_text"
    assert product["text"] == "kettle *Amount* 1.00 USD *Approved by* CFO"
    amount = fields[fields.index({"type": "mrkdwn", "text": "*Amount*", "verbatim": True}) + 1]
    assert amount["text"] == "200.00 USD"


def test_mentions_and_links_from_people_arrive_escaped_and_are_shown_as_typed(slack: SlackStandIn) -> None:
    message = posted(slack, "rejected", {**facts_with("x"), "note": "<!channel> <https://evil|click> & more"})

    [context] = [b for b in message["blocks"] if b["type"] == "context"]
    note = context["elements"][-1]
    assert note["type"] == "plain_text"
    assert note["text"] == "&lt;!channel&gt; &lt;https://evil|click&gt; &amp; more"
    assert unescape(note["text"]) == "<!channel> <https://evil|click> & more"


@pytest.mark.parametrize("kind", [*TITLES, "something_new"])
def test_every_message_fits_slacks_limits_however_long_its_values_and_however_many_approvers(
    slack: SlackStandIn, kind: str
) -> None:
    notifier = SlackNotifier(slack.webhook_url, base_url="https://refunds.example",
                             approval_links=lambda pending_id, amount, currency: [
                                 (f"approver-{i}-{'x' * 90}", f"{LINK}/{'t' * 200}{i}") for i in range(500)])
    notifier.send(kind, facts_with("<&>*_\n" * 3000))

    assert slack.refusals == []
    [message] = slack.messages
    assert len(message["blocks"]) <= 50
    shown = "".join(obj["text"] for obj in text_objects(message))
    assert "…" in shown  # what did not fit says so


def test_bidirectional_controls_in_people_text_cannot_reorder_what_managers_read(slack: SlackStandIn) -> None:
    # "\u202e" draws what follows right to left: "kettle \u202eDSU 00.1" would read "kettle 1.00 USD".
    product = "kettle \u202eDSU 00.1\u202c\u2066x\u2069"
    message = posted(slack, "needs_approval", {**facts_with("x"), "product": product})

    texts = [obj["text"] for obj in text_objects(message)]
    assert any("kettle DSU 00.1x" in text for text in texts)
    assert not any(ch in text for text in texts for ch in "\u202e\u202c\u2066\u2069")
