"""The README's production command, `.venv/bin/gunicorn -c deploy/gunicorn.conf.py`, started the way
an operator starts it: from a directory holding a `.env`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from refunds.db import head_revision
from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN, STRIPE_KEY, empty_postgres_database
from tests.e2e.conftest import ROOT, free_port, stop, wait_until

CONFIG = str(ROOT / "deploy" / "gunicorn.conf.py")


def operator_env() -> dict[str, str]:
    """The environment of a shell with nothing of this service's set: everything comes from `.env`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "SLACK_", "INTAKE_", "DATABASE_", "FLASK_", "APPROVAL_", "PUBLIC_"))}
    return {**env, "PYTHONUNBUFFERED": "1"}


@contextmanager
def production_command(tmp_path: Path, base: str) -> Iterator[subprocess.Popen[bytes]]:
    """`gunicorn -c deploy/gunicorn.conf.py` started in `tmp_path` (its `.env` written by the caller), logging to
    `tmp_path/gunicorn.log`; yields once it answers `base/healthz`, stops it when the block ends."""
    with (tmp_path / "gunicorn.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", CONFIG], cwd=tmp_path,
                                   env=operator_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                return requests.get(base + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=60, what="the production command to answer /healthz")
        yield process
    finally:
        stop(process)


def test_a_bad_setting_in_env_stops_the_production_command_once_with_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"STRIPE_SECRET_KEY=sk_test_abc\nINTAKE_TOKEN=short\n"
                                   f"DATABASE_URL=sqlite:///{tmp_path}/refunds.db\n")
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", CONFIG, "--bind", f"127.0.0.1:{free_port()}"],
                            cwd=tmp_path, env=operator_env(), capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert errors == ["configuration error: INTAKE_TOKEN must be at least 16 characters long"], result.stderr
    assert "Booting worker" not in result.stderr  # checked before any worker started
    assert not (tmp_path / "refunds.db").exists()


def test_the_production_command_reads_env_from_where_it_is_started(tmp_path: Path) -> None:
    port = free_port()
    with StripeStandIn(api_key=STRIPE_KEY) as stripe:
        charge = stripe.add_charge(3000, "usd")
        # The bind and the number of processes come from .env too: the config file reads it before using them.
        (tmp_path / ".env").write_text(f"STRIPE_SECRET_KEY={STRIPE_KEY}\nSTRIPE_API_BASE={stripe.base_url}\n"
                                       f"INTAKE_TOKEN={INTAKE_TOKEN}\nDATABASE_URL=sqlite:///{tmp_path}/refunds.db\n"
                                       f"GUNICORN_BIND=127.0.0.1:{port}\nWEB_CONCURRENCY=1\n")
        with production_command(tmp_path, f"http://127.0.0.1:{port}"):
            answer = requests.post(f"http://127.0.0.1:{port}/refund-request",
                                   json={"charge_id": charge["id"], "amount": 500},
                                   headers={"Authorization": f"Bearer {INTAKE_TOKEN}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert stripe.refund_creations() == 1
    assert (tmp_path / "refunds.db").exists()
    log_text = (tmp_path / "gunicorn.log").read_text()
    assert '"POST /refund-request HTTP/1.1" 200' in log_text  # the access log is on
    assert log_text.count("Booting worker") == 1  # WEB_CONCURRENCY=1 from .env


def test_an_unmigrated_postgresql_database_stops_the_production_command_with_one_line(tmp_path: Path) -> None:
    """Before: gunicorn started, /healthz said ok, and every refund request answered 500."""
    with empty_postgres_database() as url:
        (tmp_path / ".env").write_text(f"STRIPE_SECRET_KEY=sk_test_abc\nINTAKE_TOKEN={INTAKE_TOKEN}\n"
                                       f"DATABASE_URL={url}\n")
        result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", CONFIG, "--bind",
                                 f"127.0.0.1:{free_port()}"], cwd=tmp_path, env=operator_env(),
                                capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["database error: the database at DATABASE_URL is at migration none (empty) but this code "
                      f"needs {head_revision()}: run `.venv/bin/flask --app app db upgrade` first"], result.stderr
    assert "Booting worker" not in result.stderr
