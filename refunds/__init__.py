"""Refund automation service: `create_app()` builds the Flask application."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask

from .config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from .approval_links import ApprovalLinks
    from .db import Database
    from .domain import Clock
    from .notifier import ApprovalLinkSource, Notifier
    from .rate_limit import LimiterObserver
    from .rules import PolicyConfig
    from .stripe_gateway import RefundGateway
    from .worker import Worker

__all__ = ["ConfigError", "Settings", "create_app"]

MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    gateway: RefundGateway | None = None,
    notifier: Notifier | None = None,
    clock: Clock | None = None,
) -> Flask:
    """Build the application. Without `settings`, reads the environment (never `.env`: the entry
    points that want it read it first, see `config.read_dotenv`).

    `gateway` and `notifier` replace Stripe and Slack (tests pass fakes). A missing or
    malformed setting exits with one line naming the variable. On the embedded SQLite
    default, pending migrations are applied here; PostgreSQL needs `flask --app app db upgrade`.
    """
    from . import api, approval_pages, cli, http_errors, logs, report_cli, slack_interactions, webhooks
    from .approval_links import ApprovalLinks
    from .db import Database
    from .intake_auth import IntakeAuth
    from .lifecycle import RefundLifecycle
    from .metrics import Metrics, instrument_gateway
    from .metrics import register as register_metrics
    from .policy_events import note_policy_version
    from .report_pages import bp as report_pages
    from .reports.schedule import ReportSchedule
    from .service import RefundService, utcnow
    from .stripe_gateway import StripeGateway
    from .worker import Worker

    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            raise SystemExit(f"configuration error: {exc}") from None
    logs.configure(settings.log_format)
    try:
        policy = settings.policy()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None

    db = Database(settings.database_url)
    migrated = db.upgrade() if settings.is_sqlite else []
    clock = clock or utcnow
    metrics = Metrics(db, clock)
    if gateway is None:
        gateway = StripeGateway(
            settings.stripe_secret_key,
            api_base=settings.stripe_api_base,
            max_network_retries=settings.stripe_max_network_retries,
            timeout_seconds=settings.stripe_timeout_seconds,
        )
        gateway = _rate_limited(gateway, settings, db, metrics)
    links = (ApprovalLinks(settings.approval_link_secret, ttl_seconds=settings.approval_link_ttl_seconds,
                           base_url=settings.public_base_url)
             if settings.approval_link_secret else None)
    if notifier is None:
        notifier = _notifier(settings, db, links, policy)
    # The one place Stripe calls are measured: every use case gets the gateway through here.
    gateway = instrument_gateway(gateway, metrics)
    service = RefundService(db, gateway, policy, clock=clock,
                            execution_lease=timedelta(seconds=settings.execution_lease_seconds),
                            retry_backoff=timedelta(seconds=settings.retry_backoff_seconds),
                            two_person_threshold=settings.two_person_threshold)
    note_policy_version(db, policy, clock())
    lifecycle = RefundLifecycle(db, gateway, clock=clock,
                                poll_after=timedelta(seconds=settings.refund_poll_after_seconds))
    worker = Worker(service, lifecycle, notifier, poll_seconds=settings.worker_poll_seconds,
                    slack_timeout_seconds=settings.slack_timeout_seconds,
                    escalate_after=_seconds(settings.pending_escalate_after_seconds),
                    expire_after=_seconds(settings.pending_expire_after_seconds),
                    digest_after=settings.slack_digest_after)

    app = Flask(__name__)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    logs.register(app)
    register_metrics(app, metrics, settings.metrics_token)
    app.extensions["refund_service"] = service
    app.extensions["migrations_applied_at_start"] = migrated
    app.extensions["refund_worker"] = worker
    worker.report_schedule = ReportSchedule.from_settings(settings)
    app.extensions["refund_lifecycle"] = lifecycle
    app.extensions["intake_auth"] = IntakeAuth(token=settings.intake_token,
                                               signing_secrets=settings.intake_signing_secrets)
    app.extensions["approval_links"] = links
    app.register_blueprint(api.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(approval_pages.bp)
    app.register_blueprint(slack_interactions.bp)
    app.register_blueprint(report_pages)
    http_errors.register(app)
    cli.register(app)
    report_cli.register(app, clock=clock)
    if settings.worker_in_process:
        _start_worker_on_first_request(app, worker)
    return app


def _start_worker_on_first_request(app: Flask, worker: Worker) -> None:
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


def _notifier(settings: Settings, db: Database, links: ApprovalLinks | None, policy: PolicyConfig) -> Notifier:
    """Slack (or the log when SLACK_WEBHOOK_URL is unset). With SLACK_APPROVAL_LINKS on, messages
    also carry one approval link per approver (needs APPROVAL_LINK_SECRET and PUBLIC_BASE_URL: a
    link without a host is no use in Slack)."""
    from .notifier import LogNotifier, SlackNotifier

    source = None
    if links is not None and settings.slack_approval_links:
        if links.base_url:
            source = _approval_link_source(db, links, policy, settings.two_person_threshold)
        else:
            logging.getLogger(__name__).warning(
                "SLACK_APPROVAL_LINKS is on but PUBLIC_BASE_URL is not set: Slack messages carry no approval links")
    options: dict[str, Any] = {
        "base_url": settings.public_base_url, "approval_links": source,
        "escalation_mention": settings.slack_escalation_mention,
        "escalate_after": _seconds(settings.pending_escalate_after_seconds),
    }
    if settings.slack_webhook_url:
        return SlackNotifier(settings.slack_webhook_url, timeout_seconds=settings.slack_timeout_seconds, **options)
    return LogNotifier(**options)


def _approval_link_source(db: Database, links: ApprovalLinks, policy: PolicyConfig,
                          two_person_threshold: int | None) -> ApprovalLinkSource:
    """Made when a message is delivered: a link for each active approver whose limit in its currency covers
    the amount.

    Everyone in the channel sees every link, so whoever reads the message can act as any listed
    approver: never for refunds under the two-person rule, where that would let one person
    approve twice.
    """
    from . import approvers
    from .approvals import required_approvals
    from .money import Money

    def pairs(pending_id: int, amount: int, currency: str) -> list[tuple[str, str]]:
        if required_approvals(policy, two_person_threshold, Money(amount, currency)) > 1:
            return []
        return [(a.name, links.url(pending_id, a.name, amount, currency, credential=a.token_hash))
                for a in approvers.list_all(db)
                if a.revoked_at is None and a.covers(Money(amount, currency))]

    return pairs


def _rate_limited(gateway: RefundGateway, settings: Settings, db: Database,
                  metrics: LimiterObserver) -> RefundGateway:
    """Stripe's calls within STRIPE_RATE_LIMIT, shared by every process (see `refunds.rate_limit`); `metrics`
    counts their waits and refusals."""
    from .rate_limit import RateLimitedGateway, limiter_for

    return RateLimitedGateway(gateway, limiter_for(settings, db), rate=settings.stripe_rate_limit,
                              observer=metrics)


def _seconds(value: int | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None

