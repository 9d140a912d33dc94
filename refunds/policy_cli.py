"""`flask --app app policy check FILE`: validate a policy file before it goes live.

Registered by `register(app)`; it reads nothing from the app (no database, no Stripe), so it works
on any machine that has the code.
"""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from .rules import PolicyError, load_policy

__all__ = ["policy_cli", "register"]

policy_cli = AppGroup("policy", help="The refund policy file (POLICY_FILE).")


@policy_cli.command("check", with_appcontext=False)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def policy_check(file: Path) -> None:
    """Validate FILE; print its version and how many rules it applies, or what is wrong (exit 1)."""
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    rules = len(policy.rule_names)
    click.echo(f"{file} is valid: version {policy.version[:12]}, {rules} rule{'s' if rules != 1 else ''}")


def register(app: Flask) -> None:
    """Add the `policy` command group to `app`'s command line."""
    app.cli.add_command(policy_cli)
