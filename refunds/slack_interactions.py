"""POST /slack/interactions: the Approve and Reject buttons of the Slack messages.

Slack posts `payload=<JSON>` (form-encoded), signed with SLACK_SIGNING_SECRET. The request is
verified on the raw body, the click is read and recorded in the database as work for the worker
(one short write transaction), and the answer is an empty 200 (Slack wants one within 3 seconds).
The worker decides it as the approver linked to the clicking Slack user (see `slack_clicks`) and
its outcome replaces the original message through the click's `response_url`; refusals that leave
the refund waiting for someone else (over the clicker's limit, their own request, their second
click) are shown to the clicker alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, request

from . import json_body, limits, slack_clicks
from .config import Settings
from .errors import InvalidJson
from .http_errors import HttpRefusal
from .notifier import APPROVE_ACTION, REASON_ACTION, REJECT_ACTION
from .schemas import MAX_ID
from .service import RefundService
from .slack_clicks import Click

__all__ = ["BadPayload", "bp", "read_click"]

log = logging.getLogger(__name__)
bp = Blueprint("slack_interactions", __name__)

# Interactions Slack may send to the same Request URL that are not for us: acknowledged, ignored.
OTHER_INTERACTIONS = frozenset({"view_submission", "view_closed", "shortcut", "message_action",
                                "block_suggestion", "interactive_message", "dialog_submission"})
SLACK_USER_ID = re.compile(limits.SLACK_USER_ID_PATTERN)  # the same rule as the API and the CLI
PENDING_ID = re.compile(r"[0-9]{1,10}")
MAX_REASON_LENGTH = limits.NOTE  # as the API's rejection note


class BadPayload(HttpRefusal):
    """A correctly signed body that is not a Slack interaction we can read: `400 invalid_payload`."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_payload", message, 400)


@bp.post("/slack/interactions")
def slack_interactions() -> Response:
    settings: Settings = current_app.config["SETTINGS"]
    if not settings.slack_signing_secret:
        raise HttpRefusal("slack_not_configured", "Set SLACK_SIGNING_SECRET to receive Slack button clicks.", 503)
    body = request.get_data(cache=False)
    if not signed_by_slack(settings.slack_signing_secret, body, request.headers.get("X-Slack-Request-Timestamp"),
                           request.headers.get("X-Slack-Signature")):
        raise HttpRefusal("invalid_signature", "X-Slack-Signature and X-Slack-Request-Timestamp do not verify this "
                                               "body (or it is older than 5 minutes).", 401)
    click = read_click(body)  # raises BadPayload: a 400
    if click is not None:
        _record(click, settings)
    return Response(status=200)


def signed_by_slack(secret: str, body: bytes, timestamp: str | None, signature: str | None) -> bool:
    """True when Slack signed `body` with `secret` less than 5 minutes ago (either way)."""
    # Imported here, not at the top: slack_sdk costs each worker ~2 MB, and a service without Slack never needs it.
    from slack_sdk.signature import SignatureVerifier

    try:
        return SignatureVerifier(secret).is_valid(body=body, timestamp=timestamp, signature=signature)
    except Exception:  # noqa: BLE001 - a non-integer timestamp, a body that is not UTF-8...: all mean "not signed"
        return False


def read_click(body: bytes) -> Click | None:
    """The Approve or Reject click in a form body `payload=<JSON>`; None for another interaction.

    Raises BadPayload, saying what is wrong, for anything that is not a Slack interaction.
    """
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except ValueError:  # UnicodeDecodeError too
        raise BadPayload("The body must be form-encoded with one `payload` field holding JSON.") from None
    fields = form.get("payload", [])
    if len(fields) != 1:
        raise BadPayload("The body must be form-encoded with one `payload` field holding JSON.")
    try:
        payload = json_body.loads(fields[0], what="its text")
    except InvalidJson as exc:
        raise BadPayload(f"`payload` is not JSON this service accepts: {exc.message}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise BadPayload("`payload` must be a JSON object with a `type`.")
    if payload["type"] in OTHER_INTERACTIONS:
        return None
    if payload["type"] != "block_actions":
        raise BadPayload(f"`payload.type` {payload['type'][:50]!r} is not a Slack interaction type.")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not SLACK_USER_ID.fullmatch(user_id):
        raise BadPayload("`payload.user.id` must be a Slack user id.")
    actions = payload.get("actions")
    if not isinstance(actions, list):
        raise BadPayload("`payload.actions` must be a list.")
    action = next((a for a in actions if isinstance(a, dict) and a.get("action_id") in (APPROVE_ACTION, REJECT_ACTION)),
                  None)
    if action is None:
        return None  # some other element of the message; nothing to do
    value = action.get("value")
    if not isinstance(value, str) or not PENDING_ID.fullmatch(value) or not 0 < int(value) <= MAX_ID:
        raise BadPayload("The button's `value` must be a pending refund id.")
    response_url = payload.get("response_url")
    message = payload.get("message")
    blocks = message.get("blocks") if isinstance(message, dict) else None
    return Click(
        user_id=user_id,
        action=str(action["action_id"]),
        pending_id=int(value),
        reason=_reason(payload.get("state")),
        response_url=response_url if isinstance(response_url, str) else None,
        message_blocks=[b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else [],
    )


def _reason(state: Any) -> str | None:
    """The "Reason for rejection" typed in the message: `state.values.<block>.reject_reason.value`."""
    values = state.get("values") if isinstance(state, dict) else None
    if not isinstance(values, dict):
        return None
    for block in values.values():
        element = block.get(REASON_ACTION) if isinstance(block, dict) else None
        text = element.get("value") if isinstance(element, dict) else None
        if isinstance(text, str) and text.strip():
            return text.replace("\x00", "").strip()[:MAX_REASON_LENGTH] or None
    return None


def _record(click: Click, settings: Settings) -> None:
    """Record the click for the worker; a response_url not under the allowed prefix is never stored."""
    service: RefundService = current_app.extensions["refund_service"]
    allowed = _allowed_url(click.response_url, settings.slack_response_url_prefix)
    slack_clicks.record(service.db, replace(click, response_url=allowed), service.clock())
    # This process's own worker, when it runs one, decides the click now rather than at its next poll.
    current_app.extensions["refund_worker"].wake()


def _allowed_url(url: str | None, prefix: str) -> str | None:
    """`url` if it is under SLACK_RESPONSE_URL_PREFIX, else None (and a warning that never shows the URL)."""
    if url is None:
        return None
    # "https://hooks.slack.com" must not admit "https://hooks.slack.com.example.net/".
    under = url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix):][:1] in ("/", ""))
    if under and url.isprintable() and " " not in url:
        return url
    log.warning("slack response_url ignored: it is not under SLACK_RESPONSE_URL_PREFIX")
    return None
