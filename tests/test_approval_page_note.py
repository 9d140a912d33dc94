"""The approval page's rejection note follows the API's rule for notes: any lines, no NUL, at most limits.NOTE."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from refunds import limits
from refunds.tables import pending_refunds
from tests.test_approval_links import app, link, open_page  # noqa: F401 - the link fixtures
from tests.test_refund_request import rows


def test_a_rejection_note_with_nul_from_the_page_is_stored_without_it(
    app: Flask, client: FlaskClient, link: str  # noqa: F811
) -> None:
    _, csrf = open_page(client, link)
    note = "line one\r\nline\x00 two" + "x" * limits.NOTE
    done = client.post(link, data={"csrf_token": csrf, "action": "reject", "note": note})
    assert done.status_code == 200
    [pending] = rows(app, pending_refunds)
    assert pending.status == "rejected"
    assert pending.decision_note == note.replace("\x00", "")[: limits.NOTE]
