"""Metrics and JSON logs (the service's and gunicorn's) under the production command,
`.venv/bin/gunicorn -c deploy/gunicorn.conf.py`, with two worker processes: a scrape adds up every
process's counts, whichever process answers it."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN, STRIPE_KEY
from tests.e2e.conftest import free_port
from tests.e2e.test_production_start import production_command

METRICS_TOKEN = "metrics-e2e-token-0123456789"


def _health_answers(base: str) -> float:
    text = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "refunds_http_requests_total" and sample.labels.get("endpoint") == "/healthz")


def _processes_counted(metrics_dir: Path) -> set[str]:
    """The processes that wrote counters (prometheus-client's files are named counter_<pid>.db)."""
    return {path.name.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}


def test_two_gunicorn_workers_report_one_sum_and_log_json_lines_with_request_ids(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"
    with StripeStandIn(api_key=STRIPE_KEY) as stripe:
        charge = stripe.add_charge(3000, "usd")
        (tmp_path / ".env").write_text(
            f"STRIPE_SECRET_KEY={STRIPE_KEY}\nSTRIPE_API_BASE={stripe.base_url}\nINTAKE_TOKEN={INTAKE_TOKEN}\n"
            f"DATABASE_URL=sqlite:///{tmp_path}/refunds.db\nGUNICORN_BIND=127.0.0.1:{port}\nWEB_CONCURRENCY=2\n"
            f"METRICS_TOKEN={METRICS_TOKEN}\nLOG_FORMAT=json\nPROMETHEUS_MULTIPROC_DIR={metrics_dir}\n")
        with production_command(tmp_path, base):
            # One connection each: the two processes share them, though not always evenly on a busy machine.
            for sent in range(1, 501):
                assert requests.get(base + "/healthz", timeout=5).status_code == 200
                if sent >= 30 and len(_processes_counted(metrics_dir)) == 2:
                    break
            counted = _health_answers(base)
            scrapes = [_health_answers(base) for _ in range(6)]
            answer = requests.post(base + "/refund-request", json={"charge_id": charge["id"], "amount": 500},
                                   headers={"Authorization": f"Bearer {INTAKE_TOKEN}", "X-Request-Id": "ticket-77"},
                                   timeout=30)
    assert counted >= 31 and scrapes == [counted] * 6
    assert len(_processes_counted(metrics_dir)) == 2
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == "ticket-77"
    lines = [json.loads(line) for line in (tmp_path / "gunicorn.log").read_text().splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "ticket-77" and "executed as" in line["message"] for line in lines)
    [access] = [line for line in lines if line["logger"] == "gunicorn.access" and "/refund-request" in line["message"]]
    assert access["request_id"] == "ticket-77" and '"POST /refund-request HTTP/1.1" 200' in access["message"]
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)
