"""Slack notifications: Block Kit messages built from outbox facts, and their delivery.

Building is pure; delivery raises `DeliveryFailed` so the worker can retry later.
When no webhook URL is configured, messages are only logged.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from slack_sdk.webhook import WebhookClient

from .money import Money

log = logging.getLogger(__name__)

TITLES = {
    "auto_approved": ":white_check_mark: Refund auto-approved",
    "needs_approval": ":hourglass_flowing_sand: Refund needs approval",
    "approved": ":white_check_mark: Refund approved",
    "rejected": ":no_entry_sign: Refund rejected",
    "failed": ":x: Refund failed",
}


class DeliveryFailed(Exception):
    """The message was not delivered; the same message may be sent again later."""


class Notifier(Protocol):
    def send(self, kind: str, facts: dict[str, Any]) -> None: ...


def build_message(kind: str, facts: dict[str, Any], *, base_url: str | None = None) -> dict[str, Any]:
    """A Slack incoming-webhook body (`text` fallback plus `blocks`) for one refund event."""
    title = TITLES.get(kind, f"Refund update: {kind}")
    money = Money(int(facts["amount"]), str(facts["currency"]))
    fields = [
        ("Amount", str(money)),
        ("Charge", f"`{facts['charge_id']}`"),
        ("Reason", str(facts.get("reason") or "")),
        ("Request", f"#{facts['request_id']}"),
    ]
    for label, key in (("Customer", "customer_email"), ("Product", "product"), ("Ticket", "ticket_id"),
                       ("Refund", "refund_id"), ("By", "actor")):
        if facts.get(key):
            fields.append((label, str(facts[key])))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title.split(" ", 1)[1], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]},
    ]
    if kind == "needs_approval":
        blocks.append(_context(str(facts.get("policy_explanation") or "")))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _how_to_approve(facts, base_url)}})
    elif kind == "rejected" and facts.get("note"):
        blocks.append(_context(f"Reason for rejection: {facts['note']}"))
    elif kind == "failed":
        blocks.append(_context(f"Stripe said `{facts.get('error_code')}`: {facts.get('error_message')}"))
    text = f"{title}: {money} on {facts['charge_id']} (request #{facts['request_id']})"
    return {"text": text, "blocks": blocks}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text or " "}]}


def _how_to_approve(facts: dict[str, Any], base_url: str | None) -> str:
    base = (base_url or "http://<refund-service>").rstrip("/")
    pending_id = facts.get("pending_id")
    return (
        "*To approve* (pending id " + str(pending_id) + "):\n"
        f"```curl -X POST {base}/approve-refund -H 'Authorization: Bearer $APPROVER_TOKEN' "
        f"-H 'Content-Type: application/json' -d '{{\"pending_id\": {pending_id}}}'```\n"
        f"To reject, POST the same body with a \"note\" to `{base}/reject-refund`."
    )


class SlackNotifier:
    """Posts to a Slack incoming webhook; raises `DeliveryFailed` on any non-200 or network error."""

    def __init__(self, webhook_url: str, *, base_url: str | None = None, timeout_seconds: int = 10) -> None:
        self._client = WebhookClient(webhook_url, timeout=timeout_seconds)
        self._base_url = base_url

    def send(self, kind: str, facts: dict[str, Any]) -> None:
        body = build_message(kind, facts, base_url=self._base_url)
        try:
            response = self._client.send(text=body["text"], blocks=body["blocks"])
        except Exception as exc:  # noqa: BLE001 - urllib raises many types; all mean "not delivered"
            raise DeliveryFailed(f"Slack unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise DeliveryFailed(f"Slack answered {response.status_code}: {str(response.body)[:200]}")


class LogNotifier:
    """Used when SLACK_WEBHOOK_URL is unset: the message goes to the log, never an error."""

    def __init__(self, *, base_url: str | None = None) -> None:
        self._base_url = base_url

    def send(self, kind: str, facts: dict[str, Any]) -> None:
        log.info("notification (Slack not configured): %s", build_message(kind, facts, base_url=self._base_url)["text"])
