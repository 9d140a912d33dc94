"""Routine Slack messages folded into one digest when too many wait, so a burst stays within Slack's limits.

Slack's incoming webhooks take about one message a second. When more than `after` routine messages
(`ROUTINE_KINDS`: a refund made, auto-approved or after an approval) are waiting (undelivered and
unclaimed, whether due now or backing off after a failure), `fold_routine` claims
them, posts ONE digest ("37 refunds auto-approved in the last 5 minutes, 412.00 USD: ...") and marks
them delivered by it. Nothing that asks for or reports a decision (needs approval, escalation, a
failure, a rejection, an expiry, anything else) is ever folded: those keep their own messages and
buttons. A routine message waits for its request's earlier messages as ever (it is folded only when
it is the oldest undelivered one of its request), so the story of a request stays in order.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from . import slack_text, store
from .db import Database
from .money import Money
from .notifier import DeliveryFailed, MessageRefused, duration
from .records import OutboxMessage
from .tables import outbox

__all__ = ["DIGEST_LIMIT", "DIGEST_LINES", "ROUTINE_KINDS", "BodyPoster", "build_digest", "fold_routine"]

log = logging.getLogger(__name__)

ROUTINE_KINDS = ("auto_approved", "approved")
# One digest claims at most this many messages: its rows are marked delivered in one transaction.
DIGEST_LIMIT = 5000
DIGEST_LEASE = timedelta(seconds=60)
# A digest lists this many refunds, then says how many more: a wall of lines is read by nobody.
DIGEST_LINES = 100

# Waiting: undelivered and unclaimed, due or not. Messages Slack answered 429 wait apart from each other
# (each its own backoff); counting only those due at once would rarely see enough to fold them.
_ROUTINE_DUE = (outbox.c.kind.in_(ROUTINE_KINDS) & outbox.c.delivered_at.is_(None) & outbox.c.dead_at.is_(None)
                & (outbox.c.claimed_until.is_(None) | (outbox.c.claimed_until <= bindparam("b_now")))
                & (outbox.c.request_id.is_(None) | (store.OLDER_PENDING == 0)))
_MORE_THAN = select(outbox.c.id).where(_ROUTINE_DUE).offset(bindparam("b_after")).limit(1)
# A message whose last digest Slack refused or throttled waits out that digest's backoff (and Slack's
# Retry-After) before it is folded again; one Slack throttled on its own may be folded at once.
DIGEST_ERROR = "digest: "
_NOT_HELD_BY_A_DIGEST = ((outbox.c.next_attempt_at <= bindparam("b_now")) | outbox.c.last_error.is_(None)
                         | ~outbox.c.last_error.startswith(DIGEST_ERROR))
_CLAIM = (select(outbox).where(_ROUTINE_DUE, _NOT_HELD_BY_A_DIGEST).order_by(outbox.c.id)
          .limit(DIGEST_LIMIT).with_for_update(skip_locked=True))
_LEASE = (update(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True)))
          .values(claimed_until=bindparam("b_until"), attempts=outbox.c.attempts + 1))


BodyPoster = Callable[[dict[str, Any]], None]
"""Posts a whole Slack body; raises `DeliveryFailed` or `MessageRefused` as `Notifier.send` does."""


def fold_routine(db: Database, post: BodyPoster, *, after: int, now: datetime, clock: Callable[[], datetime],
                 retry_backoff: timedelta) -> int:
    """When more than `after` routine messages are waiting, post them as one digest; returns how many were
    folded (0 when there were not enough, or the digest was not delivered).

    A digest Slack does not take (down, 429) leaves its messages undelivered until the later of
    `retry_backoff` and Slack's Retry-After; one Slack refuses (400: it never should) parks nothing and
    also waits, logged at ERROR.
    """
    with db.read() as conn:  # most passes have a few messages: ask without taking the write lock
        if conn.execute(_MORE_THAN, {"b_now": now, "b_after": after}).first() is None:
            return 0
    with db.transaction() as conn:
        messages = [OutboxMessage.of(row) for row in conn.execute(_CLAIM, {"b_now": now})]
        if len(messages) <= after:
            return 0  # another worker took some meanwhile: theirs go one by one
        conn.execute(_LEASE, {"b_ids": [m.id for m in messages], "b_until": now + DIGEST_LEASE})
    try:
        post(build_digest(messages, now))
    except (DeliveryFailed, MessageRefused) as exc:
        wait = retry_backoff
        if isinstance(exc, DeliveryFailed) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        with db.transaction() as conn:
            store.mark_failed(conn, [m.id for m in messages], retry_at=clock() + wait, error=f"{DIGEST_ERROR}{exc}")
        throttled = isinstance(exc, DeliveryFailed) and exc.throttled
        log.log(logging.WARNING if throttled else logging.ERROR, "slack digest of %d messages not delivered, "
                "next attempt in %ss: %s", len(messages), int(wait.total_seconds()), exc)
        return 0
    at = clock()
    with db.transaction() as conn:
        store.mark_delivered(conn, [m.id for m in messages], at)
    log.info("slack digest delivered for %d messages", len(messages))
    return len(messages)


def build_digest(messages: Sequence[OutboxMessage], now: datetime) -> dict[str, Any]:
    """One Slack body for `messages` (routine kinds): a summary line with the totals by currency, then a
    line per refund for the oldest DIGEST_LINES, over as many sections as Slack's 3,000 characters need,
    within its 50 blocks; the rest (and lines that do not fit) are counted in "…and N more"."""
    totals: dict[str, int] = defaultdict(int)
    lines: list[str] = []
    # One payload parsed at a time: a digest folds up to DIGEST_LIMIT messages, and all their parsed
    # payloads at once took about 8 MB, which the worker's process then kept (issue 8: RSS per worker).
    for message in messages:
        fact = json.loads(message.payload)
        totals[str(fact["currency"])] += int(fact["amount"])
        if len(lines) < DIGEST_LINES:
            lines.append(_line(fact))
    oldest = min(m.created_at for m in messages)
    amounts = ", ".join(str(Money(amount, currency)) for currency, amount in sorted(totals.items()))
    kinds = " or ".join(sorted({"auto-approved" if m.kind == "auto_approved" else "approved" for m in messages}))
    span = now - oldest
    since = "minute" if span <= timedelta(minutes=1) else duration(span)
    summary = f"{len(messages)} refunds {kinds} in the last {since}, {amounts}"
    if len(messages) > DIGEST_LINES:
        lines.append(f"…and {len(messages) - DIGEST_LINES} more")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Refunds made", "emoji": True}},
        _section(slack_text.fit(f"*{slack_text.escape(summary)}*", slack_text.SECTION_TEXT)),
    ]
    blocks += [_section(text) for text in _chunks(lines, slack_text.MAX_BLOCKS - len(blocks))]
    return {"text": slack_text.fit(f":white_check_mark: {summary}", slack_text.FALLBACK_TEXT), "blocks": blocks}


def _line(fact: dict[str, Any]) -> str:
    who = f" by {slack_text.literal(fact['actor'], 100)}" if fact.get("actor") else ""
    return (f"• {Money(int(fact['amount']), str(fact['currency']))} on {slack_text.literal(fact['charge_id'], 100)} "
            f"(request #{slack_text.literal(fact['request_id'], 30)}){who}")


def _chunks(lines: list[str], room: int) -> list[str]:
    """`lines` joined into at most `room` texts of at most SECTION_TEXT characters; the last says what is left."""
    texts: list[list[str]] = [[]]
    for line in lines:
        if texts[-1] and len("\n".join([*texts[-1], line])) > slack_text.SECTION_TEXT:
            texts.append([])
        texts[-1].append(line)
    if len(texts) > room:
        texts = texts[:room]
        shown = sum(len(t) for t in texts)
        total = len(lines)

        def more() -> str:
            return f"…and {total - shown} more lines"

        while len("\n".join([*texts[-1], more()])) > slack_text.SECTION_TEXT:
            texts[-1].pop()
            shown -= 1
        texts[-1].append(more())
    return ["\n".join(t) for t in texts if t]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}
