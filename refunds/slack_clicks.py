"""Slack clicks as durable work: recorded by `POST /slack/interactions`, decided by the worker.

The request that answers Slack only records the click (one short write transaction, an outbox row of
kind `slack_click`) and answers 200; a process dying after that loses nothing. The worker claims due
clicks (a guarded update, FOR UPDATE SKIP LOCKED on PostgreSQL), decides each as the approver linked to
the clicking Slack user, through the same service calls as the API with channel `slack`, and replies
through the click's `response_url` (stored only in the database, never logged, dropped from the row
once the click is done; Slack accepts it for 30 minutes).

At most one decision per click: the deciding transaction also marks the click decided, guarded by the
claim's attempt number. A worker that dies after deciding and before marking the click done leaves it
decided; the next claim does not decide again but replies with where the refund stands now (approved,
being executed, awaiting a second approval, ...), so the clicker never reads "already decided by you" as
if someone else had acted. A refusal (a rule, a refund decided elsewhere) records nothing and is
evaluated again on a retry. A click whose work fails unexpectedly is retried with backoff.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from . import approvers, slack_text, store
from .db import Database
from .errors import NotPending, RefundError, RequestNotFound
from .notifier import APPROVE_ACTION, INTERACTIVE_BLOCK_IDS, quiet_client_log
from .service import Actor, Outcome, RefundService, backoff
from .states import RequestStatus

__all__ = ["Click", "SlackReply", "decide_due", "outcome_text", "record"]

log = logging.getLogger(__name__)

CLICK_LEASE = timedelta(minutes=2)
CLICK_BACKOFF_CAP = timedelta(minutes=5)


@dataclass(frozen=True)
class Click:
    """An Approve or Reject click, as Slack reported it (`response_url` only when under the allowed prefix)."""

    user_id: str
    action: str
    pending_id: int
    reason: str | None
    response_url: str | None
    message_blocks: list[dict[str, Any]] = field(default_factory=list)


class _TakenOver(Exception):
    """Our claim on the click ran out and another worker claimed it: roll back and leave it to them."""


def record(db: Database, click: Click, at: datetime) -> None:
    """Record `click` for the worker, in one short write transaction."""
    with db.transaction() as conn:
        store.record_click(conn, asdict(click), at)


def decide_due(service: RefundService, *, reply_timeout_seconds: int, limit: int = 20) -> int:
    """Decide every due click once and reply to Slack; returns how many clicks were worked on."""
    now = service.clock()
    with service.db.read() as conn:  # most passes find nothing: ask without taking the write lock
        if not store.any_due_click(conn, now):
            return 0
    with service.db.transaction() as conn:
        due = store.claim_due_clicks(conn, now, CLICK_LEASE, limit)
    for click_id, attempt, payload in due:
        try:
            facts = json.loads(payload)
            decided_by: str | None = facts.pop("decided_by", None)
            click = Click(**facts)
            reply = SlackReply(click.response_url, reply_timeout_seconds)
            if decided_by is None:
                decided_by = _act(service, click_id, attempt, click, reply)
            else:
                _reply_as_decided(service, decided_by, click, reply)
        except _TakenOver:
            log.info("slack click %s: another worker took it over; leaving it to them", click_id)
            continue
        except Exception as exc:
            wait = backoff(service.retry_backoff, attempt, cap=CLICK_BACKOFF_CAP)
            with service.db.transaction() as conn:
                store.mark_failed(conn, [click_id], retry_at=service.clock() + wait, error=type(exc).__name__)
            log.exception("slack click %s (attempt %s) failed; next attempt in %ss", click_id, attempt,
                          int(wait.total_seconds()))
            continue
        with service.db.transaction() as conn:
            # Kept for the record, without the response_url: a credential nobody needs once the click is done.
            done = {**facts, "response_url": None, **({"decided_by": decided_by} if decided_by else {})}
            store.finish_click(conn, click_id, service.clock(), done)
    return len(due)


def _act(service: RefundService, click_id: int, attempt: int, click: Click, reply: SlackReply) -> str | None:
    """Decide as the approver linked to the clicking Slack user; tell anyone else why nothing happened.
    Returns the approver's name if the click decided, None if it was refused."""
    try:
        approver = approvers.by_slack_user(service.db, click.user_id)
    except Exception:
        if attempt == 1:
            reply.private("Something went wrong on our side; your click is kept and will be tried again shortly.")
        raise
    if approver is None:
        log.info("slack user %s clicked %s but is not an active approver; nothing done", click.user_id, click.action)
        reply.private(
            f"Nothing was done: your Slack user ({click.user_id}) is not linked to an active approver. "
            f"An admin can link it with `flask --app app approvers set <name> --slack-user {click.user_id}`.")
        return None
    actor = Actor(approver.name, "slack")

    def mark_decided(conn: Connection) -> None:
        if not store.mark_click_decided(conn, click_id, attempt, {**asdict(click), "decided_by": actor.name}):
            raise _TakenOver()

    try:
        if click.action == APPROVE_ACTION:
            outcome = service.approve(click.pending_id, actor, with_decision=mark_decided)
        else:
            outcome = service.reject(click.pending_id, actor, note=click.reason, with_decision=mark_decided)
    except (NotPending, RequestNotFound) as exc:
        # Decided elsewhere (the API, a link, another click): the buttons are of no use any more.
        reply.replace(click.message_blocks, f"{_literal(exc.message)} ({_literal(actor.name, 200)} clicked at "
                                            f"{_iso(service.clock())})")
        return None
    except RefundError as exc:
        # The refund still waits for someone who may decide it: keep the buttons for them.
        reply.private(f"Not done: {_literal(exc.message)} (`{slack_text.literal(exc.code, 100)}`)")
        return None
    except _TakenOver:
        raise
    except Exception:
        if attempt == 1:
            reply.private("Something went wrong on our side; your click is kept and will be tried again shortly. "
                          "Check the refund's history before clicking again.")
        raise
    reply.replace(click.message_blocks, outcome_text(outcome, actor.name, click.reason, _iso(service.clock())))
    return actor.name


def _reply_as_decided(service: RefundService, name: str, click: Click, reply: SlackReply) -> None:
    """The click decided before its worker stopped: say where the refund stands now, deciding nothing."""
    with service.db.read() as conn:
        pending = store.get_pending(conn, click.pending_id)
        request = store.get_request(conn, pending.request_id) if pending is not None else None
    if pending is None or request is None:
        return
    at = _iso(service.clock())
    if request.status is RequestStatus.PENDING_APPROVAL:
        outcome = Outcome("awaiting_second_approval", request.id)
    elif request.status is RequestStatus.SUCCEEDED:
        outcome = Outcome("approved", request.id, refund_id=request.stripe_refund_id)
    elif request.status is RequestStatus.FAILED:
        outcome = Outcome("failed", request.id, error=RefundError(request.error_message or "",
                                                                  code=request.error_code))
    elif request.status is RequestStatus.EXECUTING:
        outcome = Outcome("processing", request.id)
    else:
        outcome = Outcome(request.status, request.id)
    who = pending.decided_by or name
    reason = pending.decision_note if request.status is RequestStatus.REJECTED else click.reason
    reply.replace(click.message_blocks, outcome_text(outcome, who, reason, at))


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
        # Imported here, not at the top: slack_sdk costs each worker ~2 MB, and a service without Slack never needs it.
        from slack_sdk.webhook import WebhookClient

        try:
            response = WebhookClient(self._url, timeout=self._timeout, logger=quiet_client_log).send_dict(body)
        except Exception as exc:  # noqa: BLE001 - urllib raises many types; the message may name the URL
            log.warning("slack response_url not reached: %s", type(exc).__name__)
            return
        if response.status_code != 200:
            log.warning("slack response_url answered %s: %s", response.status_code, str(response.body)[:200])


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
