"""The application as a whole: factory, health, JSON errors everywhere, the OpenAPI document."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect

from refunds.tables import metadata


def test_factory_builds_an_app_that_is_healthy_on_a_new_database(app: Flask, client: FlaskClient) -> None:
    assert not app.extensions["refund_service"].db.url.startswith("sqlite") or \
        set(inspect(app.extensions["refund_service"].db.engine).get_table_names()) >= set(metadata.tables)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_unknown_route_and_wrong_method_answer_json_not_html(client: FlaskClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.get_json()["error"] == "not_found"
    wrong = client.get("/refund-request")
    assert wrong.status_code == 405
    assert wrong.get_json()["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


def test_oversized_body_is_refused_with_json(client: FlaskClient, intake_headers: dict[str, str]) -> None:
    response = client.post("/refund-request", data=b"{" + b" " * 70_000 + b"}", headers=intake_headers,
                           content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"


def test_openapi_document_describes_every_route(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules() if rule.endpoint != "static"
        for method in rule.methods or () if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops
                  if method in {"get", "post", "put", "patch", "delete"}}
    assert served == documented


def test_the_migrations_build_exactly_the_schema_the_code_uses(app: Flask) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with app.extensions["refund_service"].db.engine.connect() as conn:
        # Types are left out: SQLite stores the UTC timestamps as text by design.
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert differences == []
