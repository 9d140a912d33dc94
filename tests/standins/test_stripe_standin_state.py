"""The Stripe stand-in as the sandbox and a user run it: state kept across restarts, and the
standalone server's port and errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import requests

from standins.stripe_api import DEFAULT_API_KEY, DEFAULT_PORT, PersistentStripeStandIn

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk_test_state_0123456789"


def refund(base_url: str, charge_id: str, amount: int, key: str) -> requests.Response:
    return requests.post(base_url + "/v1/refunds", data={"charge": charge_id, "amount": amount}, timeout=10,
                         headers={"Authorization": f"Bearer {KEY}", "Idempotency-Key": key})


def test_a_persistent_stand_in_remembers_charges_refunds_and_idempotency_keys_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    with PersistentStripeStandIn(KEY, state) as first:
        charge = first.add_charge(2500, "usd")
        made = refund(first.base_url, charge["id"], 1500, "key-1")
        assert made.status_code == 200, made.text

    with PersistentStripeStandIn(KEY, state) as second:
        assert second.charge(charge["id"])["amount_refunded"] == 1500
        replay = refund(second.base_url, charge["id"], 1500, "key-1")
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["id"] == made.json()["id"]
        too_much = refund(second.base_url, charge["id"], 1500, "key-2")
        assert too_much.json()["error"]["code"] == "amount_too_large"
        assert [r["id"] for r in second.refunds] == [made.json()["id"]]
        assert second.refund_creations() == 1


def test_the_standalone_stand_in_on_a_taken_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "standins.stripe_api", "--port", str(port)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                                timeout=30, check=False)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line
    assert "--port 0" in line


def test_the_standalone_stand_ins_help_names_its_port_and_key() -> None:
    result = subprocess.run([sys.executable, "-m", "standins.stripe_api", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30, check=True)
    assert f"default {DEFAULT_PORT}" in result.stdout and f"default {DEFAULT_API_KEY}" in result.stdout
