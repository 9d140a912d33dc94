"""The background worker: decides Slack clicks, retries requests whose lease ran out, asks Stripe
about refunds still pending, and delivers outbox messages to Slack.

Runs in a thread inside the web process (the default), or alone with `flask --app app worker`.
Several workers may run at once: every click, message and execution is claimed with a guarded
update before anything is decided or sent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from . import logs, rate_limit, slack_clicks, slack_digest, store
from .db import Database
from .lifecycle import RefundLifecycle
from .notifier import DeliveryFailed, MessageRefused, Notifier
from .records import OutboxMessage
from .reports.schedule import ReportSchedule, post_due_reports
from .service import Clock, RefundService, backoff, utcnow

__all__ = ["BUSY_PAUSE_SECONDS", "DELIVERY_RECORD_SECONDS", "MESSAGE_BACKOFF_CAP", "MESSAGE_LEASE",
           "RETRY_AFTER_CAP", "Worker", "deliver_due"]

log = logging.getLogger(__name__)

MESSAGE_LEASE = timedelta(seconds=60)
MESSAGE_BACKOFF_CAP = timedelta(minutes=5)
RETRY_AFTER_CAP = timedelta(hours=1)
# Deliveries are recorded together, in one transaction at most this often, rather than one transaction per
# message: under load those transactions queued for SQLite's write lock with the refunds being requested.
DELIVERY_RECORD_SECONDS = 1.0
# After a pass that found work, the next one starts this much later (at once when woken, as for a Slack click):
# the messages of a quarter of a second are claimed and recorded together. Under load each pass's queries and
# write transactions compete with the requests being answered; a notification a quarter second later does not.
BUSY_PAUSE_SECONDS = 0.25


def deliver_due(db: Database, notifier: Notifier, *, clock: Clock = utcnow, limit: int = 50,
                retry_backoff: timedelta = timedelta(seconds=5), digest_after: int | None = None) -> int:
    """Send every due message once; returns how many were delivered.

    With `digest_after`, more routine messages than that waiting go to Slack as one digest first
    (`slack_digest.fold_routine`; never a message that asks for or reports a decision), when the
    notifier can post a whole body.

    A message that fails (Slack down, slow, 5xx, 429, or a webhook Slack answers 403/404/410 for)
    is rescheduled with backoff (capped at 5 minutes, or later when Slack's Retry-After says so;
    retried for as long as it takes), logged at ERROR once per attempt (a 429 at WARNING), and
    later messages of the same request wait for it. Only a message Slack refuses as invalid (400)
    is parked dead (`outbox.dead_at`, with Slack's answer in `last_error`) after that one attempt,
    logged at ERROR, never sent again, and later messages of its request go on without it.
    Deliveries are recorded in one transaction every DELIVERY_RECORD_SECONDS and at the end: a process
    that dies in between sends those messages again (delivery is at least once, as ever).
    """
    delivered = 0
    unrecorded: list[int] = []
    recorded_at = time.monotonic()
    now = clock()
    with db.read() as conn:  # most passes find nothing: ask without taking the write lock
        if not store.any_due_message(conn, now):
            return 0
    post = getattr(notifier, "post", None)
    if digest_after is not None and post is not None:
        delivered += slack_digest.fold_routine(db, post, after=digest_after, now=now, clock=clock,
                                               retry_backoff=retry_backoff)
    with db.transaction() as conn:
        due = store.claim_due_messages(conn, now, MESSAGE_LEASE, limit)
        traces = store.trace_ids(conn, {m.request_id for m in due if m.request_id is not None})
    for message in due:
        # Each message's lines carry the id of the request it tells about, as its HTTP request's lines did.
        with logs.logging_for(traces.get(message.request_id) if message.request_id is not None else None):
            if _deliver(db, notifier, message, clock=clock, retry_backoff=retry_backoff):
                delivered += 1
                unrecorded.append(message.id)
        if time.monotonic() - recorded_at >= DELIVERY_RECORD_SECONDS:
            _record_delivered(db, unrecorded, clock())
            unrecorded, recorded_at = [], time.monotonic()
    _record_delivered(db, unrecorded, clock())
    return delivered


def _deliver(db: Database, notifier: Notifier, message: OutboxMessage, *, clock: Clock,
             retry_backoff: timedelta) -> bool:
    """Send one claimed message; True when Slack took it (the caller records it), else it is rescheduled or
    parked dead here (see `deliver_due`)."""
    try:
        notifier.send(message.kind, json.loads(message.payload))
    except MessageRefused as exc:
        with db.transaction() as conn:
            store.mark_dead(conn, message.id, at=clock(), error=str(exc))
        log.error("slack message %s (%s, request %s) refused by Slack and parked dead; it will not be "
                  "sent again: %s", message.id, message.kind, message.request_id, exc)
        return False
    except DeliveryFailed as exc:
        wait = backoff(retry_backoff, message.attempts + 1, cap=MESSAGE_BACKOFF_CAP)
        if exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, RETRY_AFTER_CAP))
        with db.transaction() as conn:
            store.mark_failed(conn, [message.id], retry_at=clock() + wait, error=str(exc))
        # Anything but a rate limit means Slack is down or the webhook is broken: ops must see it.
        log.log(logging.WARNING if exc.throttled else logging.ERROR,
                "slack message %s (%s, request %s) not delivered, next attempt in %ss: %s",
                message.id, message.kind, message.request_id, int(wait.total_seconds()), exc)
        return False
    log.info("slack message %s (%s, request %s) delivered", message.id, message.kind, message.request_id)
    return True


def _record_delivered(db: Database, message_ids: Sequence[int], at: datetime) -> None:
    """Mark `message_ids` delivered, in one transaction (none when there are none)."""
    if message_ids:
        with db.transaction() as conn:
            store.mark_delivered(conn, message_ids, at)


class Worker:
    """Runs `run_once` every `poll_seconds` until `stop()`; exceptions are logged, never fatal."""

    def __init__(self, service: RefundService, lifecycle: RefundLifecycle, notifier: Notifier, *,
                 poll_seconds: float = 1.0, escalate_after: timedelta | None = None,
                 expire_after: timedelta | None = None, slack_timeout_seconds: int = 10,
                 digest_after: int | None = None) -> None:
        self.slack_timeout_seconds = slack_timeout_seconds
        self.digest_after = digest_after
        self.escalate_after = escalate_after
        self.expire_after = expire_after
        self.service = service
        self.lifecycle = lifecycle
        self.notifier = notifier
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.report_schedule: ReportSchedule | None = None  # the daily report's Slack post (REPORT_TIME)

    def wake(self) -> None:
        """Run the next pass now instead of at the end of the poll interval (a Slack click is waiting).
        Does nothing when this worker's loop is not running (clicks then wait for another worker)."""
        self._wake.set()

    def run_once(self) -> int:
        """One pass: decide Slack clicks, advance due requests, check pending refunds, deliver messages.
        Returns the work done. Clicks come first: someone in Slack waits for their answer."""
        # Nobody waits on the worker's Stripe calls: they wait for their rate-limit slot rather than retry later.
        with rate_limit.patient(rate_limit.WORKER_MAX_WAIT):
            return self._run_once()

    def _run_once(self) -> int:
        done = slack_clicks.decide_due(self.service, reply_timeout_seconds=self.slack_timeout_seconds)
        done += self.service.retry_due()
        done += self.lifecycle.poll()
        done += self.service.escalate_and_expire(self.escalate_after, self.expire_after)
        done += deliver_due(self.service.db, self.notifier, clock=self.service.clock,
                            retry_backoff=self.service.retry_backoff, digest_after=self.digest_after)
        done += post_due_reports(self.service.db, self.report_schedule, now=self.service.clock())
        return done

    def run_forever(self) -> None:
        log.info("worker started (polling every %ss)", self.poll_seconds)
        while not self._stop.is_set():
            self._wake.clear()  # before the pass: a wake-up during it starts the next one at once
            try:
                busy = self.run_once()
            except Exception:
                log.exception("worker pass failed; trying again")
                busy = 0
            self._wake.wait(BUSY_PAUSE_SECONDS if busy else self.poll_seconds)

    def start_thread(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run_forever, name="refund-worker", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
