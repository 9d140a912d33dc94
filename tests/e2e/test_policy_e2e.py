"""The policy file under gunicorn: the circuit breaker holds under concurrent requests from several workers, and a
wrong policy file stops the production command before any worker starts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from refunds.tables import refund_requests
from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN
from tests.e2e.conftest import ROOT, Service, free_port, service_env, start_gunicorn, stop, wait_until
from tests.e2e.test_exactly_once import concurrently
from tests.e2e.test_production_start import operator_env

BREAKER = 3


@pytest.fixture
def breaker_service(database_url: str, stripe: StripeStandIn, slack: SlackStandIn,
                    tmp_path: Path) -> Iterator[Service]:
    """4 gunicorn workers under a policy whose breaker allows BREAKER auto-approvals an hour."""
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[thresholds.usd]\nauto_approve = 5000\n\n[circuit_breaker.hour]\nmax_count = {BREAKER}\n")
    env = service_env(database_url, stripe, slack, POLICY_FILE=str(policy))
    svc = Service("", env, tmp_path / "service.log")
    if not database_url.startswith("sqlite"):
        assert svc.flask("db", "upgrade").returncode == 0
    svc.base_url, svc.process = start_gunicorn(env, svc.log_path, workers=4)
    yield svc
    stop(svc.process)


def test_3n_concurrent_small_requests_from_4_workers_make_exactly_n_refunds_and_one_breaker_message(
    breaker_service: Service, stripe: StripeStandIn, slack: SlackStandIn
) -> None:
    charges = [stripe.add_charge(3000, "usd")["id"] for _ in range(3 * BREAKER)]
    answers = concurrently(3 * BREAKER, lambda i: breaker_service.post(
        "/refund-request", {"charge_id": charges[i], "amount": 1000}, INTAKE_TOKEN))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * BREAKER + [202] * (2 * BREAKER), [a.text for a in answers]
    assert stripe.refund_creations() == BREAKER
    engine = create_engine(breaker_service.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rules = [row.policy_rule for row in conn.execute(select(refund_requests.c.policy_rule))]
    finally:
        engine.dispose()
    assert sorted(rules) == ["circuit_breaker"] * (2 * BREAKER) + ["threshold"] * BREAKER

    def breaker_messages() -> list[str]:
        return [m["text"] for m in slack.messages if m["text"].startswith(":octagonal_sign: Circuit breaker")]

    wait_until(lambda: len(breaker_messages()) >= 1, timeout=20, what="the circuit breaker's Slack message")
    wait_until(lambda: sum("needs approval" in m["text"] for m in slack.messages) == 2 * BREAKER, timeout=30,
               what="every held refund's needs-approval message")
    time.sleep(0.5)  # nothing more is coming: one message per trip, not per request
    assert len(breaker_messages()) == 1


def test_a_wrong_policy_file_stops_the_production_command_once_naming_the_file_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text('[thresholds.usd]\nauto_approve = "50.00"\n')
    (tmp_path / ".env").write_text(f"STRIPE_SECRET_KEY=sk_test_abc\nINTAKE_TOKEN=intake-token-0123456789\n"
                                   f"DATABASE_URL=sqlite:///{tmp_path}/refunds.db\nPOLICY_FILE=policy.toml\n")
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                             "--bind", f"127.0.0.1:{free_port()}"],
                            cwd=tmp_path, env=operator_env(), capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert errors == ["configuration error: POLICY_FILE: policy.toml: thresholds.usd.auto_approve: must be a whole "
                      "number of minor units ≥ 0"], result.stderr
    assert "Booting worker" not in result.stderr
