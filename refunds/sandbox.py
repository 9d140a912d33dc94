"""The `make run` sandbox: the Stripe stand-in with demo charges, a database of its own, a demo
approver, all kept in one directory so that a restart carries on where the last run stopped.

`sandbox/` (git-ignored; `make clean` removes it) holds `sandbox.db` (the service's database),
`stripe.json` (the stand-in's charges, refunds and idempotency keys, written after every change)
and `credentials.json` (the intake token, the approval link secret, the demo approver's token and
the stand-in's port: the tokens a user exported, and the links they opened, stay valid).

The sandbox never uses another database: DATABASE_URL, STRIPE_API_BASE, the intake and the link settings
from the environment or `.env` are replaced, and the banner says so.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_APPROVER", "REPLACED", "SANDBOX_DIR", "SANDBOX_STRIPE_KEY", "Sandbox", "SandboxNotRunning",
           "add_charge", "main", "seed_demo", "start"]

log = logging.getLogger(__name__)

SANDBOX_DIR = Path(__file__).resolve().parent.parent / "sandbox"
SANDBOX_STRIPE_KEY = "sk_test_sandbox_standin"  # only the local stand-in accepts it
DEMO_APPROVER = "demo-manager"
# Settings the sandbox always sets itself: none of a real deployment's may leak in.
REPLACED = ("DATABASE_URL", "STRIPE_API_BASE", "INTAKE_TOKEN", "INTAKE_SIGNING_SECRET", "APPROVAL_LINK_SECRET",
            "PUBLIC_BASE_URL")


@dataclass(frozen=True)
class Sandbox:
    """What a running sandbox is: where its parts are and the credentials to show the user."""

    directory: Path
    database_url: str
    stripe_url: str
    intake_token: str
    approver_token: str
    replaced: tuple[str, ...]  # settings from the environment or .env that the sandbox ignored


def start(public_base_url: str, directory: Path = SANDBOX_DIR) -> tuple[Sandbox, Any]:
    """Start the stand-in (state and port from the last run when there is one) and point the
    environment at it and at the sandbox's database. Returns the sandbox and the stand-in."""
    from standins.stripe_api import PersistentStripeStandIn

    directory.mkdir(exist_ok=True)
    credentials = _read(directory / "credentials.json")
    stand_in = PersistentStripeStandIn(SANDBOX_STRIPE_KEY, directory / "stripe.json")
    stripe_url = _start_on(stand_in, credentials.get("stripe_port"))
    seed_demo(stand_in)
    stand_in.save()

    replaced = tuple(name for name in REPLACED if os.environ.get(name, "").strip())
    database_url = f"sqlite:///{directory / 'sandbox.db'}"
    credentials.setdefault("intake_token", "sandbox-intake-" + secrets.token_urlsafe(16))
    credentials.setdefault("approval_link_secret", secrets.token_urlsafe(32))
    os.environ.pop("INTAKE_SIGNING_SECRET", None)
    os.environ.update({
        "STRIPE_SECRET_KEY": SANDBOX_STRIPE_KEY, "STRIPE_API_BASE": stripe_url, "DATABASE_URL": database_url,
        "INTAKE_TOKEN": credentials["intake_token"], "APPROVAL_LINK_SECRET": credentials["approval_link_secret"],
        "PUBLIC_BASE_URL": public_base_url,
    })
    credentials["approver_token"] = _demo_approver(credentials.get("approver_token"))
    credentials["stripe_port"] = stand_in.port
    _write(directory / "credentials.json", credentials)
    sandbox = Sandbox(directory, database_url, stripe_url, credentials["intake_token"],
                      credentials["approver_token"], replaced)
    return sandbox, stand_in


def seed_demo(stand_in: Any) -> None:
    """The demo charges: the stand-in's own set plus two more of each kind that can make a
    pending refund, so each path (auto-approve, approve, reject, link, two-person) can be tried
    more than once. Idempotent."""
    stand_in.seed_demo()
    existing = {r["id"] for r in stand_in.export_state()["charges"].values()}
    for number in (2, 3):
        for prefix, amount, currency, options in (
            ("ch_demo_small", 2500, "usd", {}),
            ("ch_demo_large", 20000, "usd", {}),
            ("ch_demo_jpy", 1500, "jpy", {}),
            ("ch_demo_pi", 12000, "eur", {"payment_intent_id": f"pi_demo_large_{number}"}),
        ):
            charge_id = f"{prefix}_{number}"
            if charge_id not in existing:
                stand_in.add_charge(amount, currency, charge_id=charge_id, **options)


def add_charge(amount: int, currency: str, directory: Path = SANDBOX_DIR) -> dict[str, Any]:
    """Create a charge on the running sandbox's stand-in (POST /v1/charges, as in Stripe's test mode).

    Raises `SandboxNotRunning` when no sandbox answers; ValueError when the stand-in refuses.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    port = _read(directory / "credentials.json").get("stripe_port")
    if not port:
        raise SandboxNotRunning("no sandbox has run here yet: start it with `make run`")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/charges", method="POST",
        data=urllib.parse.urlencode({"amount": amount, "currency": currency}).encode(),
        headers={"Authorization": f"Bearer {SANDBOX_STRIPE_KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            charge: dict[str, Any] = json.loads(answer.read())
            return charge
    except urllib.error.HTTPError as exc:
        raise ValueError(json.loads(exc.read())["error"]["message"]) from None
    except OSError:
        raise SandboxNotRunning("the sandbox is not running: start it with `make run`") from None


class SandboxNotRunning(Exception):
    """No sandbox answers on the port its last run used."""


def main(argv: list[str] | None = None) -> int:
    """`python -m refunds.sandbox charge AMOUNT [CURRENCY]`: a new demo charge in the running sandbox."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m refunds.sandbox", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    charge = commands.add_parser("charge", help="add a charge to the running sandbox's Stripe stand-in")
    charge.add_argument("amount", type=int, help="in minor units (cents; yen for JPY)")
    charge.add_argument("currency", nargs="?", default="usd")
    charge.add_argument("--sandbox-dir", type=Path, default=SANDBOX_DIR, help="the sandbox's directory (sandbox/)")
    args = parser.parse_args(argv)
    try:
        made = add_charge(args.amount, args.currency, args.sandbox_dir.resolve())
    except (SandboxNotRunning, ValueError) as exc:
        parser.exit(1, f"{exc}\n")
    from .money import Money

    sys.stdout.write(f"{made['id']}  {Money(made['amount'], made['currency'])}\n")
    return 0


def _start_on(stand_in: Any, port: int | None) -> str:
    """Listen on last run's port when it is free (the `sandbox-flask` alias names it), else any."""
    if port:
        try:
            url: str = stand_in.start(port=int(port))
            return url
        except OSError:
            log.info("the stand-in's port %s is taken; using another", port)
    url = stand_in.start()
    return url


def _demo_approver(token: str | None) -> str:
    """The demo approver's token: last run's while it still works, else a new one."""
    from . import approvers, create_app
    from .errors import ApproverNotFound
    from .service import utcnow

    app = create_app()
    db = app.extensions["refund_service"].db
    try:
        found = approvers.authenticate(db, token) if token else None
        if found is not None and found.name == DEMO_APPROVER:
            return token or ""
        try:
            approvers.revoke(db, DEMO_APPROVER, utcnow())
        except ApproverNotFound:
            pass
        new_token: str = approvers.add(db, DEMO_APPROVER, utcnow())
        return new_token
    finally:
        db.dispose()


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _write(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    temporary.chmod(0o600)  # tokens
    os.replace(temporary, path)


if __name__ == "__main__":
    raise SystemExit(main())
