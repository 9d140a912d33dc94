"""Refund automation service: `create_app()` builds the Flask application."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from dotenv import load_dotenv
from flask import Flask

from .config import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "create_app"]

MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    gateway: Any | None = None,
    notifier: Any | None = None,
    clock: Any | None = None,
) -> Flask:
    """Build the application. Without `settings`, reads `.env` and the environment.

    `gateway` and `notifier` replace Stripe and Slack (tests pass fakes). A missing or
    malformed setting exits with one line naming the variable. On the embedded SQLite
    default, pending migrations are applied here; PostgreSQL needs `flask --app app db upgrade`.
    """
    from . import api, cli, http_errors, webhooks
    from .db import Database
    from .lifecycle import RefundLifecycle
    from .notifier import LogNotifier, SlackNotifier
    from .policy import Policy
    from .service import RefundService, utcnow
    from .stripe_gateway import StripeGateway
    from .worker import Worker

    if settings is None:
        load_dotenv()
        try:
            settings = load_settings()
        except ConfigError as exc:
            raise SystemExit(f"configuration error: {exc}") from None
    _configure_logging()

    db = Database(settings.database_url)
    if settings.is_sqlite:
        db.upgrade()
    if gateway is None:
        gateway = StripeGateway(
            settings.stripe_secret_key,
            api_base=settings.stripe_api_base,
            max_network_retries=settings.stripe_max_network_retries,
            timeout_seconds=settings.stripe_timeout_seconds,
        )
    if notifier is None:
        notifier = (
            SlackNotifier(settings.slack_webhook_url, base_url=settings.public_base_url,
                          timeout_seconds=settings.slack_timeout_seconds)
            if settings.slack_webhook_url
            else LogNotifier(base_url=settings.public_base_url)
        )
    clock = clock or utcnow
    service = RefundService(db, gateway, Policy(settings.auto_approve_threshold), clock=clock,
                            execution_lease=timedelta(seconds=settings.execution_lease_seconds),
                            retry_backoff=timedelta(seconds=settings.retry_backoff_seconds))
    lifecycle = RefundLifecycle(db, gateway, clock=clock,
                                poll_after=timedelta(seconds=settings.refund_poll_after_seconds))
    worker = Worker(service, lifecycle, notifier, poll_seconds=settings.worker_poll_seconds)

    app = Flask(__name__)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    app.extensions["refund_service"] = service
    app.extensions["refund_worker"] = worker
    app.extensions["refund_lifecycle"] = lifecycle
    app.register_blueprint(api.bp)
    app.register_blueprint(webhooks.bp)
    http_errors.register(app)
    cli.register(app)
    if settings.worker_in_process:
        _start_worker_on_first_request(app, worker)
    return app


def _start_worker_on_first_request(app: Flask, worker: Any) -> None:
    """Start the in-process worker in the process that serves requests.

    Not at creation: gunicorn may create the app before forking, and CLI commands create it
    without serving anything.
    """
    lock = threading.Lock()
    started = False

    @app.before_request
    def _ensure_worker() -> None:
        nonlocal started
        if started:
            return
        with lock:
            if not started:
                worker.start_thread()
                started = True


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # stripe-python logs every request at INFO; our adapter logs what matters.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
