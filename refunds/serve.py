"""`make run`: serve the API with the worker in one process, on the embedded SQLite default.

With no STRIPE_SECRET_KEY configured it runs a loudly announced sandbox: the in-repo Stripe
stand-in (the one the tests use) with demo charges, a generated intake token and a demo
approver. The production entry point, `gunicorn 'app:create_app()'`, never does this.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
from typing import Any

from dotenv import load_dotenv
from gunicorn import glogging  # type: ignore[import-untyped]
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

log = logging.getLogger("refunds.serve")

SANDBOX_DATABASE_URL = "sqlite:///sandbox.db"
LINK_PATH = re.compile(r"/approval-links/[^/?\s]+")
SANDBOX_STRIPE_KEY = "sk_test_sandbox_standin"  # only the local stand-in accepts it


class AccessLog(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's access log, with approval link tokens cut out: an unspent link is a credential."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        environ = dict(environ)
        for key in ("RAW_URI", "PATH_INFO"):
            if key in environ:
                environ[key] = LINK_PATH.sub("/approval-links/<token>", environ[key])
        req.uri = LINK_PATH.sub("/approval-links/<token>", req.uri)
        req.path = LINK_PATH.sub("/approval-links/<token>", req.path)
        super().access(resp, req, environ, request_time)


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn with one worker process and threads: the single-box setup."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from refunds import create_app

        return create_app()


def start_sandbox() -> dict[str, str]:
    """Start the Stripe stand-in with demo charges; set the environment to use it. Returns what to show."""
    from standins.stripe_api import StripeStandIn

    stand_in = StripeStandIn(api_key=SANDBOX_STRIPE_KEY)
    base_url = stand_in.start()
    stand_in.seed_demo()
    os.environ["STRIPE_SECRET_KEY"] = SANDBOX_STRIPE_KEY
    os.environ["STRIPE_API_BASE"] = base_url
    os.environ.setdefault("DATABASE_URL", SANDBOX_DATABASE_URL)
    os.environ.setdefault("INTAKE_TOKEN", "sandbox-intake-" + secrets.token_urlsafe(16))
    os.environ.setdefault("APPROVAL_LINK_SECRET", secrets.token_urlsafe(32))  # links work in the sandbox too
    return {"stripe": base_url, "intake_token": os.environ["INTAKE_TOKEN"]}


def sandbox_approver() -> str:
    """A fresh token for the demo approver `demo-manager`, re-issued at every sandbox start."""
    from refunds import create_app
    from refunds.approvers import add, revoke
    from refunds.errors import ApproverNotFound
    from refunds.service import utcnow

    app = create_app()
    db = app.extensions["refund_service"].db
    try:
        revoke(db, "demo-manager", utcnow())
    except ApproverNotFound:
        pass
    token = add(db, "demo-manager", utcnow())
    db.dispose()
    return token


def banner(info: dict[str, str], approver_token: str, port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    line = "=" * 78
    return f"""
{line}
  SANDBOX MODE: no STRIPE_SECRET_KEY is set, so no real money moves.
  Stripe is the in-repo stand-in at {info['stripe']} with demo charges:
    ch_demo_small (25.00 USD)   ch_demo_large (200.00 USD)   ch_demo_jpy (1,500 JPY)
    ch_demo_refunded (already refunded)   ch_demo_disputed (disputed)   pi_demo_large (120.00 EUR)
  Database: {os.environ['DATABASE_URL']}

  export INTAKE_TOKEN={info['intake_token']}
  export APPROVER_TOKEN={approver_token}
  alias sandbox-flask='env DATABASE_URL={os.environ['DATABASE_URL']} STRIPE_SECRET_KEY={SANDBOX_STRIPE_KEY} \
STRIPE_API_BASE={info['stripe']} INTAKE_TOKEN={info['intake_token']} .venv/bin/flask --app app'

  curl -s {base}/refund-request -H "Authorization: Bearer $INTAKE_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"charge_id": "ch_demo_small", "amount": 1500}}'
  curl -s {base}/pending-refunds -H "Authorization: Bearer $APPROVER_TOKEN"   # each has your approval_link
  Set STRIPE_SECRET_KEY (in .env) to leave the sandbox.
{line}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_dotenv()
    if not os.environ.get("STRIPE_SECRET_KEY", "").strip():
        os.environ.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{args.port}")
        info = start_sandbox()
        log.warning(banner(info, sandbox_approver(), args.port))
    options = {
        "bind": f"{args.host}:{args.port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": args.threads,
        "accesslog": "-",
        "logger_class": AccessLog,
        "control_socket_disable": True,
    }
    _Gunicorn(options).run()


if __name__ == "__main__":
    main()
