"""`make run`'s sandbox as a new user meets it: started from a directory holding a `.env` copied
from `.env.example`, restarted, and walked through with the README's requests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, free_port, wait_until


@dataclass
class Run:
    base_url: str
    intake_token: str
    approver_token: str
    banner: str


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Callable[[], Run]]:
    """Start `python -m refunds.serve` (what `make run` runs) from tmp_path, its sandbox in
    tmp_path/sandbox; each call stops the previous run first, as a user restarting it would."""
    port = free_port()
    running: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "SLACK_", "INTAKE_", "DATABASE_", "FLASK_", "APPROVAL_", "PUBLIC_"))}

    def start() -> Run:
        for process in running:
            _stop(process)
        log_path = tmp_path / f"serve-{len(running)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "refunds.serve", "--port", str(port), "--threads", "4",
                 "--sandbox-dir", str(tmp_path / "sandbox")],
                cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        running.append(process)
        base_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return requests.get(base_url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=60, what="the sandbox to answer /healthz")
        banner = log_path.read_text()
        intake = re.search(r"export INTAKE_TOKEN=(\S+)", banner)
        approver = re.search(r"export APPROVER_TOKEN=(\S+)", banner)
        assert intake and approver, banner
        return Run(base_url, intake[1], approver[1], banner)

    yield start
    for process in running:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def post(run: Run, path: str, body: object, token: str, **headers: str) -> requests.Response:
    return requests.post(run.base_url + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token}", **headers})


def get(run: Run, path: str, token: str | None = None) -> requests.Response:
    return requests.get(run.base_url + path, timeout=30,
                        headers={"Authorization": f"Bearer {token}"} if token else {})


@pytest.mark.parametrize("intake_token", ["", "a-real-intake-token-from-dotenv"])
def test_the_sandbox_from_a_copied_env_example_starts_and_touches_only_its_own_database(
    sandbox: Callable[[], Run], tmp_path: Path, intake_token: str
) -> None:
    dotenv = (ROOT / ".env.example").read_text()
    dotenv = dotenv.replace("\nINTAKE_TOKEN=\n", f"\nINTAKE_TOKEN={intake_token}\n")
    dotenv = dotenv.replace("\nDATABASE_URL=sqlite:///refunds.db\n", f"\nDATABASE_URL=sqlite:///{tmp_path}/prod.db\n")
    (tmp_path / ".env").write_text(dotenv)
    run = sandbox()
    assert run.intake_token != intake_token
    assert f"Database: sqlite:///{tmp_path}/sandbox/sandbox.db (the sandbox's own" in run.banner
    assert "Ignored (the sandbox sets its own): DATABASE_URL" in run.banner
    answer = post(run, "/refund-request", {"charge_id": "ch_demo_small", "amount": 1500}, run.intake_token)
    assert answer.status_code == 200, answer.text
    assert not (tmp_path / "prod.db").exists()
    assert (tmp_path / "sandbox" / "sandbox.db").exists()


def test_a_restarted_sandbox_carries_on_with_the_same_tokens_links_charges_and_refunds(
    sandbox: Callable[[], Run], tmp_path: Path
) -> None:
    first = sandbox()
    readme_curl = {"charge_id": "ch_demo_small", "amount": 1500, "reason": "requested_by_customer",
                   "ticket_id": "4711"}
    refunded = post(first, "/refund-request", readme_curl, first.intake_token, **{"Idempotency-Key": "zendesk-4711"})
    assert refunded.status_code == 200, refunded.text
    pending = post(first, "/refund-request", {"charge_id": "ch_demo_large"}, first.intake_token)
    assert pending.status_code == 202, pending.text
    [item] = get(first, "/pending-refunds", first.approver_token).json()["pending"]
    link = item["approval_link"]

    second = sandbox()
    assert (second.intake_token, second.approver_token) == (first.intake_token, first.approver_token)
    again = post(second, "/refund-request", readme_curl, second.intake_token, **{"Idempotency-Key": "zendesk-4711"})
    assert (again.status_code, again.json()) == (200, refunded.json())
    assert requests.get(link, timeout=30).status_code == 200  # the link still opens: same secret, same approver
    approved = post(second, "/approve-refund", {"pending_id": pending.json()["pending_id"]}, second.approver_token)
    assert approved.status_code == 200, approved.text

    third = sandbox()
    history = get(third, f"/refunds/{pending.json()['request_id']}", third.approver_token).json()
    assert history["status"] == "succeeded"
    more = post(third, "/refund-request", {"charge_id": "ch_demo_small", "amount": 1000}, third.intake_token)
    assert more.status_code == 200, more.text  # 25.00 - 15.00 remained, at Stripe as in the database
    assert post(third, "/refund-request", {"charge_id": "ch_demo_small", "amount": 1}, third.intake_token
                ).json()["error"] == "charge_already_refunded"
    assert post(third, "/refund-request", {"charge_id": "ch_demo_large_2"}, third.intake_token).status_code == 202

    added = subprocess.run([sys.executable, "-m", "refunds.sandbox", "charge", "30000", "eur", "--sandbox-dir",
                            str(tmp_path / "sandbox")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           check=False)
    assert added.returncode == 0, added.stderr
    charge_id, shown = added.stdout.split(maxsplit=1)
    assert shown.strip() == "300.00 EUR"
    waiting = post(third, "/refund-request", {"charge_id": charge_id}, third.intake_token)
    assert (waiting.status_code, waiting.json()["status"]) == (202, "pending_approval")
