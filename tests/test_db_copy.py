"""`flask --app app db copy --to URL`: a SQLite history moved into a new database, ids kept, verified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.service import utcnow
from refunds.tables import audit_log, metadata, outbox, refund_log, refund_requests
from tests.conftest import INTAKE_TOKEN, empty_postgres_database, make_settings, run_worker
from tests.fakes import FakeGateway, FakeNotifier

INTAKE = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


@pytest.fixture
def history(tmp_path: Path, gateway: FakeGateway, notifier: FakeNotifier) -> Iterator[Flask]:
    """A SQLite database with a bit of everything: an approver with an email, an auto-approved refund,
    one approved and one rejected by a manager, one still waiting, their audit rows and delivered messages."""
    app = create_app(make_settings(f"sqlite:///{tmp_path}/source.db"), gateway=gateway, notifier=notifier)
    client = app.test_client()
    token = add_approver(app.extensions["refund_service"].db, "maria", utcnow(), emails=["maria@example.com"])
    manager = {"Authorization": f"Bearer {token}"}
    assert client.post("/refund-request", headers={**INTAKE, "Idempotency-Key": "t-1"},
                       json={"charge_id": "ch_small", "amount": 1500}).status_code == 200
    queued = [client.post("/refund-request", headers=INTAKE, json=body).get_json()["pending_id"]
              for body in ({"charge_id": "ch_big", "amount": 12000}, {"charge_id": "ch_jpy", "amount": 60000},
                           {"charge_id": "ch_big", "amount": 7000})]
    assert client.post("/approve-refund", headers=manager, json={"pending_id": queued[0]}).status_code == 200
    rejected = client.post("/reject-refund", headers=manager, json={"pending_id": queued[1], "note": "no"})
    assert rejected.status_code == 200
    run_worker(app)
    yield app
    app.extensions["refund_service"].db.dispose()


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                  for t in metadata.sorted_tables}
    engine.dispose()
    return counts


def _copy(app: Flask, url: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["db", "copy", "--to", url, "--batch-size", "2"])
    return result.exit_code, result.output


def test_a_copy_to_postgresql_has_every_row_and_new_requests_take_new_ids(history: Flask,
                                                                          gateway: FakeGateway) -> None:
    source = _counts(history.config["SETTINGS"].database_url)
    with empty_postgres_database() as url:
        code, output = _copy(history, url)
        assert code == 0, output
        assert _counts(url) == source
        assert "refund_requests: 4 rows" in output and "row counts match" in output
        assert all(source[name] > 0 for name in ("approvers", "approver_emails", "refund_requests", "pending_refunds",
                                                 "approvals", "refund_log", "audit_log", "outbox", "charge_ledger"))

        gateway.add_charge("ch_new", 3000)  # the same Stripe account, after the move
        moved = create_app(make_settings(url), gateway=gateway, notifier=FakeNotifier())
        try:
            answer = moved.test_client().post("/refund-request", headers=INTAKE,
                                              json={"charge_id": "ch_new", "amount": 500})
        finally:
            moved.extensions["refund_service"].db.dispose()
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["request_id"] == source["refund_requests"] + 1
        after = _counts(url)
        for table in (refund_requests, refund_log):
            assert after[table.name] == source[table.name] + 1
        assert after[audit_log.name] > source[audit_log.name] and after[outbox.name] > source[outbox.name]

        code, output = _copy(history, url)
        assert code == 1 and "not empty" in output
        assert _counts(url) == after


def test_a_copy_into_a_database_that_holds_rows_is_refused_and_changes_nothing(history: Flask,
                                                                               tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path}/target.db"
    assert _copy(history, target)[0] == 0
    copied = _counts(target)
    code, output = _copy(history, target)
    assert code == 1 and "not empty" in output
    assert _counts(target) == copied == _counts(history.config["SETTINGS"].database_url)


def test_a_copy_onto_the_database_itself_is_refused(history: Flask) -> None:
    code, output = _copy(history, history.config["SETTINGS"].database_url)
    assert code == 2 and "names the database being copied" in output
