"""Several instances and workers on one database: a burst within Stripe's rate limit (shared by every
process), 1,000 requests over two instances and three workers, one of them killed mid-run, and the daily
report posted once by three workers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, select, text

from refunds.states import RequestStatus
from refunds.tables import outbox, refund_requests
from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN, STRIPE_KEY, empty_postgres_database
from tests.e2e.conftest import ROOT, Service, service_env, start_gunicorn, stop
from tests.polling import wait_until

RATE = 25


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts gunicorn instances and `flask --app app worker` processes; stops all of them at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def instance(env: dict[str, str], number: int) -> Service:
        svc = Service("", env, tmp_path / f"instance-{number}.log")
        svc.base_url, svc.process = start_gunicorn(env, svc.log_path, workers=2)
        started.append(svc.process)
        return svc

    def worker(env: dict[str, str], number: int) -> subprocess.Popen[bytes]:
        with (tmp_path / f"worker-{number}.log").open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    def stop_all() -> None:
        for process in started:
            if process.poll() is None:
                stop(process)

    yield {"instance": instance, "worker": worker, "stop": stop_all}
    stop_all()


def _requests(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(refund_requests)))
    finally:
        engine.dispose()


def _send(base_urls: list[str], bodies: list[tuple[int, dict[str, Any], str]], threads: int) -> list[int]:
    """POST each (instance index, body, Idempotency-Key) from `threads` threads; the status codes. A request
    whose connection fails is sent again with its key, as a support tool would."""

    def post(item: tuple[int, dict[str, Any], str]) -> int:
        index, body, key = item
        for attempt in range(3):
            try:
                answer = requests.post(base_urls[index] + "/refund-request", json=body, timeout=60,
                                       headers={"Authorization": f"Bearer {INTAKE_TOKEN}", "Idempotency-Key": key})
                return answer.status_code
            except requests.ConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(post, bodies))


def test_a_burst_of_100_at_25_a_second_over_two_instances_refunds_each_once_and_never_meets_a_429(
    database_url: str, slack: SlackStandIn, fleet: dict[str, Any]
) -> None:
    with StripeStandIn(api_key=STRIPE_KEY, write_rate_limit=RATE) as stripe:
        env = service_env(database_url, stripe, slack, STRIPE_RATE_LIMIT=str(RATE), RETRY_BACKOFF_SECONDS="0.5",
                          EXECUTION_LEASE_SECONDS="10")
        svc = fleet["instance"](env, 0)
        other = fleet["instance"](env, 1)
        charges = [stripe.add_charge(1000, "usd")["id"] for _ in range(100)]
        started = time.monotonic()
        codes = _send([svc.base_url, other.base_url],
                      [(n % 2, {"charge_id": charge, "amount": 100}, f"burst-{n}") for n, charge in enumerate(charges)],
                      threads=20)
        assert set(codes) <= {200, 202}, codes  # over the limit: processing, never an error
        wait_until(lambda: all(r.status == RequestStatus.SUCCEEDED for r in _requests(database_url)), timeout=120,
                   what="every request to succeed")
        elapsed = time.monotonic() - started
        assert stripe.refund_creations() == 100
        assert sorted(r["charge"] for r in stripe.refunds) == sorted(charges)
        assert stripe.rate_limited == 0  # the shared limiter kept every process under Stripe's limit
        assert elapsed >= 99 / RATE  # the floor: 100 writes, 1/25 s apart
        fleet["stop"]()


def test_two_instances_and_three_workers_on_postgresql_make_exactly_1000_refunds_with_a_worker_killed(
    fleet: dict[str, Any]
) -> None:
    with empty_postgres_database() as url, StripeStandIn(api_key=STRIPE_KEY) as stripe, \
            SlackStandIn(messages_per_second=2) as slack:
        env = service_env(url, stripe, slack, WORKER_IN_PROCESS="false", RETRY_BACKOFF_SECONDS="0.2",
                          EXECUTION_LEASE_SECONDS="2", WORKER_POLL_SECONDS="0.1")
        _no_commit_flush(url)  # a throwaway database: the test is about processes, not the disk
        migrate = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120, check=False)
        assert migrate.returncode == 0, migrate.stderr
        instances = [fleet["instance"](env, n) for n in range(2)]
        workers = [fleet["worker"](env, n) for n in range(3)]
        charges = [stripe.add_charge(100_000, "usd")["id"] for _ in range(50)]
        # Stripe fails 150 refund calls: those requests answer 202 and the workers retry them.
        stripe.inject("error", status=500, times=150)
        bodies: list[tuple[int, dict[str, Any], str]] = []
        for n in range(1000):
            body = {"charge_id": charges[n % 50], "amount": 1}
            bodies.append((n % 2, body, f"scale-{n}"))
            if n % 10 == 0:  # every tenth also at the other instance, with the same key, at about the same time
                bodies.append((1 - n % 2, body, f"scale-{n}"))
        with ThreadPoolExecutor(max_workers=1) as one:
            sending = one.submit(_send, [s.base_url for s in instances], bodies, 16)
            wait_until(lambda: stripe.refund_creations() >= 200 or sending.done(), timeout=120, what="200 refunds")
            workers[0].send_signal(signal.SIGKILL)
            codes = sending.result(timeout=300)
        assert len(codes) == 1100 and set(codes) <= {200, 202}, sorted(set(codes))
        wait_until(lambda: all(r.status == RequestStatus.SUCCEEDED for r in _requests(url)), timeout=120,
                   what="every request to succeed")
        assert len(_requests(url)) == 1000
        assert stripe.refund_creations() == 1000
        assert len({r["metadata"]["refund_key"] for r in stripe.refunds}) == 1000
        # Messages the killed worker had claimed wait out its lease (a minute; tests/test_worker.py shows them
        # sent after it): every other one is delivered, in digests rather than a thousand posts.
        wait_until(lambda: all(row.claimed_until is not None and row.claimed_until > datetime.now(UTC)
                               for row in _undelivered(url)), timeout=60,
                   what="every message not held by the killed worker to be delivered")
        refunds_told = sum(int(m["text"].split()[1]) if " refunds " in m["text"] else 1 for m in slack.messages)
        assert refunds_told + len(_undelivered(url)) >= 1000 and len(slack.messages) < 200
        fleet["stop"]()  # before the database is dropped


def _undelivered(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(outbox).where(outbox.c.delivered_at.is_(None))))
    finally:
        engine.dispose()


def _no_commit_flush(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            name = conn.execute(text("SELECT current_database()")).scalar()
            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    finally:
        engine.dispose()


def test_three_workers_post_the_daily_report_once(database_url: str, slack: SlackStandIn,
                                                   fleet: dict[str, Any]) -> None:
    with StripeStandIn(api_key=STRIPE_KEY) as stripe:
        # REPORT_TIME long past today: yesterday's report is due the moment each worker starts.
        env = service_env(database_url, stripe, slack, REPORT_TIME="00:00", REPORT_TZ="UTC")
        migrate = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120, check=False)
        assert migrate.returncode == 0, migrate.stderr
        for n in range(3):
            fleet["worker"](env, n)

        def reports() -> list[Any]:  # yesterday's, the only day due in a new database
            return [m for m in slack.messages if m["text"].startswith("Refunds on ")]

        wait_until(lambda: len(reports()) >= 1, timeout=60, what="the daily report to be posted")
        time.sleep(2.0)  # twenty passes of each worker (WORKER_POLL_SECONDS=0.1): none may post it again
        assert len(reports()) == 1 and len(slack.messages) == 1
        fleet["stop"]()  # before the database is emptied
