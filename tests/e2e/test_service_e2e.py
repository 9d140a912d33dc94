"""The real service under gunicorn, the Stripe and Slack stand-ins over HTTP: what a user sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN, STRIPE_KEY
from tests.e2e.conftest import ROOT, Service, service_env, start_gunicorn, stop


def test_small_refund_reaches_stripe_once_and_slack_hears_of_it(
    service: Service, stripe: StripeStandIn, slack: SlackStandIn
) -> None:
    charge = stripe.add_charge(3000, "usd")
    response = service.post("/refund-request", {"charge_id": charge["id"], "amount": 1200, "ticket_id": "Z-1"},
                            INTAKE_TOKEN, **{"Idempotency-Key": "zendesk-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "auto_approved"

    repeat = service.post("/refund-request", {"charge_id": charge["id"], "amount": 1200, "ticket_id": "Z-1"},
                          INTAKE_TOKEN, **{"Idempotency-Key": "zendesk-1"})
    assert repeat.json() == body
    assert stripe.refund_creations() == 1
    [refund] = stripe.refunds
    assert refund["id"] == body["refund_id"]
    assert refund["amount"] == 1200
    assert refund["metadata"]["refund_request_id"] == str(body["request_id"])
    assert refund["metadata"]["ticket_id"] == "Z-1"
    assert stripe.charge(charge["id"])["amount_refunded"] == 1200
    [message] = slack.wait_for(1)
    assert "Refund auto-approved" in message["text"]
    assert "12.00 USD" in message["text"]


def test_large_refund_is_approved_by_a_named_manager_and_executed_once(
    service: Service, stripe: StripeStandIn, slack: SlackStandIn
) -> None:
    charge = stripe.add_charge(20000, "eur", with_payment_intent=True)
    token = service.add_approver("maria")
    queued = service.post("/refund-request", {"payment_intent_id": charge["payment_intent"]}, INTAKE_TOKEN)
    assert queued.status_code == 202, queued.text
    pending_id = queued.json()["pending_id"]
    assert stripe.refund_creations() == 0

    queue = service.get("/pending-refunds", token).json()["pending"]
    assert [(p["pending_id"], p["amount"], p["currency"]) for p in queue] == [(pending_id, 20000, "eur")]

    approved = service.post("/approve-refund", {"pending_id": pending_id}, token)
    again = service.post("/approve-refund", {"pending_id": pending_id}, token)
    assert approved.status_code == 200, approved.text
    assert again.status_code == 409
    assert stripe.refund_creations() == 1
    assert stripe.charge(charge["id"])["refunded"] is True

    history = service.get(f"/refunds/{queued.json()['request_id']}", token).json()
    assert [(h["action"], h["actor"]) for h in history["history"]] == [
        ("requested", "intake"), ("needs_approval", "policy"), ("approved", "maria"),
        ("refunded", "stripe")]
    texts = [m["text"] for m in slack.wait_for(2)]
    assert "needs approval" in texts[0]
    assert "Refund approved" in texts[1]
    assert any("maria" in str(block) for block in slack.messages[1]["blocks"])


def test_rejected_refund_never_reaches_stripe_and_a_revoked_approver_is_refused(
    service: Service, stripe: StripeStandIn, slack: SlackStandIn
) -> None:
    charge = stripe.add_charge(9000, "usd")
    token = service.add_approver("li")
    pending_id = service.post("/refund-request", {"charge_id": charge["id"]}, INTAKE_TOKEN).json()["pending_id"]
    rejected = service.post("/reject-refund", {"pending_id": pending_id, "note": "outside policy"}, token)
    assert rejected.status_code == 200
    assert service.flask("approvers", "revoke", "li").returncode == 0
    assert "li\trevoked" in service.flask("approvers", "list").stdout
    assert service.get("/pending-refunds", token).status_code == 401
    assert stripe.refund_creations() == 0
    assert "outside policy" in str(slack.wait_for(2)[1])


def test_stripe_refusals_checked_before_calling_it_reach_the_client_as_409(
    service: Service, stripe: StripeStandIn
) -> None:
    refunded = stripe.add_charge(1000, "usd", amount_refunded=1000)
    disputed = stripe.add_charge(1000, "usd", disputed=True)
    small = stripe.add_charge(1000, "usd")
    answers = [
        service.post("/refund-request", {"charge_id": refunded["id"]}, INTAKE_TOKEN),
        service.post("/refund-request", {"charge_id": disputed["id"]}, INTAKE_TOKEN),
        service.post("/refund-request", {"charge_id": small["id"], "amount": 1001}, INTAKE_TOKEN),
        service.post("/refund-request", {"charge_id": "ch_doesnotexist"}, INTAKE_TOKEN),
    ]
    assert [(a.status_code, a.json()["error"]) for a in answers] == [
        (409, "charge_already_refunded"), (409, "charge_disputed"), (409, "amount_exceeds_refundable"),
        (404, "charge_not_found")]
    assert stripe.refund_creations() == 0


def test_nothing_the_service_logged_contains_a_secret(
    service: Service, stripe: StripeStandIn, slack: SlackStandIn
) -> None:
    charge = stripe.add_charge(30000, "usd")
    token = service.add_approver("ops")
    service.post("/refund-request", {"charge_id": charge["id"], "amount": 100}, INTAKE_TOKEN)
    pending = service.post("/refund-request", {"charge_id": charge["id"], "amount": 20000}, INTAKE_TOKEN).json()
    service.post("/approve-refund", {"pending_id": pending["pending_id"]}, token)
    service.post("/refund-request", {"charge_id": charge["id"]}, "wrong-" + INTAKE_TOKEN)
    service.post("/approve-refund", {"pending_id": 1}, token + "x")
    slack.wait_for(3)
    stop(service.process)  # flush everything it had to say

    logged = service.log_text()
    assert "POST /refund-request" in logged  # the log was really captured
    for secret in (STRIPE_KEY, INTAKE_TOKEN, token, slack.webhook_url):
        assert secret not in logged
    for message in slack.messages:
        assert INTAKE_TOKEN not in str(message) and token not in str(message)


def test_the_service_runs_without_slack_configured(
    stripe: StripeStandIn, tmp_path: Path
) -> None:
    env = service_env(f"sqlite:///{tmp_path}/refunds.db", stripe, None)
    log_path = tmp_path / "service.log"
    base_url, process = start_gunicorn(env, log_path, workers=1)
    try:
        svc = Service(base_url, env, log_path)
        charge = stripe.add_charge(1000, "usd")
        response = svc.post("/refund-request", {"charge_id": charge["id"]}, INTAKE_TOKEN)
        assert response.status_code == 200
        assert stripe.refund_creations() == 1
    finally:
        stop(process)
    assert "notification (Slack not configured): :white_check_mark: Refund auto-approved" in log_path.read_text()


def test_start_up_without_a_stripe_key_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "INTAKE_TOKEN": INTAKE_TOKEN, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "approvers", "list"], cwd=tmp_path,
                            env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode != 0
    assert "configuration error: STRIPE_SECRET_KEY is not set" in result.stderr


def test_the_worker_can_run_as_its_own_process(
    database_url: str, stripe: StripeStandIn, slack: SlackStandIn, tmp_path: Path
) -> None:
    env = service_env(database_url, stripe, slack, WORKER_IN_PROCESS="false", WORKER_POLL_SECONDS="0.1")
    log_path = tmp_path / "service.log"
    svc = Service("", env, log_path)
    if not database_url.startswith("sqlite"):
        assert svc.flask("db", "upgrade").returncode == 0
    svc.base_url, svc.process = start_gunicorn(env, log_path, workers=1)
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        charge = stripe.add_charge(1000, "usd")
        assert svc.post("/refund-request", {"charge_id": charge["id"]}, INTAKE_TOKEN).status_code == 200
        [message] = slack.wait_for(1, timeout=30)
        assert "auto-approved" in message["text"]
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
        stop(svc.process)
    assert worker.returncode == 0, err.decode()
