"""The state machine of a refund request: the table of allowed moves, and the one function that makes them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from refunds import store
from refunds.records import RefundRequest
from refunds.states import FINAL, TRANSITIONS, IllegalTransition, RequestStatus
from refunds.tables import audit_log, outbox
from refunds.transition import LostRace, Message, transition
from tests.test_refund_request import rows

AT = datetime(2026, 11, 27, 12, 0, 0, 123000, tzinfo=UTC)  # whole milliseconds: SQLite keeps no finer


def _queued(app: Flask, client: FlaskClient, intake_headers: dict[str, str]) -> RefundRequest:
    response = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000}, headers=intake_headers)
    assert response.status_code == 202
    with app.extensions["refund_service"].db.read() as conn:
        request = store.get_request(conn, response.get_json()["request_id"])
    assert request is not None and request.status is RequestStatus.PENDING_APPROVAL
    return request


def test_every_status_is_reachable_from_received_and_only_final_statuses_have_no_way_out() -> None:
    reached, frontier = {RequestStatus.RECEIVED}, [RequestStatus.RECEIVED]
    while frontier:
        for following in TRANSITIONS[frontier.pop()] - reached:
            reached.add(following)
            frontier.append(following)
    assert reached == set(RequestStatus)
    assert FINAL == {RequestStatus.FAILED, RequestStatus.REJECTED, RequestStatus.EXPIRED, RequestStatus.REFUSED}


def test_a_transition_writes_the_row_its_audit_row_and_its_message_and_returns_the_request_as_stored(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    request = _queued(app, client, intake_headers)
    db = app.extensions["refund_service"].db
    with db.transaction() as conn:
        moved = transition(conn, request, RequestStatus.REJECTED, at=AT, actor="ann", channel="cli",
                           detail="duplicate", message=Message("rejected", {"actor": "ann"}), resolved_at=AT)
    with db.read() as conn:
        assert store.get_request(conn, request.id) == moved
    assert (moved.status, moved.resolved_at, moved.updated_at) == (RequestStatus.REJECTED, AT, AT)
    audit = [r for r in rows(app, audit_log) if r.request_id == request.id][-1]
    assert (audit.action, audit.actor, audit.channel, audit.detail) == ("rejected", "ann", "cli", "duplicate")
    assert [r.kind for r in rows(app, outbox) if r.request_id == request.id][-1] == "rejected"


def test_a_move_the_table_does_not_list_is_refused_and_writes_nothing(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str]
) -> None:
    request = _queued(app, client, intake_headers)
    audit_before, outbox_before = len(rows(app, audit_log)), len(rows(app, outbox))
    with pytest.raises(IllegalTransition), app.extensions["refund_service"].db.transaction() as conn:
        transition(conn, request, RequestStatus.SUCCEEDED, at=AT, actor="stripe", channel="stripe",
                   message=Message("approved"))
    with app.extensions["refund_service"].db.read() as conn:
        assert store.get_request(conn, request.id) == request
    assert (len(rows(app, audit_log)), len(rows(app, outbox))) == (audit_before, outbox_before)


def test_a_request_moved_by_someone_else_meanwhile_raises_lost_race_and_the_transaction_writes_nothing(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], approver_headers: dict[str, str]
) -> None:
    stale = _queued(app, client, intake_headers)
    with app.extensions["refund_service"].db.read() as conn:
        pending = store.get_pending_for_request(conn, stale.id)
    assert pending is not None
    assert client.post("/reject-refund", json={"pending_id": pending.id}, headers=approver_headers).status_code == 200
    audit_before, outbox_before = len(rows(app, audit_log)), len(rows(app, outbox))
    with pytest.raises(LostRace), app.extensions["refund_service"].db.transaction() as conn:
        store.add_audit(conn, stale.id, at=AT, action="note", actor="x", channel="cli")  # rolled back with it
        transition(conn, stale, RequestStatus.EXPIRED, at=AT, actor="worker", channel="worker",
                   message=Message("expired"))
    with app.extensions["refund_service"].db.read() as conn:
        current = store.get_request(conn, stale.id)
    assert current is not None and current.status is RequestStatus.REJECTED
    assert (len(rows(app, audit_log)), len(rows(app, outbox))) == (audit_before, outbox_before)
