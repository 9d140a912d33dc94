"""POST /slack/interactions: the Approve and Reject buttons of the Slack messages.

Slack posts `payload=<JSON>` (form-encoded), signed with SLACK_SIGNING_SECRET. The request is
verified on the raw body, the clicking Slack user is mapped to an active approver, and the
answer is an empty 200 at once (Slack wants one within 3 seconds). The decision itself runs in
the background and its outcome replaces the original message through the click's
`response_url`; refusals that leave the refund waiting for someone else (over the clicker's
limit, their own request, their second click) are shown to the clicker alone.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, request
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from . import approvers, json_body, limits, slack_text
from .config import Settings
from .errors import InvalidJson, NotPending, RefundError, RequestNotFound
from .http_errors import error_response
from .notifier import (
    APPROVE_ACTION,
    INTERACTIVE_BLOCK_IDS,
    REASON_ACTION,
    REJECT_ACTION,
    quiet_client_log,
)
from .schemas import MAX_ID
from .service import Actor, Outcome, RefundService

__all__ = ["BackgroundTasks", "bp"]

log = logging.getLogger(__name__)
bp = Blueprint("slack_interactions", __name__)

# Interactions Slack may send to the same Request URL that are not for us: acknowledged, ignored.
OTHER_INTERACTIONS = frozenset({"view_submission", "view_closed", "shortcut", "message_action",
                                "block_suggestion", "interactive_message", "dialog_submission"})
SLACK_USER_ID = re.compile(limits.SLACK_USER_ID_PATTERN)  # the same rule as the API and the CLI
PENDING_ID = re.compile(r"[0-9]{1,10}")
MAX_REASON_LENGTH = limits.NOTE  # as the API's rejection note


class BadPayload(Exception):
    """A correctly signed body that is not a Slack interaction we can read."""


@dataclass(frozen=True)
class Click:
    """An Approve or Reject click, as Slack reported it."""

    user_id: str
    action: str
    pending_id: int
    reason: str | None
    response_url: str | None
    message_blocks: list[dict[str, Any]] = field(default_factory=list)


class BackgroundTasks:
    """Runs work after the HTTP answer, one daemon thread per task; `wait` joins them (tests do).

    A task's exceptions are logged, never raised: nothing a click does may crash the process.
    """

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def submit(self, name: str, task: Callable[[], None]) -> None:
        def run() -> None:
            try:
                task()
            except Exception:
                log.exception("slack %s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"slack-{name}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def wait(self, timeout: float = 30.0) -> bool:
        """Join every task started so far; False if some are still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                running = list(self._threads)
            if not running:
                return True
            for thread in running:
                thread.join(max(deadline - time.monotonic(), 0))
            if time.monotonic() >= deadline:
                with self._lock:
                    return not self._threads


@bp.post("/slack/interactions")
def slack_interactions() -> Any:
    settings: Settings = current_app.config["SETTINGS"]
    if not settings.slack_signing_secret:
        return error_response("slack_not_configured",
                              "Set SLACK_SIGNING_SECRET to receive Slack button clicks.", 503)
    body = request.get_data(cache=False)
    if not signed_by_slack(settings.slack_signing_secret, body, request.headers.get("X-Slack-Request-Timestamp"),
                           request.headers.get("X-Slack-Signature")):
        return error_response("invalid_signature", "X-Slack-Signature and X-Slack-Request-Timestamp do not "
                                                   "verify this body (or it is older than 5 minutes).", 401)
    try:
        click = read_click(body)
    except BadPayload as exc:
        return error_response("invalid_payload", str(exc), 400)
    if click is not None:
        _handle(click, settings)
    return Response(status=200)


def signed_by_slack(secret: str, body: bytes, timestamp: str | None, signature: str | None) -> bool:
    """True when Slack signed `body` with `secret` less than 5 minutes ago (either way)."""
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


def _handle(click: Click, settings: Settings) -> None:
    """Start the click's work in the background, so that Slack has its answer at once."""
    service: RefundService = current_app.extensions["refund_service"]
    tasks: BackgroundTasks = current_app.extensions["slack_tasks"]
    reply = SlackReply(_allowed_url(click.response_url, settings.slack_response_url_prefix),
                       settings.slack_timeout_seconds)
    tasks.submit("click", lambda: act(service, click, reply))


def act(service: RefundService, click: Click, reply: SlackReply) -> None:
    """Decide as the approver linked to the clicking Slack user; tell anyone else why nothing happened."""
    try:
        approver = approvers.by_slack_user(service.db, click.user_id)
    except Exception:
        reply.private("Something went wrong on our side and nothing was decided; try again in a minute.")
        raise
    if approver is None:
        log.info("slack user %s clicked %s but is not an active approver; nothing done", click.user_id, click.action)
        reply.private(
            f"Nothing was done: your Slack user ({click.user_id}) is not linked to an active approver. "
            f"An admin can link it with `flask --app app approvers set <name> --slack-user {click.user_id}`.")
        return
    decide(service, Actor(approver.name, "slack"), click, reply)


def decide(service: RefundService, actor: Actor, click: Click, reply: SlackReply) -> None:
    """Approve or reject as `actor`, then show the outcome in Slack."""
    try:
        if click.action == APPROVE_ACTION:
            outcome = service.approve(click.pending_id, actor)
        else:
            outcome = service.reject(click.pending_id, actor, note=click.reason)
    except (NotPending, RequestNotFound) as exc:
        # Decided elsewhere (the API, a link, another click): the buttons are of no use any more.
        reply.replace(click.message_blocks, f"{_literal(exc.message)} ({_literal(actor.name, 200)} clicked at "
                                            f"{_iso(service.clock())})")
        return
    except RefundError as exc:
        # The refund still waits for someone who may decide it: keep the buttons for them.
        reply.private(f"Not done: {_literal(exc.message)} (`{slack_text.literal(exc.code, 100)}`)")
        return
    except Exception:
        reply.private("Something went wrong on our side. Check the refund's history before trying again.")
        raise
    reply.replace(click.message_blocks, outcome_text(outcome, actor.name, click.reason, _iso(service.clock())))


def outcome_text(outcome: Outcome, name: str, reason: str | None, at: str) -> str:
    """One mrkdwn line for people: what happened, who did it, when (UTC).

    The name, the reason and Stripe's message cannot format (`slack_text.literal`), and the line
    fits a section (3,000 characters): a long reason ends in "…".
    """
    who = _literal(name, 200)
    if outcome.status == "approved":
        return f"Approved by {who} at {at}: refund {_literal(outcome.refund_id, 300)} executed"
    if outcome.status == "awaiting_second_approval":
        return f"{who}'s approval recorded at {at}; a second approver is needed"
    if outcome.status == "rejected":
        return f"Rejected by {who} at {at}: {_literal(reason)}" if reason else f"Rejected by {who} at {at}"
    if outcome.status == "processing":
        return (f"Approved by {who} at {at}: Stripe has not confirmed the refund yet; it is retried "
                "and the result will be announced in Slack")
    if outcome.status == "failed" and outcome.error is not None:
        return (f"Approved by {who} at {at}, but Stripe refused the refund: {_literal(outcome.error.message)} "
                f"(`{slack_text.literal(outcome.error.code, 100)}`)")
    return f"{outcome.status.replace('_', ' ').capitalize()} ({who}, {at})"


def _literal(value: object, limit: int = 2000) -> str:
    """A value inside our mrkdwn line; 2,000 leaves room for the rest of the line within 3,000."""
    return slack_text.literal(value, limit)


class SlackReply:
    """Answers one click through its `response_url` (None: nowhere, the URL was not Slack's)."""

    def __init__(self, response_url: str | None, timeout_seconds: int) -> None:
        self._url = response_url
        self._timeout = timeout_seconds

    def replace(self, original_blocks: list[dict[str, Any]], text: str) -> None:
        """Replace the clicked message: its facts stay, its buttons and links go, the outcome is added."""
        kept = [b for b in original_blocks if not str(b.get("block_id", "")).startswith(INTERACTIVE_BLOCK_IDS)
                and b.get("type") not in ("actions", "input")]
        text = slack_text.fit(text, slack_text.SECTION_TEXT)
        outcome = {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}
        self._post({"replace_original": True, "text": text,
                    "blocks": [*kept[: slack_text.MAX_BLOCKS - 1], outcome]})

    def private(self, text: str) -> None:
        """A message only the clicker sees; the original stays as it is."""
        self._post({"response_type": "ephemeral", "replace_original": False,
                    "text": slack_text.fit(text, slack_text.FALLBACK_TEXT)})

    def _post(self, body: dict[str, Any]) -> None:
        if self._url is None:
            return
        try:
            response = WebhookClient(self._url, timeout=self._timeout, logger=quiet_client_log).send_dict(body)
        except Exception as exc:  # noqa: BLE001 - urllib raises many types; the message may name the URL
            log.warning("slack response_url not reached: %s", type(exc).__name__)
            return
        if response.status_code != 200:
            log.warning("slack response_url answered %s: %s", response.status_code, str(response.body)[:200])


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


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
