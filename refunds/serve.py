"""`make run`: serve the API with the worker in one process, on the embedded SQLite default.

With no STRIPE_SECRET_KEY configured it runs a loudly announced sandbox (refunds/sandbox.py): the
in-repo Stripe stand-in (the one the tests use) with demo charges, its own database, an intake
token and a demo approver, all kept in `sandbox/` across restarts. The production entry point,
`gunicorn -c deploy/gunicorn.conf.py`, never does this.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Any

from gunicorn import glogging  # type: ignore[import-untyped]
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from .config import ConfigError, load_settings, read_dotenv
from .logs import JsonFormatter, logging_for
from .sandbox import SANDBOX_DIR, SANDBOX_STRIPE_KEY, Sandbox
from .sandbox import start as start_sandbox

__all__ = ["LINK_PATH", "AccessLog", "banner", "main"]

log = logging.getLogger("refunds.serve")

LINK_PATH = re.compile(r"/approval-links/[^/?\s]+")


class AccessLog(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's logs: approval link tokens cut out of the access log (an unspent link is a credential),
    JSON lines with the request's id under LOG_FORMAT=json."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        environ = dict(environ)
        for key in ("RAW_URI", "PATH_INFO"):
            if key in environ:
                environ[key] = LINK_PATH.sub("/approval-links/<token>", environ[key])
        req.uri = LINK_PATH.sub("/approval-links/<token>", req.uri)
        req.path = LINK_PATH.sub("/approval-links/<token>", req.path)
        request_id = next((value for name, value in resp.headers if name.lower() == "x-request-id"), None)
        with logging_for(request_id):
            super().access(resp, req, environ, request_time)

    def setup(self, cfg: Any) -> None:
        """gunicorn's handlers; with LOG_FORMAT=json, its lines are JSON objects too (see refunds/logs.py)."""
        super().setup(cfg)
        if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
            for handler in [*self.error_log.handlers, *self.access_log.handlers]:
                handler.setFormatter(JsonFormatter())


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


def banner(sandbox: Sandbox, port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    line = "=" * 78
    replaced = (f"\n  Ignored (the sandbox sets its own): {', '.join(sandbox.replaced)} from the environment or .env."
                if sandbox.replaced else "")
    return f"""
{line}
  SANDBOX MODE: no STRIPE_SECRET_KEY is set, so no real money moves.
  Stripe is the in-repo stand-in at {sandbox.stripe_url} with demo charges:
    ch_demo_small (25.00 USD)   ch_demo_large (200.00 USD)   ch_demo_jpy (1,500 JPY)
    ch_demo_pi / pi_demo_large (120.00 EUR)   and the same again as ..._2 and ..._3
    ch_demo_refunded (already refunded)   ch_demo_disputed (disputed)   more: make demo-charge AMOUNT=30000
  Database: {sandbox.database_url} (the sandbox's own, never another){replaced}
  Everything is kept in {sandbox.directory}/ across restarts; `make sandbox-clean` starts afresh.

  B={base}
  export INTAKE_TOKEN={sandbox.intake_token}
  export APPROVER_TOKEN={sandbox.approver_token}
  alias sandbox-flask='env FLASK_SKIP_DOTENV=1 DATABASE_URL={sandbox.database_url} \
STRIPE_SECRET_KEY={SANDBOX_STRIPE_KEY} STRIPE_API_BASE={sandbox.stripe_url} INTAKE_TOKEN={sandbox.intake_token} \
.venv/bin/flask --app app'

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
    parser.add_argument("--sandbox-dir", type=Path, default=SANDBOX_DIR,
                        help="where the sandbox keeps its database, Stripe state and tokens (default: sandbox/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    read_dotenv()
    sandboxed = not os.environ.get("STRIPE_SECRET_KEY", "").strip()
    if sandboxed:
        sandbox, _stand_in = start_sandbox(f"http://127.0.0.1:{args.port}", args.sandbox_dir.resolve())
        log.warning(banner(sandbox, args.port))
    try:
        settings = load_settings()  # here, once: a bad setting in a worker would make gunicorn restart it for ever
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    if not sandboxed:  # say what is real: this serves with a Stripe key from .env or the environment
        log.info("serving on http://%s:%d with Stripe at %s (%s key) and the database %s", args.host, args.port,
                 settings.stripe_api_base or "api.stripe.com", "live" if "_live_" in settings.stripe_secret_key
                 else "test", make_url(settings.database_url).render_as_string(hide_password=True))
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
