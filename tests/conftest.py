"""Shared fixtures: a fresh database (SQLite always, PostgreSQL when TEST_DATABASE_URL is set),
the app with fake Stripe and Slack adapters, and authenticated clients."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from refunds import create_app
from refunds.approvers import Approver, active_in
from refunds.approvers import add as add_approver
from refunds.config import Settings, load_settings
from refunds.db import Database
from refunds.service import utcnow
from refunds.tables import metadata
from standins.slack_webhook import SlackStandIn
from tests.fakes import FakeClock, FakeGateway, FakeNotifier

# The developer's `.env` is theirs, not the tests': `flask` subprocesses (and deploy/gunicorn.conf.py)
# must not read it. create_app() never does; this is Flask's own switch for its command line.
os.environ["FLASK_SKIP_DOTENV"] = "1"

INTAKE_TOKEN = "intake-test-token-0123456789"
WEBHOOK_SECRET = "whsec_test_webhook_secret_0123456789"
# Standard Webhooks secret for signed intake (the example secret of the Standard Webhooks documentation).
INTAKE_SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_KEY = "sk_test_fixture_key_do_not_log_4242"
PG_SKIP_REASON = (
    "TEST_DATABASE_URL is unset, so the PostgreSQL run is skipped; "
    "set it to a postgresql+psycopg:// URL whose user may CREATE DATABASE (.ci/run does)"
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per skip reason with its count, instead of one line per skipped test: without
    TEST_DATABASE_URL, over a hundred identical lines buried the failures listed after them."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.line(f"{count:4d} x {reason}")


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    """The Slack stand-in on loopback: it refuses what Slack refuses and records what it accepted."""
    with SlackStandIn() as stand_in:
        yield stand_in


@contextmanager
def empty_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on TEST_DATABASE_URL's server (its URL), dropped afterwards.

    Skips the test, saying why, when TEST_DATABASE_URL is unset.
    """
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.skip(PG_SKIP_REASON)
    name = f"refunds_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head, dropped at the end."""
    with empty_postgres_database() as url:
        db = Database(url)
        db.upgrade()
        db.dispose()
        yield url


def _truncate_postgres(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each test using this runs once on a new SQLite file and once on an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/refunds.db"
    url: str = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url


def active_approver(db: Database, name: str) -> Approver | None:
    """The active approver called `name`, or None: what a test checks after adding or revoking one."""
    with db.read() as conn:
        return active_in(conn, name)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    env = {"STRIPE_SECRET_KEY": STRIPE_KEY, "INTAKE_TOKEN": INTAKE_TOKEN, "DATABASE_URL": database_url,
           "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    return load_settings(env, worker_in_process=False, **overrides)


@pytest.fixture
def gateway() -> FakeGateway:
    fake = FakeGateway()
    fake.add_charge("ch_small", 3000)
    fake.add_charge("ch_big", 20000, payment_intent_id="pi_big")
    fake.add_charge("ch_jpy", 100000, currency="jpy")
    return fake


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock) -> Iterator[Flask]:
    app = create_app(make_settings(database_url), gateway=gateway, notifier=notifier, clock=clock)
    app.config["TESTING"] = True
    if not database_url.startswith("sqlite"):
        service = app.extensions["refund_service"]
        service.db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def intake_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {INTAKE_TOKEN}"}


@pytest.fixture
def approver_token(app: Flask) -> str:
    return add_approver(app.extensions["refund_service"].db, "maria", utcnow())


@pytest.fixture
def approver_headers(approver_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {approver_token}"}


def run_worker(app: Flask) -> int:
    """Run the background worker until it is idle, as the in-process thread would."""
    total = 0
    while done := app.extensions["refund_worker"].run_once():
        total += done
    return total
