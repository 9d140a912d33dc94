"""`flask --app app report daily | range` and `flask --app app sync`: the daily report in a terminal, as JSON
or CSV, posted to Slack; and the Stripe data it needs. `register(app)` adds both commands.

The report's zone defaults to the REPORT_TZ setting (UTC when unset).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from .config import Settings
from .db import Database
from .errors import RefundError
from .reports import DailyReport, daily_report, day_window
from .reports.posting import ReportNotPosted, post_report
from .reports.render import CSV_HEADER, as_json, csv_rows, table
from .reports.sync import StripeLists, cache_charges, import_refunds

__all__ = ["register"]

Clock = Callable[[], datetime]
FORMATS = ("table", "json", "csv")
DAY = click.DateTime(formats=["%Y-%m-%d"])


def register(app: Flask, *, clock: Clock | None = None, stripe: StripeLists | None = None) -> None:
    """Add `report` and `sync` to `app`'s command line. `clock` (default: the system's UTC time) and
    `stripe` (default: a `StripeGateway` from the app's settings, made when `sync` runs) are for tests."""
    app.extensions["report_cli"] = {"clock": clock or (lambda: datetime.now(UTC)), "stripe": stripe}
    app.cli.add_command(report_cli)
    app.cli.add_command(sync_command)


report_cli = AppGroup("report", help="The daily refund report (a calendar day in REPORT_TZ).")


@report_cli.command("daily")
@click.option("--date", "day", type=DAY, default=None, help="the day, YYYY-MM-DD (default: yesterday)")
@click.option("--tz", "zone", default=None, help="IANA time zone of the day (default: REPORT_TZ, else UTC)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--post-slack", is_flag=True, help="also post it to SLACK_WEBHOOK_URL")
def report_daily(day: datetime | None, zone: str | None, fmt: str, post_slack: bool) -> None:
    """One day's refunds: paths, amounts per currency, resolution times, refund rate by product, queue."""
    tz = _zone(zone)
    now = _clock()()
    which = day.date() if day else now.astimezone(tz).date() - timedelta(days=1)
    report = _report(which, tz, now)
    _write([report], fmt, one=True)
    if post_slack:
        _post(report)


@report_cli.command("range")
@click.option("--from", "first", type=DAY, required=True, help="first day, YYYY-MM-DD")
@click.option("--to", "last", type=DAY, required=True, help="last day, YYYY-MM-DD (included)")
@click.option("--tz", "zone", default=None, help="IANA time zone of the days (default: REPORT_TZ, else UTC)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
def report_range(first: datetime, last: datetime, zone: str | None, fmt: str) -> None:
    """The daily report for each day from --from to --to, one day at a time (CSV streams)."""
    if last < first:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    tz, now = _zone(zone), _clock()()
    days = (first.date() + timedelta(days=n) for n in range((last - first).days + 1))
    _write((_report(d, tz, now) for d in days), fmt)


@click.command("sync")
@with_appcontext
@click.option("--since", type=DAY, required=True, help="first day to read from Stripe, YYYY-MM-DD (in --tz)")
@click.option("--tz", "zone", default=None, help="IANA time zone of --since (default: REPORT_TZ, else UTC)")
def sync_command(since: datetime, zone: str | None) -> None:
    """Import refunds made outside the service since --since, and refresh the charge cache the report's
    refund rates and fees come from. Safe to run again: nothing is imported twice."""
    start = int(day_window(since.date(), _zone(zone))[0].timestamp())
    stripe, db, now = _stripe(), _database(), _clock()()
    try:
        with click.progressbar(stripe.list_refunds(created_gte=start), label="refunds") as refunds:
            imported = import_refunds(db, refunds)
        with click.progressbar(stripe.list_charges(created_gte=start), label="charges") as charges:
            cached = cache_charges(db, charges, now=now)
    except RefundError as exc:
        # Each batch is committed as it is read: what came before the failure is kept, and a new run
        # skips what it already has.
        raise click.ClickException(f"Stripe: {exc.message} ({exc.code}); what was read before is saved: "
                                   "run sync again") from None
    click.echo(f"refunds: {imported.seen} listed by Stripe, {imported.new} made outside the service imported")
    click.echo(f"charges: {cached.seen} listed by Stripe, {cached.new} new in the cache")


def _report(day: date, tz: ZoneInfo, now: datetime) -> DailyReport:
    with _database().read() as conn:
        return daily_report(conn, day, tz, now=now)


def _write(reports: Iterable[DailyReport], fmt: str, *, one: bool = False) -> None:
    """Each report as it comes (a range is never held whole): tables one after another, CSV rows, or JSON:
    one object for `one` day, else an array."""
    if fmt == "csv":
        writer = csv.writer(_Echo())
        writer.writerow(CSV_HEADER)
        for report in reports:
            writer.writerows(csv_rows(report))
    elif fmt == "json" and one:
        click.echo(json.dumps(as_json(next(iter(reports)))))
    elif fmt == "json":
        for n, report in enumerate(reports):
            click.echo(("[" if n == 0 else ",\n") + json.dumps(as_json(report)), nl=False)
        click.echo("]")
    else:
        for n, report in enumerate(reports):
            click.echo(("\n" if n else "") + table(report), nl=False)


class _Echo:
    """A file for `csv.writer` that writes through click, so the CLI runner and pipes see every row at once."""

    def write(self, text: str) -> None:
        click.echo(text, nl=False)


def _post(report: DailyReport) -> None:
    settings = current_app.config["SETTINGS"]
    if not settings.slack_webhook_url:
        raise click.ClickException("SLACK_WEBHOOK_URL is not set: the report was not posted")
    try:
        post_report(settings.slack_webhook_url, report, timeout_seconds=settings.slack_timeout_seconds)
    except ReportNotPosted as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("posted to Slack", err=True)


def _zone(name: str | None) -> ZoneInfo:
    settings: Settings = current_app.config["SETTINGS"]
    key = name or settings.report_tz
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"{key!r} is not an IANA time zone (Europe/Paris, America/New_York, UTC)",
                                 param_hint="--tz or REPORT_TZ") from None


def _clock() -> Clock:
    clock: Clock = current_app.extensions["report_cli"]["clock"]
    return clock


def _database() -> Database:
    db: Database = current_app.extensions["refund_service"].db
    return db


def _stripe() -> StripeLists:
    stripe: StripeLists | None = current_app.extensions["report_cli"]["stripe"]
    if stripe is not None:
        return stripe
    from .stripe_gateway import StripeGateway

    settings = current_app.config["SETTINGS"]
    return StripeGateway(settings.stripe_secret_key, api_base=settings.stripe_api_base,
                         max_network_retries=settings.stripe_max_network_retries,
                         timeout_seconds=settings.stripe_timeout_seconds)
