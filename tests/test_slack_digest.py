"""Slack within its limits: many routine messages waiting become one digest that Slack accepts; messages
that ask for or report a decision are never folded; Slack's 429 and Retry-After hold the digest back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.db import Database
from refunds.notifier import SlackNotifier
from refunds.service import utcnow
from refunds.slack_digest import build_digest
from refunds.store import enqueue
from refunds.tables import outbox
from refunds.worker import deliver_due
from standins.slack_webhook import SlackStandIn
from tests.conftest import make_settings, run_worker
from tests.fakes import FakeClock, FakeGateway

START = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DECISIONS = ("needs_approval", "needs_second_approval", "escalated", "failed", "rejected", "expired")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


def _facts(n: int, **extra: Any) -> dict[str, Any]:
    return {"request_id": n, "charge_id": f"ch_{n:05}", "amount": 1234, "currency": "usd", "reason": "duplicate",
            "refund_id": f"re_{n:05}", "pending_id": n, **extra}


def _enqueue(db: Database, kinds: list[str], at: datetime) -> None:
    with db.transaction() as conn:
        for n, kind in enumerate(kinds, start=1):
            enqueue(conn, request_id=None, kind=kind, payload=_facts(n), at=at)


def _undelivered(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(outbox).where(outbox.c.delivered_at.is_(None))))


def _deliver(db: Database, slack: SlackStandIn, clock: FakeClock) -> int:
    return deliver_due(db, SlackNotifier(slack.webhook_url, timeout_seconds=5), clock=clock, digest_after=10)


def test_two_thousand_routine_messages_become_one_digest_and_decisions_keep_their_own_messages(
    db: Database, slack: SlackStandIn
) -> None:
    clock = FakeClock(START + timedelta(minutes=5))
    _enqueue(db, ["auto_approved"] * 1990 + ["approved"] * 10 + list(DECISIONS), START)
    delivered = _deliver(db, slack, clock)
    assert delivered == 2000 + len(DECISIONS)
    assert not _undelivered(db)
    messages = slack.messages
    assert not slack.refusals and len(messages) == 1 + len(DECISIONS)
    digest = messages[0]
    assert digest["text"].startswith(":white_check_mark: 2000 refunds approved or auto-approved in the last 5 min, "
                                     "24,680.00 USD")
    assert len(digest["blocks"]) <= 50 and digest["blocks"][-1]["text"]["text"].endswith("…and 1900 more")
    assert all(len(b["text"]["text"]) <= 3000 for b in digest["blocks"])
    decisions = messages[1:]
    assert [m["text"].split(":", 2)[1] for m in decisions] == [
        "hourglass_flowing_sand", "hourglass_flowing_sand", "rotating_light", "x", "no_entry_sign", "zzz"]
    assert any(b["type"] == "actions" for b in decisions[0]["blocks"])  # its buttons are still there


def test_ten_routine_messages_or_fewer_go_one_by_one(db: Database, slack: SlackStandIn) -> None:
    _enqueue(db, ["auto_approved"] * 10, START)
    assert _deliver(db, slack, FakeClock(START)) == 10
    assert len(slack.messages) == 10


def test_a_digest_slack_answers_429_waits_for_its_retry_after_then_is_sent_once(
    db: Database, slack: SlackStandIn
) -> None:
    clock = FakeClock(START)
    _enqueue(db, ["auto_approved"] * 50 + ["needs_approval"], START)
    slack.fail_next(1, 429, retry_after=30)
    assert _deliver(db, slack, clock) == 1  # the digest was refused; the approval request went on its own
    assert [m["text"][:40] for m in slack.messages] == [slack.messages[0]["text"][:40]]
    assert "needs approval" in slack.messages[0]["text"]
    waiting = _undelivered(db)
    assert len(waiting) == 50 and all(row.next_attempt_at >= START + timedelta(seconds=30) for row in waiting)
    clock.advance(timedelta(seconds=20))
    assert _deliver(db, slack, clock) == 0 and slack.attempts == 2
    clock.advance(timedelta(seconds=11))
    assert _deliver(db, slack, clock) == 50
    assert len(slack.messages) == 2 and slack.messages[1]["text"].startswith(":white_check_mark: 50 refunds")
    assert not _undelivered(db)


def test_a_digest_shows_each_currency_total_and_fits_slacks_limits_whatever_its_values() -> None:
    from refunds.records import OutboxMessage

    messages = [OutboxMessage(id=n, request_id=n, kind="auto_approved", created_at=START, attempts=0,
                              next_attempt_at=START, claimed_until=None, delivered_at=None, last_error=None,
                              dead_at=None, payload=__import__("json").dumps(
                                  _facts(n, currency="jpy" if n % 2 else "usd", charge_id="<*>" * 300)))
                for n in range(1, 401)]
    body = build_digest(messages, START)
    assert "400 refunds auto-approved in the last minute" in body["text"]
    assert "JPY" in body["text"] and "USD" in body["text"]
    assert len(body["blocks"]) <= 50 and all(len(b["text"]["text"]) <= 3000 for b in body["blocks"][1:])


def test_an_approved_message_is_not_folded_while_its_requests_needs_approval_message_waits(
    database_url: str, gateway: FakeGateway, slack: SlackStandIn, intake_headers: dict[str, str]
) -> None:
    app = create_app(make_settings(database_url, slack_webhook_url=slack.webhook_url), gateway=gateway)
    db = app.extensions["refund_service"].db
    if not database_url.startswith("sqlite"):
        db.upgrade()
    client = app.test_client()
    for _ in range(12):
        assert client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100},
                           headers=intake_headers).status_code == 200
    pending = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    token = add_approver(db, "maria", utcnow())
    assert client.post("/approve-refund", json={"pending_id": pending.get_json()["pending_id"]},
                       headers={"Authorization": f"Bearer {token}"}).status_code == 200
    run_worker(app)
    texts = [m["text"] for m in slack.messages]
    assert len(texts) == 3, texts
    assert texts[0].startswith(":white_check_mark: 12 refunds auto-approved")
    assert "needs approval" in texts[1] and "Refund approved" in texts[2]  # its own story, in order
    assert not _undelivered(db)
    db.dispose()


def test_a_digest_slack_throttled_is_not_posted_again_before_its_retry_after_while_other_messages_go(
    db: Database, slack: SlackStandIn
) -> None:
    clock = FakeClock(START)
    _enqueue(db, ["auto_approved"] * 50 + ["needs_approval"], START)
    slack.fail_next(1, 429, retry_after=600)
    assert _deliver(db, slack, clock) == 1  # the digest was throttled; the approval request went on its own
    clock.advance(timedelta(seconds=1))
    with db.transaction() as conn:  # another request needs approval: the next pass has work to do
        enqueue(conn, request_id=None, kind="needs_approval", payload=_facts(99), at=clock())
    assert _deliver(db, slack, clock) == 1
    assert slack.attempts == 3, "the throttled digest went out again before Slack's Retry-After"
    assert len(_undelivered(db)) == 50
    clock.advance(timedelta(seconds=600))
    assert _deliver(db, slack, clock) == 50
    assert not _undelivered(db)


def test_building_a_digest_of_the_most_messages_it_folds_holds_only_a_little_memory_at_once() -> None:
    import json
    import tracemalloc

    from refunds.records import OutboxMessage
    from refunds.slack_digest import DIGEST_LIMIT

    messages = [OutboxMessage(id=n, request_id=n, kind="auto_approved", created_at=START, attempts=0,
                              next_attempt_at=START, claimed_until=None, delivered_at=None, last_error=None,
                              dead_at=None, payload=json.dumps(_facts(n, note="x" * 200)))
                for n in range(1, DIGEST_LIMIT + 1)]
    tracemalloc.start()
    try:
        body = build_digest(messages, START)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body["text"].startswith(f":white_check_mark: {DIGEST_LIMIT} refunds auto-approved")
    # Parsing every payload first took about 8 MB here, kept by the worker's process afterwards.
    assert peak < 1_000_000
