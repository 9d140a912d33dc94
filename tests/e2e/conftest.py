"""End-to-end fixtures: the real service under gunicorn on a free loopback port, talking over
HTTP to the in-repo Stripe and Slack stand-ins running in this test process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN, STRIPE_KEY
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
# The production command of the README: `.venv/bin/gunicorn -c deploy/gunicorn.conf.py`.
PRODUCTION_ARGS = ("-c", "deploy/gunicorn.conf.py")
# The command the README documented before deploy/gunicorn.conf.py existed.
OLD_README_ARGS = ("app:create_app()", "--workers", "2", "--threads", "4")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    """A running service: its address, environment, log file, and helpers to call it."""

    base_url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    tokens: list[str] = field(default_factory=list)

    def flask(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `flask --app app ARGS` against the same database and settings."""
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )
        with self.log_path.open("a") as log:
            log.write(result.stderr)  # stdout may hold a token printed once, on purpose
        return result

    def add_approver(self, name: str) -> str:
        result = self.flask("approvers", "add", name)
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip().splitlines()[-1]
        self.tokens.append(token)
        return token

    def post(self, path: str, body: Any, token: str, **headers: str) -> requests.Response:
        return requests.post(self.base_url + path, json=body, timeout=30,
                             headers={"Authorization": f"Bearer {token}", **headers})

    def get(self, path: str, token: str) -> requests.Response:
        return requests.get(self.base_url + path, timeout=30, headers={"Authorization": f"Bearer {token}"})

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def service_env(database_url: str, stripe: StripeStandIn, slack: SlackStandIn | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SLACK_", "INTAKE_", "DATABASE_"))}
    env.update({
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": stripe.base_url,
        "INTAKE_TOKEN": INTAKE_TOKEN,
        "DATABASE_URL": database_url,
        "WORKER_POLL_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
        "FLASK_SKIP_DOTENV": "1",
        # The stand-in has no rate limit unless a test gives it one (then it sets this too).
        "STRIPE_RATE_LIMIT": "1000",
        **extra,
    })
    if slack is not None:
        env["SLACK_WEBHOOK_URL"] = slack.webhook_url
    return env


def start_gunicorn(env: dict[str, str], log_path: Path, *, workers: int = 2,
                   args: Sequence[str] | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start gunicorn on a free loopback port and wait until /healthz answers.

    Without `args`, `gunicorn 'app:create_app()'` with `workers` workers of 4 threads; with `args`
    (e.g. PRODUCTION_ARGS), exactly those, plus the port.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if args is None:
        args = ["app:create_app()", "--workers", str(workers), "--threads", "4", "--access-logfile", "-",
                "--graceful-timeout", "2", "--no-control-socket"]
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args, "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            return requests.get(base_url + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False  # still booting

    try:
        wait_until(healthy, timeout=60, what=f"the service to answer /healthz (log: {log_path})")
    except AssertionError:
        stop(process)
        raise
    return base_url, process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn gracefully (SIGTERM), or kill its whole process group after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill(process)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL gunicorn and its workers at once, as a crash would: no cleanup runs."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture
def stripe() -> Iterator[StripeStandIn]:
    with StripeStandIn(api_key=STRIPE_KEY) as stand_in:
        yield stand_in



@pytest.fixture
def service(database_url: str, stripe: StripeStandIn, slack: SlackStandIn, tmp_path: Path) -> Iterator[Service]:
    """The service under gunicorn (2 workers, in-process background worker) on a migrated database."""
    env = service_env(database_url, stripe, slack)
    svc = Service("", env, tmp_path / "service.log")
    if not database_url.startswith("sqlite"):
        assert svc.flask("db", "upgrade").returncode == 0
    svc.base_url, svc.process = start_gunicorn(env, svc.log_path)
    yield svc
    stop(svc.process)
