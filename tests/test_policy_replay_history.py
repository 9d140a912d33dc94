"""`flask --app app policy replay CANDIDATE.toml`: the stored history decided again, on both databases.

The history is seeded as rows of `refund_requests` with the facts recorded when each was decided
(`policy_facts`, migration 0006).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event, func, insert, select

from refunds.policy import Action
from refunds.rules import PastDecision, facts_as_json
from refunds.states import RequestStatus
from refunds.tables import metadata, refund_requests
from tests.test_policy_replay import CANDIDATE_TOML, HISTORY, past

NOV = datetime(2026, 11, 27, 12, tzinfo=UTC)
OCT = datetime(2026, 10, 1, 12, tzinfo=UTC)


def row(request_id: int, *, decision: Action | None, facts: str | None, created_at: datetime = NOV,
        amount: int = 1000, currency: str = "usd") -> dict[str, Any]:
    return {"id": request_id, "body_fingerprint": f"fp{request_id}", "charge_id": f"ch_{request_id}", "amount": amount,
            "currency": currency, "reason": "requested_by_customer", "status": RequestStatus.SUCCEEDED,
            "decision": decision, "requested_by": "ana", "created_at": created_at, "updated_at": created_at,
            "attempts": 0, "policy_facts": facts}


def decided(p: PastDecision, created_at: datetime = NOV) -> dict[str, Any]:
    return row(p.request_id, decision=p.action, facts=json.dumps(facts_as_json(p.facts)), created_at=created_at,
               amount=p.facts.refund.amount, currency=p.facts.refund.currency)


def seed(app: Flask) -> None:
    """HISTORY (requests 1 to 5, November), request 6 (October, 80.00 USD: review under both policies),
    7 decided before facts were recorded, 8 never decided (its charge was never read), 9 with facts that
    cannot be read."""
    rows = [decided(p) for p in HISTORY] + [
        decided(past(6, 8000), created_at=OCT),
        row(7, decision=Action.AUTO_APPROVE, facts=None),
        row(8, decision=None, facts=None),
        row(9, decision=Action.AUTO_APPROVE, facts='{"refund": "?"}'),
    ]
    with app.extensions["refund_service"].db.transaction() as conn:
        conn.execute(insert(refund_requests).values(rows))


def replay_cli(app: Flask, tmp_path: Path, *args: str) -> tuple[int, str]:
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(CANDIDATE_TOML)
    result = app.test_cli_runner().invoke(args=["policy", "replay", str(candidate), *args])
    return result.exit_code, result.output


def test_replay_counts_the_stored_history_and_names_the_requests_that_change(app: Flask, tmp_path: Path) -> None:
    seed(app)

    code, output = replay_cli(app, tmp_path, "--format", "json")

    assert code == 0, output
    report = json.loads(output)
    assert report["before"]["auto_approve"] == {"count": 3, "amounts": {"usd": 6500}}
    assert report["before"]["needs_approval"] == {"count": 3, "amounts": {"jpy": 3000, "usd": 17000}}
    assert report["after"]["auto_approve"] == {"count": 2, "amounts": {"jpy": 3000, "usd": 1500}}
    assert report["after"]["needs_approval"] == {"count": 4, "amounts": {"usd": 22000}}
    assert report["after"]["refuse"] == {"count": 0, "amounts": {}}
    assert [(c["request_id"], c["before"], c["after"]["action"]) for c in report["changes"]] == [
        (2, "auto_approve", "needs_approval"), (4, "auto_approve", "needs_approval"),
        (5, "needs_approval", "auto_approve")]
    assert report["not_replayable"] == {"no recorded facts": 1, "recorded facts unreadable": 1}
    assert report["since"] is None


def test_replay_since_a_day_leaves_out_older_requests_and_prints_for_people(app: Flask, tmp_path: Path) -> None:
    seed(app)

    code, output = replay_cli(app, tmp_path, "--since", "2026-11-01")

    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "5 request(s) decided again, made since 2026-11-01"
    assert lines[2] == "auto_approve: 3 (65.00 USD) as decided, 2 (3,000 JPY, 15.00 USD) under the candidate"
    assert lines[3] == "needs_approval: 2 (3,000 JPY, 90.00 USD) as decided, 3 (140.00 USD) under the candidate"
    assert [line.split(" (")[0] for line in lines if line.startswith("request ")] == [
        "request 2", "request 4", "request 5"]
    assert lines[-2:] == ["not replayable (no recorded facts): 1", "not replayable (recorded facts unreadable): 1"]


def test_replay_writes_nothing(app: Flask, tmp_path: Path) -> None:
    seed(app)
    engine = app.extensions["refund_service"].db.engine
    before = counts(app)
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2].lstrip().split(None, 1)[0].upper())  # noqa: E731

    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert replay_cli(app, tmp_path)[0] == 0
    finally:
        event.remove(engine, "before_cursor_execute", listener)

    assert counts(app) == before
    assert statements and not {"INSERT", "UPDATE", "DELETE", "ALTER", "CREATE", "DROP"} & set(statements)


def counts(app: Flask) -> dict[str, int]:
    with app.extensions["refund_service"].db.read() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables}


def test_without_recorded_facts_every_decided_request_is_counted_as_not_replayable(
    app: Flask, tmp_path: Path
) -> None:
    columns = {c.name for c in refund_requests.columns}
    with app.extensions["refund_service"].db.transaction() as conn:
        conn.execute(insert(refund_requests).values([
            {k: v for k, v in row(i, decision=Action.AUTO_APPROVE, facts=None).items() if k in columns}
            for i in (1, 2)]))

    code, output = replay_cli(app, tmp_path, "--format", "json")

    assert code == 0, output
    report = json.loads(output)
    assert report["not_replayable"] == {"no recorded facts": 2}
    assert report["changes"] == [] and report["before"]["auto_approve"]["count"] == 0


def test_an_invalid_candidate_is_refused_naming_the_key(app: Flask, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds.usd]\nauto_approve = -1\n")
    result = app.test_cli_runner().invoke(args=["policy", "replay", str(bad)])
    assert result.exit_code == 1
    assert "thresholds.usd.auto_approve" in result.output
