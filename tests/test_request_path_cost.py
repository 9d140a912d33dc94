"""What one request costs the database: transactions (write and read apart) and SQL statements.

Upper bounds, equal to what the request path does today, so that a regression (another
transaction, a read that takes the write lock, a read-back, a statement more) fails here and is seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, update

from refunds.db import is_read_only
from refunds.tables import approvers
from tests.conftest import run_worker
from tests.fakes import FakeNotifier


@dataclass
class Cost:
    writes: int = 0
    reads: int = 0
    statements: int = 0

    def at_most(self, *, writes: int, reads: int, statements: int) -> bool:
        return self.writes <= writes and self.reads <= reads and self.statements <= statements


@contextmanager
def counted(app: Flask) -> Iterator[Cost]:
    """Count what the app's engine does inside the block. A transaction is a read when it was opened
    with `Database.read()` (plain BEGIN on SQLite), a write otherwise (BEGIN IMMEDIATE on SQLite)."""
    engine = app.extensions["refund_service"].db.engine
    cost = Cost()

    def on_begin(conn: Any) -> None:
        if is_read_only(conn):
            cost.reads += 1
        else:
            cost.writes += 1

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # BEGIN on SQLite is sent by our begin event; PostgreSQL's driver sends its own unseen: count neither.
        if not statement.startswith("BEGIN"):
            cost.statements += 1

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield cost
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_statement)


def test_an_auto_approved_refund_takes_three_write_transactions_and_few_statements(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    with counted(app) as cost:
        response = client.post("/refund-request", json={"charge_id": "ch_small", "amount": 1000},
                               headers={**intake_headers, "Idempotency-Key": "cost-1"})
    assert response.get_json()["status"] == "auto_approved"
    # A new Idempotency-Key is recorded, not looked up first; each step hands the next the request as it wrote it.
    assert cost.at_most(writes=3, reads=0, statements=11), cost


def test_an_auto_approved_refund_without_an_idempotency_key_reads_nothing_back(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    with counted(app) as cost:
        response = client.post("/refund-request", json={"charge_id": "ch_small", "amount": 1000},
                               headers=intake_headers)
    assert response.get_json()["status"] == "auto_approved"
    assert cost.at_most(writes=3, reads=0, statements=11), cost


def test_a_refund_queued_for_approval_takes_two_write_transactions_and_no_read(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    with counted(app) as cost:
        response = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    assert response.get_json()["status"] == "pending_approval"
    # PostgreSQL takes one statement more: the advisory lock that keeps the queue's ids in commit order.
    on_postgres = app.extensions["refund_service"].db.engine.dialect.name == "postgresql"
    assert cost.at_most(writes=2, reads=0, statements=8 if on_postgres else 7), cost


def test_an_approval_takes_two_write_transactions(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str]
) -> None:
    queued = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    pending_id = queued.get_json()["pending_id"]
    with counted(app) as cost:
        response = client.post("/approve-refund", json={"pending_id": pending_id}, headers=approver_headers)
    assert response.get_json()["status"] == "approved"
    # The one read authenticates the approver; nothing is read back after the decision.
    assert cost.at_most(writes=2, reads=1, statements=16), cost


def test_listing_the_approval_queue_takes_no_write_transaction(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str]
) -> None:
    client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    with counted(app) as cost:
        response = client.get("/pending-refunds", headers=approver_headers)
    assert len(response.get_json()["pending"]) == 1
    assert cost.at_most(writes=0, reads=2, statements=3), cost


def test_a_worker_pass_records_all_its_deliveries_in_one_transaction(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], notifier: FakeNotifier
) -> None:
    for _ in range(5):
        client.post("/refund-request", json={"charge_id": "ch_small", "amount": 100}, headers=intake_headers)
    with counted(app) as cost:
        assert app.extensions["refund_worker"].run_once() == 5
    assert notifier.kinds() == ["auto_approved"] * 5
    assert cost.writes == 2, cost  # claim the five messages; record the five deliveries


def test_a_worker_pass_with_nothing_due_takes_no_write_transaction(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    run_worker(app)  # delivers the "needs approval" message: nothing is due after this
    with counted(app) as cost:
        assert app.extensions["refund_worker"].run_once() == 0
    assert cost.writes == 0, cost


def test_reads_answer_while_another_process_holds_the_write_lock(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str]
) -> None:
    client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    db = app.extensions["refund_service"].db
    with db.transaction() as writer:  # as another worker in the middle of a write would
        writer.execute(update(approvers).where(approvers.c.name == "nobody").values(role="admin"))
        started = time.monotonic()
        listed = client.get("/pending-refunds", headers=approver_headers)
        waited = time.monotonic() - started
    assert listed.status_code == 200
    assert len(listed.get_json()["pending"]) == 1
    assert waited < 5, f"the read waited {waited:.1f} s for the writer"
