"""Slack notifications: Block Kit messages built from outbox facts, and their delivery.

Building is pure; delivery raises `DeliveryFailed` so the worker can retry later, or
`MessageRefused` when Slack refuses the message itself as invalid (HTTP 400: sending it again
cannot help). A webhook Slack no longer knows or allows (403, 404, 410) is a configuration fault,
not a bad message: it is `DeliveryFailed` too, so nothing is lost while an operator fixes it.
When no webhook URL is configured, messages are only logged (their text line, never a link).

Messages that wait for a decision (needs approval, needs a second approval, escalated) carry a
"Reason for rejection" input, Approve and Reject buttons (handled by `POST /slack/interactions`),
one signed approval link per approver when links are configured, and the curl commands.
Links are made at delivery time and never stored in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from . import slack_text
from .money import Money

log = logging.getLogger(__name__)

# slack_sdk logs the URL it posts to (at INFO when it retries, at DEBUG always); webhook and
# response URLs are credentials, so its client gets a logger that only passes warnings on.
quiet_client_log = logging.getLogger(f"{__name__}.client")
quiet_client_log.setLevel(logging.WARNING)

TITLES = {
    "auto_approved": ":white_check_mark: Refund auto-approved",
    "needs_approval": ":hourglass_flowing_sand: Refund needs approval",
    "needs_second_approval": ":hourglass_flowing_sand: Refund needs a second approval",
    "escalated": ":rotating_light: Refund still waiting for approval",
    "approved": ":white_check_mark: Refund approved",
    "rejected": ":no_entry_sign: Refund rejected",
    "expired": ":zzz: Refund expired without a decision",
    "failed": ":x: Refund failed",
    "circuit_breaker": ":octagonal_sign: Circuit breaker tripped: auto-approvals held",
}
DECISION_KINDS = frozenset({"needs_approval", "needs_second_approval", "escalated"})
# Slack's answers about the webhook itself (invalid_token, action_prohibited, no_service,
# channel_not_found, channel_is_archived, ...), whatever the message.
WEBHOOK_FAULTS = frozenset({401, 403, 404, 410})
DEFAULT_ESCALATION_MENTION = "<!here>"

# Action and block ids shared with `slack_interactions`, which reads clicks and replaces messages.
APPROVE_ACTION = "approve_refund"
REJECT_ACTION = "reject_refund"
REASON_ACTION = "reject_reason"
REASON_BLOCK = "reject_reason"
DECISION_BLOCK = "refund_decision"
LINKS_BLOCK_PREFIX = "approval_links"
HOW_TO_BLOCK = "how_to_approve"
MENTION_BLOCK = "escalation"
# What a decided message no longer needs: it keeps its facts and gains the outcome.
INTERACTIVE_BLOCK_IDS = (REASON_BLOCK, DECISION_BLOCK, LINKS_BLOCK_PREFIX, HOW_TO_BLOCK, MENTION_BLOCK)

ApprovalLink = tuple[str, str]
"""(approver name, signed URL for that approver)."""

ApprovalLinkSource = Callable[[int, int, str], Sequence[ApprovalLink]]
"""Given (pending_id, amount, currency): the approvers who may decide it, each with their link."""


class DeliveryFailed(Exception):
    """The message was not delivered; the same message may be sent again later.

    `retry_after` is how long Slack asked us to wait (its `Retry-After` on a 429), if it said.
    `throttled` is True for Slack's rate limit (429): back-pressure to wait out, not a fault.
    """

    def __init__(self, reason: str, *, retry_after: timedelta | None = None, throttled: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.throttled = throttled


class MessageRefused(Exception):
    """Slack refused this message as invalid (HTTP 400: invalid_blocks, invalid_payload, too_long, ...):
    it never will take it."""


class Notifier(Protocol):
    def send(self, kind: str, facts: dict[str, Any]) -> None: ...


def build_message(
    kind: str,
    facts: dict[str, Any],
    *,
    base_url: str | None = None,
    approval_links: Sequence[ApprovalLink] = (),
    escalation_mention: str = DEFAULT_ESCALATION_MENTION,
    escalate_after: timedelta | None = None,
) -> dict[str, Any]:
    """A Slack incoming-webhook body (`text` fallback plus `blocks`) for one refund event.

    Pure: everything it shows comes from its arguments. `approval_links` are shown only on
    messages that wait for a decision (minus the approver who already approved, on a
    `needs_second_approval`); the `text` line never contains a link. An `escalated` message
    starts with `escalation_mention` and says how long the refund has waited (the facts'
    `waited_seconds` when present, else "more than `escalate_after`").

    Every value in `facts` (and every approver name) is shown so that it cannot format: in a
    plain_text object, or in mrkdwn through `slack_text.literal`; our labels stay bold.
    The message always fits Slack's limits (text lengths, fields, 50 blocks): long values end in "…".
    """
    if kind == "circuit_breaker":
        return _breaker_message(facts)
    title = TITLES.get(kind, f"Refund update: {kind}")
    money = Money(int(facts["amount"]), str(facts["currency"]))
    summary = (f"{title}: {money} on {slack_text.literal(facts['charge_id'], 300)} "
               f"(request #{slack_text.literal(facts['request_id'], 30)})")
    blocks: list[dict[str, Any]] = []
    if kind == "escalated":
        waited = _waited(facts, escalate_after)
        summary = f"{escalation_mention} {summary}, waiting {waited}"
        blocks.append(_section(slack_text.fit(f"{escalation_mention} This refund has waited {waited} for a decision.",
                                              slack_text.SECTION_TEXT), block_id=MENTION_BLOCK))
    blocks += [
        {"type": "header", "text": {"type": "plain_text", "text": slack_text.fit(title.split(" ", 1)[1],
                                                                               slack_text.HEADER_TEXT), "emoji": True}},
        *_field_sections(_fields(facts, money)),
    ]
    if kind in DECISION_KINDS:
        if facts.get("policy_explanation"):
            rule = f" (rule {facts['policy_rule']})" if facts.get("policy_rule") else ""
            blocks.append(_context(_plain(f"{facts['policy_explanation']}{rule}")))
        if kind == "needs_second_approval":
            actor = slack_text.plain(facts.get("actor") or "someone", 200)
            blocks.append(_context(_plain(f"Approved by {actor}; a second, different approver is needed.",
                                          escaped=True)))
        links_at = len(blocks)
        if facts.get("pending_id") is not None:
            blocks += _decision_blocks(int(facts["pending_id"]), money, str(facts["charge_id"]))
            links_at = len(blocks)
        blocks.append(_section(_how_to_approve(facts, base_url), block_id=HOW_TO_BLOCK))
        if facts.get("pending_id") is not None:
            already = str(facts.get("actor") or "") if kind == "needs_second_approval" else ""
            room = slack_text.MAX_BLOCKS - len(blocks)
            blocks[links_at:links_at] = _link_sections([(n, u) for n, u in approval_links if n != already], room)
    elif kind == "rejected" and facts.get("note"):
        blocks.append(_context(_mrkdwn("*Reason for rejection:*"), _plain(facts["note"])))
    elif kind == "expired":
        blocks.append(_context(_mrkdwn("Nobody decided in time, so it expired; nothing was refunded. "
                                       "Ask for it again if it is still due.")))
    elif kind == "failed":
        blocks.append(_context(_mrkdwn(f"Stripe said `{slack_text.literal(facts.get('error_code'), 200)}`:"),
                               _plain(facts.get("error_message"))))
    return {"text": slack_text.fit(summary, slack_text.FALLBACK_TEXT), "blocks": blocks[: slack_text.MAX_BLOCKS]}


def _breaker_message(facts: dict[str, Any]) -> dict[str, Any]:
    """Sent once per trip of the store-wide circuit breaker: every refund now waits for people, until
    auto-approvals in the last hour and day are back under the policy's limits."""
    title = TITLES["circuit_breaker"]
    version = slack_text.literal(str(facts.get("policy_version") or "")[:12], 20)
    blocks = [{"type": "header", "text": {"type": "plain_text", "emoji": True,
                                          "text": slack_text.fit(title.split(" ", 1)[1], slack_text.HEADER_TEXT)}},
              _section(f"Every refund now waits for approval until auto-approvals in the last hour and day are back "
                       f"under the policy's limits (policy {version}). The first one held:"),
              *_field_sections(_fields(facts, Money(int(facts["amount"]), str(facts["currency"])))),
              _context(_plain(facts.get("policy_explanation")))]
    summary = f"{title}: {slack_text.literal(facts.get('policy_explanation'), 1000)}"
    return {"text": slack_text.fit(summary, slack_text.FALLBACK_TEXT), "blocks": blocks}


def _fields(facts: dict[str, Any], money: Money) -> list[tuple[str, str]]:
    """(label, value) pairs; values are raw, `_field_sections` makes them safe."""
    fields = [
        ("Amount", str(money)),
        ("Charge", str(facts["charge_id"])),
        ("Reason", str(facts.get("reason") or "")),
        ("Request", f"#{facts['request_id']}"),
    ]
    for label, key in (("Customer", "customer_email"), ("Product", "product"), ("Ticket", "ticket_id"),
                       ("Requested by", "requested_by"), ("Refund", "refund_id"), ("By", "actor")):
        if facts.get(key):
            fields.append((label, str(facts[key])))
    return fields


def _field_sections(fields: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Sections of two-column fields: our label in bold mrkdwn, the value beside it as plain_text."""
    texts: list[dict[str, Any]] = []
    for label, value in fields:
        texts += [_mrkdwn(f"*{label}*"), _plain(value, limit=slack_text.FIELD_TEXT)]
    size = slack_text.MAX_FIELDS
    return [{"type": "section", "fields": texts[i:i + size]} for i in range(0, len(texts), size)]


def _decision_blocks(pending_id: int, money: Money, charge_id: str) -> list[dict[str, Any]]:
    """The optional rejection reason (it arrives in the click's `state.values`) and the two buttons."""
    value = str(pending_id)
    before, after = f"{money} goes back to the customer on `", "` now. This cannot be undone."
    confirm = before + slack_text.literal(charge_id, slack_text.CONFIRM_TEXT - len(before) - len(after)) + after
    return [
        {
            "type": "input",
            "block_id": REASON_BLOCK,
            "optional": True,
            "label": {"type": "plain_text", "text": "Reason for rejection"},
            "element": {"type": "plain_text_input", "action_id": REASON_ACTION,
                        "placeholder": {"type": "plain_text", "text": "Shown with the rejection"}},
        },
        {
            "type": "actions",
            "block_id": DECISION_BLOCK,
            "elements": [
                {
                    "type": "button", "action_id": APPROVE_ACTION, "value": value, "style": "primary",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Approve this refund?"},
                        "text": {"type": "mrkdwn", "text": confirm, "verbatim": True},
                        "confirm": {"type": "plain_text", "text": "Approve and refund"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                },
                {
                    "type": "button", "action_id": REJECT_ACTION, "value": value, "style": "danger",
                    "text": {"type": "plain_text", "text": "Reject"},
                },
            ],
        },
    ]


def _link_sections(links: Sequence[ApprovalLink], room: int) -> list[dict[str, Any]]:
    """One line per approver, over as many sections as Slack's length limit needs, at most `room` of them.

    Links that do not fit in `room` sections are left out, and the last section says how many.
    """
    if not links or room < 1:
        return []
    lines = [f"<{url}|Approve or reject as {slack_text.literal(name, 200)}>" for name, url in links]
    chunks: list[list[str]] = [["*One-click links* (each works once, for the person named):"]]
    for line in lines:
        if len("\n".join([*chunks[-1], line])) > slack_text.SECTION_TEXT:
            chunks.append([line])
        else:
            chunks[-1].append(line)
    if len(chunks) > room:
        chunks = chunks[:room]
        shown = sum(len(chunk) for chunk in chunks) - 1  # the first line is the heading

        def more() -> str:
            return f"…and {len(lines) - shown} more approvers: use the buttons or the curl command."

        while len("\n".join([*chunks[-1], more()])) > slack_text.SECTION_TEXT:
            chunks[-1].pop()
            shown -= 1
        chunks[-1].append(more())
    return [_section("\n".join(chunk), block_id=f"{LINKS_BLOCK_PREFIX}_{i}") for i, chunk in enumerate(chunks)]


def _waited(facts: dict[str, Any], escalate_after: timedelta | None) -> str:
    seconds = facts.get("waited_seconds")
    if isinstance(seconds, int | float) and seconds >= 0:
        return duration(timedelta(seconds=seconds))
    if escalate_after is not None:
        return f"more than {duration(escalate_after)}"
    return "longer than expected"


def duration(span: timedelta) -> str:
    """For people: '3 days 4 h', '4 h 30 min', '12 min'."""
    minutes = int(span.total_seconds()) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} day{'s' if days != 1 else ''}" if days else "", f"{hours} h" if hours else "",
             f"{minutes} min" if minutes and not days else ""]
    return " ".join(p for p in parts if p) or "less than a minute"


def _section(text: str, *, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": _mrkdwn(text)}
    if block_id is not None:
        block["block_id"] = block_id
    return block


def _mrkdwn(text: str) -> dict[str, Any]:
    """Our own mrkdwn (values in it already made safe); verbatim: Slack links and mentions nothing by itself."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _plain(value: object, *, limit: int = slack_text.TEXT_OBJECT, escaped: bool = False) -> dict[str, Any]:
    """A plain_text object: it never formats. `escaped` when `value` is built from `slack_text.plain` parts."""
    text = slack_text.fit(str(value), limit) if escaped else slack_text.plain(value, limit)
    return {"type": "plain_text", "text": text, "emoji": False}


def _context(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "context", "elements": list(elements[: slack_text.MAX_CONTEXT_ELEMENTS])}


def _how_to_approve(facts: dict[str, Any], base_url: str | None) -> str:
    base = (base_url or "http://<refund-service>").rstrip("/")
    pending_id = facts.get("pending_id")
    return (
        "*To approve* (pending id " + str(pending_id) + "):\n"
        f"```curl -X POST {base}/approve-refund -H 'Authorization: Bearer $APPROVER_TOKEN' "
        f"-H 'Content-Type: application/json' -d '{{\"pending_id\": {pending_id}}}'```\n"
        f"To reject, POST the same body with a \"note\" to `{base}/reject-refund`."
    )


class _MessageMaker:
    """What both notifiers share: the message options and the approval links, made when sending."""

    def __init__(self, *, base_url: str | None, approval_links: ApprovalLinkSource | None,
                 escalation_mention: str, escalate_after: timedelta | None) -> None:
        self._base_url = base_url
        self._approval_links = approval_links
        self._escalation_mention = escalation_mention
        self._escalate_after = escalate_after

    def message(self, kind: str, facts: dict[str, Any]) -> dict[str, Any]:
        """The message for `kind`; raises DeliveryFailed when its approval links cannot be made now."""
        return build_message(kind, facts, base_url=self._base_url, approval_links=self._links(kind, facts),
                             escalation_mention=self._escalation_mention, escalate_after=self._escalate_after)

    def _links(self, kind: str, facts: dict[str, Any]) -> Sequence[ApprovalLink]:
        if self._approval_links is None or kind not in DECISION_KINDS or facts.get("pending_id") is None:
            return ()
        try:
            return self._approval_links(int(facts["pending_id"]), int(facts["amount"]), str(facts["currency"]))
        except Exception as exc:  # noqa: BLE001 - the database may be down; the worker retries the message
            raise DeliveryFailed(f"approval links not made: {type(exc).__name__}") from None


class SlackNotifier(_MessageMaker):
    """Posts to a Slack incoming webhook; raises `MessageRefused` on a 400, `DeliveryFailed` on any
    other non-200 answer or network error."""

    def __init__(self, webhook_url: str, *, base_url: str | None = None, timeout_seconds: int = 10,
                 approval_links: ApprovalLinkSource | None = None,
                 escalation_mention: str = DEFAULT_ESCALATION_MENTION,
                 escalate_after: timedelta | None = None) -> None:
        super().__init__(base_url=base_url, approval_links=approval_links,
                         escalation_mention=escalation_mention, escalate_after=escalate_after)
        # Imported here, not at the top: slack_sdk costs each worker ~2 MB, and a service without Slack never needs it.
        from slack_sdk.webhook import WebhookClient

        self._client = WebhookClient(webhook_url, timeout=timeout_seconds, logger=quiet_client_log)

    def send(self, kind: str, facts: dict[str, Any]) -> None:
        """Post the message; raises `DeliveryFailed` (try again later) or `MessageRefused` (never)."""
        self.post(self.message(kind, facts))

    def post(self, body: dict[str, Any]) -> None:
        """Post a whole body (`text` and `blocks`, e.g. a digest); raises as `send`."""
        try:
            response = self._client.send(text=body["text"], blocks=body["blocks"])
        except Exception as exc:  # noqa: BLE001 - urllib raises many types; all mean "not delivered"
            raise DeliveryFailed(f"Slack unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 200:
            return
        said = f"Slack answered {status}: {str(response.body)[:200]}"
        if status == 400:
            raise MessageRefused(said)
        if status in WEBHOOK_FAULTS:
            # The webhook, not the message: every message would get the same answer. Keep them all
            # until an operator fixes SLACK_WEBHOOK_URL (its URL is a secret: never in the reason).
            raise DeliveryFailed(f"{said} (the webhook is revoked, removed or its channel archived: "
                                 "check SLACK_WEBHOOK_URL)")
        if status == 429:
            raise DeliveryFailed(said, retry_after=_retry_after(response.headers), throttled=True)
        raise DeliveryFailed(said)


def _retry_after(headers: dict[str, Any]) -> timedelta | None:
    """Slack's `Retry-After` (whole seconds) when it sent a usable one."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        seconds = int(str(value).strip())
    except ValueError:
        return None
    return timedelta(seconds=seconds) if 0 <= seconds <= 24 * 3600 else None


class LogNotifier(_MessageMaker):
    """Used when SLACK_WEBHOOK_URL is unset: the message's text line goes to the log, never an error.

    The whole message is still built (links included) so that it fails as it would in Slack,
    but only the text line, which never holds a link, is logged.
    """

    def __init__(self, *, base_url: str | None = None, approval_links: ApprovalLinkSource | None = None,
                 escalation_mention: str = DEFAULT_ESCALATION_MENTION,
                 escalate_after: timedelta | None = None) -> None:
        super().__init__(base_url=base_url, approval_links=approval_links,
                         escalation_mention=escalation_mention, escalate_after=escalate_after)

    def send(self, kind: str, facts: dict[str, Any]) -> None:
        log.info("notification (Slack not configured): %s", self.message(kind, facts)["text"])

    def post(self, body: dict[str, Any]) -> None:
        log.info("notification (Slack not configured): %s", body["text"])
