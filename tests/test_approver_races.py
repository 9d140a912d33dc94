"""Concurrent changes to approvers: a name, Slack user or email address taken by a request running at the same
time is `409 approver_exists`, never a 500, and exactly one approver is left holding it."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from refunds import approvers
from refunds.errors import ApproverExists
from refunds.tables import approver_emails
from refunds.tables import approvers as approvers_table
from tests.test_refund_request import rows

CONCURRENCY = 10


def all_at_once(work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` for i in 0..CONCURRENCY-1, each in its own thread, released together; their results."""
    barrier = threading.Barrier(CONCURRENCY)
    results: list[Any] = [None] * CONCURRENCY

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def admin(app: Flask) -> dict[str, str]:
    token = approvers.add(app.extensions["refund_service"].db, "root", app.extensions["refund_service"].clock(),
                          role="admin")
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda i: {"name": "frank"}, id="same name"),
        pytest.param(lambda i: {"name": f"frank{i}", "slack_user_id": "U024BE7LH"}, id="same Slack user"),
        pytest.param(lambda i: {"name": f"frank{i}", "emails": ["frank@example.com"]}, id="same email"),
    ],
)
def test_ten_concurrent_adds_of_one_identity_make_one_approver_and_nine_conflicts(
    app: Flask, admin: dict[str, str], body: Callable[[int], dict[str, Any]]
) -> None:
    def add(i: int) -> tuple[int, str]:
        response = app.test_client().post("/approvers", json=body(i), headers=admin)  # one client per thread
        return response.status_code, response.get_json().get("error", "")

    answers = Counter(all_at_once(add))

    assert answers == {(201, ""): 1, (409, "approver_exists"): CONCURRENCY - 1}
    assert len([a for a in rows(app, approvers_table) if a.name != "root"]) == 1
    assert len(rows(app, approver_emails)) == (1 if "emails" in body(0) else 0)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"slack_user_id": "U024BE7LH"}, id="same Slack user"),
        pytest.param({"add_emails": ["frank@example.com"]}, id="same email"),
    ],
)
def test_ten_concurrent_sets_of_one_identity_give_it_to_one_approver(app: Flask, change: dict[str, Any]) -> None:
    db = app.extensions["refund_service"].db
    for i in range(CONCURRENCY):
        approvers.add(db, f"frank{i}", app.extensions["refund_service"].clock())

    def set_(i: int) -> str:
        try:
            approvers.change(db, f"frank{i}", **change)
        except ApproverExists:
            return "approver_exists"
        return "changed"

    answers = Counter(all_at_once(set_))

    assert answers == {"changed": 1, "approver_exists": CONCURRENCY - 1}
    holders = [a for a in approvers.list_all(db) if a.slack_user_id or a.emails]
    assert len(holders) == 1


def test_ten_concurrent_reissues_of_a_revoked_approver_issue_one_token_that_works(
    app: Flask, admin: dict[str, str]
) -> None:
    db = app.extensions["refund_service"].db
    approvers.add(db, "frank", app.extensions["refund_service"].clock())
    approvers.revoke(db, "frank", app.extensions["refund_service"].clock())

    def add(i: int) -> tuple[int, str]:
        response = app.test_client().post("/approvers", json={"name": "frank"}, headers=admin)
        return response.status_code, response.get_json().get("token") or response.get_json().get("error", "")

    answers = all_at_once(add)

    assert sorted(status for status, _ in answers) == [201] + [409] * (CONCURRENCY - 1)
    [token] = [token for status, token in answers if status == 201]
    frank = approvers.authenticate(db, token)
    assert frank is not None and frank.name == "frank"
