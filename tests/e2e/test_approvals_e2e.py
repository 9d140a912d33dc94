"""A manager approves from a link on their phone, a second one with curl: the two-person flow end to end."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn
from tests.conftest import INTAKE_TOKEN
from tests.e2e.conftest import Service, service_env, start_gunicorn, stop

LINK_SECRET = "e2e-link-secret-0123456789abcdefghijkl"


def test_two_approvers_one_by_api_one_by_signed_link_execute_the_refund_once(
    database_url: str, stripe: StripeStandIn, slack: SlackStandIn, tmp_path: Path
) -> None:
    env = service_env(database_url, stripe, slack, TWO_PERSON_THRESHOLD="10000",
                      APPROVAL_LINK_SECRET=LINK_SECRET, PUBLIC_BASE_URL="https://refunds.example")
    svc = Service("", env, tmp_path / "service.log")
    if not database_url.startswith("sqlite"):
        assert svc.flask("db", "upgrade").returncode == 0
    svc.base_url, svc.process = start_gunicorn(env, svc.log_path)
    try:
        maria, li = svc.add_approver("maria"), svc.add_approver("li")
        charge = stripe.add_charge(30_000, "usd")
        queued = svc.post("/refund-request", {"charge_id": charge["id"], "amount": 25_000,
                                              "requested_by": "sam@support.example"}, INTAKE_TOKEN).json()
        first = svc.post("/approve-refund", {"pending_id": queued["pending_id"]}, maria)
        assert (first.status_code, first.json()["status"]) == (202, "awaiting_second_approval")
        assert stripe.refund_creations() == 0

        [item] = svc.get("/pending-refunds", li).json()["pending"]
        path = item["approval_link"].removeprefix("https://refunds.example")
        phone = requests.Session()
        phone.headers["User-Agent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"
        for _ in range(3):  # the unfurler and the phone's prefetch look first
            assert requests.get(svc.base_url + path, timeout=10,
                                headers={"User-Agent": "Slackbot-LinkExpanding 1.0"}).status_code == 200
        page = phone.get(svc.base_url + path, timeout=10)
        assert "250.00 USD" in page.text and "maria" in page.text
        assert stripe.refund_creations() == 0
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        done = phone.post(svc.base_url + path, data={"csrf_token": csrf.group(1), "action": "approve"}, timeout=30)
        assert done.status_code == 200 and "Approved by li" in done.text

        assert stripe.refund_creations() == 1
        history = svc.get(f"/refunds/{queued['request_id']}", maria).json()
        assert [(a["approver"], a["channel"]) for a in history["approval"]["approvals"]] == [
            ("maria", "api"), ("li", "link")]
        assert history["status"] == "succeeded"
        texts = [m["text"] for m in slack.wait_for(3)]
        assert "needs approval" in texts[0] and "Refund approved" in texts[-1]
    finally:
        stop(svc.process)
    assert LINK_SECRET not in svc.log_text()
