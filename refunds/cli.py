"""Command-line tools: `flask --app app db upgrade | approvers ... | worker`."""

from __future__ import annotations

import signal
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from . import approvers
from .errors import RefundError
from .service import RefundService, utcnow

db_cli = AppGroup("db", help="Database schema.")
approvers_cli = AppGroup("approvers", help="People who may approve or reject refunds.")


def _service() -> RefundService:
    service: RefundService = current_app.extensions["refund_service"]
    return service


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply all pending migrations (forward only)."""
    _service().db.upgrade()
    click.echo("database is up to date")


@approvers_cli.command("add")
@click.argument("name")
def approvers_add(name: str) -> None:
    """Create approver NAME and print their token. It is shown once; only its hash is kept."""
    try:
        token = approvers.add(_service().db, name, utcnow())
    except RefundError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"approver {name} added; their token (shown once, store it now):")
    click.echo(token)


@approvers_cli.command("list")
def approvers_list() -> None:
    """List approvers and whether their token is active."""
    for approver in approvers.list_all(_service().db):
        state = f"revoked {approver.revoked_at:%Y-%m-%d %H:%M}Z" if approver.revoked_at else "active"
        click.echo(f"{approver.name}\t{state}\tadded {approver.created_at:%Y-%m-%d %H:%M}Z")


@approvers_cli.command("revoke")
@click.argument("name")
def approvers_revoke(name: str) -> None:
    """Revoke NAME's token at once."""
    try:
        approvers.revoke(_service().db, name, utcnow())
    except RefundError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"approver {name} revoked")


@click.command("worker")
def worker_command() -> None:
    """Run the background worker (Slack delivery, Stripe retries) in the foreground until stopped."""
    worker = current_app.extensions["refund_worker"]

    def _stop(*_: Any) -> None:
        worker.stop(timeout=0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run_forever()


def register(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(approvers_cli)
    app.cli.add_command(worker_command)
