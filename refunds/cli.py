"""Command-line tools: `flask --app app db upgrade | db copy | approvers ... | policy ... | worker`."""

from __future__ import annotations

import re
import signal
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import IntegrityError

from . import approvers
from .db import current_revision
from .errors import RefundError
from .limits import SLACK_USER_ID_PATTERN
from .money import Money, parse_major
from .policy_cli import policy_cli
from .service import Actor, RefundService, utcnow

db_cli = AppGroup("db", help="Database schema.")
approvers_cli = AppGroup("approvers", help="People who may approve or reject refunds.")


def _service() -> RefundService:
    service: RefundService = current_app.extensions["refund_service"]
    return service


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply all pending migrations (forward only) and say which."""
    db = _service().db
    # On SQLite, create_app() has already applied them: say so rather than "nothing to apply".
    applied = [*current_app.extensions.get("migrations_applied_at_start", []), *db.upgrade()]
    if applied:
        click.echo("applied " + ", ".join(applied))
    click.echo(f"database is at {current_revision(db.engine)}" + ("" if applied else ", nothing to apply"))


@db_cli.command("copy")
@click.option("--to", "target_url", required=True, metavar="URL",
              help="an empty database, e.g. postgresql+psycopg://user:password@host/refunds (migrated first)")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True, help="rows per insert")
def db_copy(target_url: str, batch_size: int) -> None:
    """Copy every table of DATABASE_URL into the empty database at URL, ids kept, and compare row counts.

    Stop the service and its workers first: rows written meanwhile would not be copied.
    """
    from sqlalchemy.engine import make_url

    from .db import make_engine
    from .db_copy import CopyRefused, copy_database

    source = _service().db
    if make_url(target_url) == source.engine.url:
        raise click.UsageError("--to names the database being copied")
    target = make_engine(target_url)
    shown = make_url(target_url).render_as_string(hide_password=True)
    try:
        counts = copy_database(source, target, batch_size=batch_size,
                               progress=lambda table, rows: click.echo(f"{table}: {rows} rows"))
    except CopyRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        target.dispose()
    click.echo(f"copied {sum(counts.values())} rows in {len(counts)} tables to {shown}; row counts match")


EMAIL_HELP = "an email address of NAME's: refunds requested by it are ones NAME may not approve"
SLACK_USER_HELP = "Slack member id (U... or W...: profile, \u22ee, Copy member ID) whose buttons act as NAME"


LIMIT_HELP = ("the most NAME may approve alone in one currency, as AMOUNT:CURRENCY in major units (500.00:usd, "
              "5000:jpy, 5.000:kwd); repeat for several currencies. No limit in a currency: may not approve it alone")


class LimitType(click.ParamType[Money, "str | Money"]):
    """`--limit 500.00:usd`: an amount in major units and its currency, read as `Money` (minor units)."""

    name = "AMOUNT:CURRENCY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Money:
        if isinstance(value, Money):
            return value
        amount, colon, currency = str(value).partition(":")
        if not colon:  # limits used to be bare minor units: refuse rather than guess which currency or scale
            self.fail(f"{value!r} has no currency: write AMOUNT:CURRENCY in major units, like 500.00:usd", param, ctx)
        try:
            return parse_major(amount, currency)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _slack_user(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(SLACK_USER_ID_PATTERN, value):
        raise click.BadParameter("a Slack member id looks like U0123ABCD (profile, \u22ee, Copy member ID)")
    return value


@approvers_cli.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(approvers.ROLES), default="approver", show_default=True,
              help="admins may also manage approvers through the API")
@click.option("--limit", "limits", type=LimitType(), multiple=True, help=LIMIT_HELP + " (default: no limit)")
@click.option("--slack-user", callback=_slack_user, default=None, help=SLACK_USER_HELP)
@click.option("--email", "emails", multiple=True, help=EMAIL_HELP + " (repeat for several)")
def approvers_add(name: str, role: str, limits: tuple[Money, ...], slack_user: str | None,
                  emails: tuple[str, ...]) -> None:
    """Create approver NAME and print their token. It is shown once; only its hash is kept."""
    try:
        token = approvers.add(_service().db, name, utcnow(), role=role, limits=limits,
                              slack_user_id=slack_user, emails=emails)
    except (RefundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"approver {name} added; their token (shown once, store it now):")
    click.echo(token)


@approvers_cli.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(approvers.ROLES), default=None, help="approver or admin")
@click.option("--limit", "limits", type=LimitType(), multiple=True,
              help=LIMIT_HELP + "; replaces all of NAME's limits")
@click.option("--no-limit", is_flag=True, help="remove all NAME's approval limits: any amount, any currency")
@click.option("--slack-user", callback=_slack_user, default=None, help=SLACK_USER_HELP)
@click.option("--add-email", "add_emails", multiple=True, help=EMAIL_HELP + " to add (repeat for several)")
@click.option("--remove-email", "remove_emails", multiple=True, help="an email address of NAME's to remove")
def approvers_set(name: str, role: str | None, limits: tuple[Money, ...], no_limit: bool, slack_user: str | None,
                  add_emails: tuple[str, ...], remove_emails: tuple[str, ...]) -> None:
    """Change active approver NAME's role, approval limits, Slack user or email addresses; their token stays."""
    if limits and no_limit:
        raise click.UsageError("give --limit or --no-limit, not both")
    if role is None and not limits and not no_limit and slack_user is None and not add_emails and not remove_emails:
        raise click.UsageError("nothing to change: give --role, --limit, --no-limit, --slack-user, --add-email "
                               "or --remove-email")
    try:
        approver = approvers.change(_service().db, name, role=role, limits=limits, no_limit=no_limit,
                                    slack_user_id=slack_user, add_emails=add_emails, remove_emails=remove_emails,
                                    now=utcnow())
    except (RefundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except IntegrityError:  # the unique Slack user constraint
        raise click.ClickException(f"Slack user {slack_user} is already linked to another approver.") from None
    click.echo(f"approver {approver.name}: {_describe(approver)}, {_emails(approver)}")


@approvers_cli.command("list")
def approvers_list() -> None:
    """List approvers: active or revoked, role, approval limits per currency, Slack user and email addresses."""
    for approver in approvers.list_all(_service().db):
        state = f"revoked {approver.revoked_at:%Y-%m-%d %H:%M}Z" if approver.revoked_at else "active"
        click.echo(f"{approver.name}\t{state}\tadded {approver.created_at:%Y-%m-%d %H:%M}Z\t{_emails(approver)}\t"
                   f"{_describe(approver)}")


def _describe(approver: approvers.Approver) -> str:
    limit = f"limit {', '.join(map(str, approver.limits))}" if approver.limits else "no limit"
    return f"{approver.role}, {limit}, slack {approver.slack_user_id or '-'}"


def _emails(approver: approvers.Approver) -> str:
    return f"emails {','.join(approver.emails) or '-'}"


@approvers_cli.command("revoke")
@click.argument("name")
def approvers_revoke(name: str) -> None:
    """Revoke NAME's token at once."""
    try:
        approvers.revoke(_service().db, name, utcnow())
    except RefundError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"approver {name} revoked")


@click.command("audit")
@with_appcontext
@click.argument("request_id", type=int)
def audit_command(request_id: int) -> None:
    """Print everything that happened to refund request REQUEST_ID: when, what, who, through which channel."""
    try:
        found = _service().history(request_id)
    except RefundError as exc:
        raise click.ClickException(exc.message) from None
    req = found["request"]
    amount = Money(req["amount"], req["currency"]) if req["amount"] is not None else "amount not known yet"
    click.echo(f"request {req['id']}: {amount} on {req['charge_id'] or req['payment_intent_id']}, "
               f"status {req['status']}")
    for row in found["history"]:
        detail = f"  {row['detail']}" if row["detail"] else ""
        when = f"{row['at']:%Y-%m-%dT%H:%M:%SZ}"
        click.echo(f"{when}  {row['action']:<16} {row['actor']:<20} {row['channel']:<8}{detail}")


@click.command("approve")
@with_appcontext
@click.argument("pending_id", type=int)
@click.option("--as", "name", required=True, help="the approver you are (their name)")
def approve_command(pending_id: int, name: str) -> None:
    """Approve pending refund PENDING_ID as approver NAME (all approval rules apply)."""
    try:
        outcome = _service().approve(pending_id, Actor(name, "cli"))
    except RefundError as exc:
        raise click.ClickException(exc.message) from None
    if outcome.status == "failed" and outcome.error is not None:
        raise click.ClickException(f"Stripe refused the refund: {outcome.error.code}: {outcome.error.message}")
    click.echo(f"{outcome.status}" + (f": refund {outcome.refund_id}" if outcome.refund_id else ""))


@click.command("reject")
@with_appcontext
@click.argument("pending_id", type=int)
@click.option("--as", "name", required=True, help="the approver you are (their name)")
@click.option("--note", default=None, help="why, kept in the log and shown in Slack")
def reject_command(pending_id: int, name: str, note: str | None) -> None:
    """Reject pending refund PENDING_ID as approver NAME."""
    try:
        _service().reject(pending_id, Actor(name, "cli"), note)
    except RefundError as exc:
        raise click.ClickException(exc.message) from None
    click.echo("rejected")


@click.command("worker")
@with_appcontext
def worker_command() -> None:
    """Run the background worker (Slack clicks and delivery, Stripe retries) in the foreground until stopped."""
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
    app.cli.add_command(audit_command)
    app.cli.add_command(approve_command)
    app.cli.add_command(reject_command)
    app.cli.add_command(policy_cli)
