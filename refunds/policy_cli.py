"""`flask --app app policy check FILE` and `policy replay CANDIDATE`: try a policy file before it goes live.

Registered by `register(app)` (or `app.cli.add_command(policy_cli)`). `check` reads nothing from the
app (no database, no Stripe), so it works on any machine that has the code; `replay` reads the
app's database, in one read transaction, and never writes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .policy_history import replay_history
from .rules import PolicyConfig, PolicyError, load_policy

__all__ = ["policy_cli", "register"]

policy_cli = AppGroup("policy", help="The refund policy file (POLICY_FILE).")


@policy_cli.command("check", with_appcontext=False)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def policy_check(file: Path) -> None:
    """Validate FILE; print its version and how many rules it applies, or what is wrong (exit 1)."""
    policy = _load_or_exit(file)
    rules = len(policy.rule_names)
    click.echo(f"{file} is valid: version {policy.version[:12]}, {rules} rule{'s' if rules != 1 else ''}")


@policy_cli.command("replay")
@click.argument("candidate", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="only requests made on or after this day (YYYY-MM-DD, UTC)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def policy_replay(candidate: Path, since: datetime | None, fmt: str) -> None:
    """Decide every past request again under CANDIDATE, on the facts recorded when it was decided, and print
    beside what happened: requests and money per currency auto-approved, reviewed or refused, and every
    request that changes outcome. Writes nothing."""
    policy = _load_or_exit(candidate)
    after = since.replace(tzinfo=UTC) if since is not None else None
    report, skipped = replay_history(current_app.extensions["refund_service"].db, policy, after)
    if fmt == "json":
        since_day = after.date().isoformat() if after else None
        click.echo(json.dumps({**report.as_json(), "since": since_day, "not_replayable": skipped}, indent=2))
        return
    replayed = sum(tally.count for tally in report.before.values())
    click.echo(f"{replayed} request(s) decided again" + (f", made since {after:%Y-%m-%d}" if after else ""))
    for line in report.lines():
        click.echo(line)
    for reason, count in sorted(skipped.items()):
        click.echo(f"not replayable ({reason}): {count}")


def _load_or_exit(file: Path) -> PolicyConfig:
    """The policy in `file`; on an invalid one, print what is wrong and exit 1."""
    try:
        return load_policy(file)
    except PolicyError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None


def register(app: Flask) -> None:
    """Add the `policy` command group to `app`'s command line."""
    app.cli.add_command(policy_cli)
