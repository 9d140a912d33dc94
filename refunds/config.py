"""Settings read from the environment, checked once at start-up.

Defaults live here; secrets only ever come from the environment (or `.env`).
A missing or malformed required setting raises `ConfigError` with one line naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .intake_auth import decode_signing_secret

DEFAULT_DATABASE_URL = "sqlite:///refunds.db"
DEFAULT_AUTO_APPROVE_THRESHOLD = 5000
MIN_SECRET_LENGTH = 16


def read_dotenv() -> None:
    """Add the variables of `.env` in the working directory (or a parent) to `os.environ`.

    Called by the entry points (`make run`, `deploy/gunicorn.conf.py`; the `flask` command reads
    `.env` itself), never by `create_app()`: a test, or any code that builds the app, sees only
    its own environment. Variables already set win. `FLASK_SKIP_DOTENV=1` (Flask's own switch,
    which the test suite sets) skips it here too.
    """
    from dotenv import find_dotenv, load_dotenv

    if os.environ.get("FLASK_SKIP_DOTENV", "").strip().lower() in {"1", "true", "yes"}:
        return
    path = find_dotenv(usecwd=True)
    if path:
        load_dotenv(path)


class ConfigError(Exception):
    """A required setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run. Secrets are excluded from `repr`."""

    stripe_secret_key: str = field(repr=False)
    intake_token: str | None = field(repr=False)
    # Signed intake: Standard Webhooks secrets (`whsec_...`), several while one is being rotated.
    intake_signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    database_url: str = DEFAULT_DATABASE_URL
    stripe_api_base: str | None = None
    stripe_max_network_retries: int = 2
    stripe_timeout_seconds: float = 20.0
    auto_approve_threshold: int = DEFAULT_AUTO_APPROVE_THRESHOLD
    slack_webhook_url: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    execution_lease_seconds: int = 120
    retry_backoff_seconds: float = 5.0
    slack_timeout_seconds: int = 10
    refund_poll_after_seconds: int = 1800
    worker_in_process: bool = True
    worker_poll_seconds: float = 1.0
    public_base_url: str | None = None
    # Approvals (issue 4): two-person rule, signed links, Slack buttons, escalation and expiry.
    two_person_threshold: int | None = None
    approval_link_secret: str | None = field(default=None, repr=False)
    approval_link_ttl_seconds: int = 86_400
    slack_approval_links: bool = False
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_response_url_prefix: str = "https://hooks.slack.com/"
    pending_escalate_after_seconds: int | None = 4 * 3600
    pending_expire_after_seconds: int | None = 72 * 3600
    slack_escalation_mention: str = "<!here>"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _require(env: Mapping[str, str], name: str, hint: str) -> str:
    value = _get(env, name)
    if value is None:
        raise ConfigError(f"{name} is not set: {hint}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _optional_int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """A whole number, or None when unset (or `off`), for settings that can be switched off."""
    raw = _get(env, name)
    if raw is not None and raw.lower() == "off":
        return None
    return _int(env, name, 0, minimum=0) if raw is not None else default


def _secret(env: Mapping[str, str], name: str, *, min_length: int) -> str | None:
    value = _get(env, name)
    if value is not None and len(value) < min_length:
        raise ConfigError(f"{name} must be at least {min_length} characters long")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _get(env, name)
    if value is not None and not value.startswith(schemes):
        # Never echo the value: webhook URLs are secrets.
        raise ConfigError(f"{name} must start with {' or '.join(schemes)}")
    return value


def _signing_secrets(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """`whsec_<base64>` secrets separated by spaces or commas, each decoded once here to refuse a bad one."""
    secrets = tuple(s for s in re.split(r"[\s,]+", _get(env, name) or "") if s)
    for number, secret in enumerate(secrets, start=1):
        try:
            decode_signing_secret(secret)
        except ValueError as exc:
            # Never echo the value: it is a secret.
            raise ConfigError(f"{name}: secret {number} of {len(secrets)} {exc} (expected whsec_<base64>, "
                              "several separated by spaces or commas)") from None
    return secrets


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build `Settings` from `env` (default: `os.environ`), then apply `overrides`.

    Raises `ConfigError` naming the first missing or malformed variable.
    """
    env = os.environ if env is None else env
    stripe_key = _require(
        env, "STRIPE_SECRET_KEY", "set it to your Stripe secret key (sk_live_... or sk_test_...)"
    )
    if not stripe_key.startswith(("sk_", "rk_")):
        raise ConfigError("STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_... or rk_...)")
    intake_token = _get(env, "INTAKE_TOKEN")
    if intake_token is not None and len(intake_token) < MIN_SECRET_LENGTH:
        raise ConfigError(f"INTAKE_TOKEN must be at least {MIN_SECRET_LENGTH} characters long")
    intake_signing_secrets = _signing_secrets(env, "INTAKE_SIGNING_SECRET")
    if intake_token is None and not intake_signing_secrets:
        raise ConfigError(
            "INTAKE_TOKEN is not set, nor INTAKE_SIGNING_SECRET: set INTAKE_TOKEN to the secret your support tool "
            "sends as 'Authorization: Bearer ...', or INTAKE_SIGNING_SECRET to its Standard Webhooks secret(s)"
        )
    database_url = _get(env, "DATABASE_URL") or DEFAULT_DATABASE_URL
    if not database_url.startswith(("sqlite", "postgresql")):
        raise ConfigError("DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL")
    settings = Settings(
        stripe_secret_key=stripe_key,
        intake_token=intake_token,
        intake_signing_secrets=intake_signing_secrets,
        database_url=database_url,
        stripe_api_base=_url(env, "STRIPE_API_BASE", ("http://", "https://")),
        stripe_max_network_retries=_int(env, "STRIPE_MAX_NETWORK_RETRIES", 2, minimum=0),
        stripe_timeout_seconds=_float(env, "STRIPE_TIMEOUT_SECONDS", 20.0),
        auto_approve_threshold=_int(
            env, "AUTO_APPROVE_THRESHOLD", DEFAULT_AUTO_APPROVE_THRESHOLD, minimum=0
        ),
        slack_webhook_url=_url(env, "SLACK_WEBHOOK_URL", ("https://", "http://")),
        stripe_webhook_secret=_get(env, "STRIPE_WEBHOOK_SECRET"),
        execution_lease_seconds=_int(env, "EXECUTION_LEASE_SECONDS", 120, minimum=1),
        retry_backoff_seconds=_float(env, "RETRY_BACKOFF_SECONDS", 5.0),
        slack_timeout_seconds=_int(env, "SLACK_TIMEOUT_SECONDS", 10, minimum=1),
        refund_poll_after_seconds=_int(env, "REFUND_POLL_AFTER_SECONDS", 1800, minimum=1),
        worker_in_process=_bool(env, "WORKER_IN_PROCESS", True),
        worker_poll_seconds=_float(env, "WORKER_POLL_SECONDS", 1.0),
        public_base_url=_url(env, "PUBLIC_BASE_URL", ("https://", "http://")),
        two_person_threshold=_optional_int(env, "TWO_PERSON_THRESHOLD"),
        approval_link_secret=_secret(env, "APPROVAL_LINK_SECRET", min_length=32),
        approval_link_ttl_seconds=_int(env, "APPROVAL_LINK_TTL", 86_400, minimum=60),
        slack_approval_links=_bool(env, "SLACK_APPROVAL_LINKS", False),
        slack_signing_secret=_get(env, "SLACK_SIGNING_SECRET"),
        slack_response_url_prefix=_get(env, "SLACK_RESPONSE_URL_PREFIX") or "https://hooks.slack.com/",
        pending_escalate_after_seconds=_optional_int(env, "PENDING_ESCALATE_AFTER", default=4 * 3600),
        pending_expire_after_seconds=_optional_int(env, "PENDING_EXPIRE_AFTER", default=72 * 3600),
        slack_escalation_mention=_get(env, "SLACK_ESCALATION_MENTION") or "<!here>",
    )
    if overrides:
        settings = Settings(**{**settings.__dict__, **overrides})
    return settings
