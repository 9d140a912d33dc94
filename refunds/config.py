"""Settings read from the environment, checked once at start-up.

`Settings` is the one table of settings: each field names its environment variable, how that
variable is parsed and checked, whether it is a secret, and a one-line help; the field's default
is the default. `load_settings` reads every variable the table names, and nothing else.
Secrets only ever come from the environment (or `.env`, read by the entry points).
A missing or malformed required setting raises `ConfigError` with one line naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

from .intake_auth import decode_signing_secret

if TYPE_CHECKING:
    from .rules import PolicyConfig

__all__ = ["DEFAULT_DATABASE_URL", "VARIABLES", "ConfigError", "Settings", "Var", "load_settings", "read_dotenv"]

DEFAULT_DATABASE_URL = "sqlite:///refunds.db"  # also read by migrations/env.py


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


# How a variable's text becomes a value: `parse(text, name)` gets the stripped, non-empty text
# and raises `ConfigError` naming `name` when it is malformed.
Parse = Callable[[str, str], Any]


def text(raw: str, name: str) -> str:
    """Any text, as given (stripped)."""
    return raw


def whole(minimum: int) -> Parse:
    """A whole number of at least `minimum`."""

    def parse(raw: str, name: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    return parse


def whole_or_off(raw: str, name: str) -> int | None:
    """A whole number, or None for `off`: for durations that can be switched off."""
    return None if raw.lower() == "off" else whole(0)(raw, name)


def positive(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def time_zone(raw: str, name: str) -> str:
    """An IANA time zone name (Europe/Paris, America/New_York, UTC)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name} must be an IANA time zone such as Europe/Paris or UTC, got {raw!r}") from None
    return raw


def clock_time(raw: str, name: str) -> str:
    """A time of day as HH:MM (24-hour clock)."""
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", raw):
        raise ConfigError(f"{name} must be a time of day as HH:MM, such as 07:30, got {raw!r}")
    return raw


def flag(raw: str, name: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def long_secret(min_length: int) -> Parse:
    def parse(raw: str, name: str) -> str:
        if len(raw) < min_length:
            raise ConfigError(f"{name} must be at least {min_length} characters long")
        return raw

    return parse


def url(*schemes: str, expected: str | None = None) -> Parse:
    """A URL starting with one of `schemes`; the error says `expected` (default: the schemes)."""

    def parse(raw: str, name: str) -> str:
        if not raw.startswith(schemes):
            # Never echo the value: webhook URLs are secrets.
            raise ConfigError(f"{name} must {expected or 'start with ' + ' or '.join(schemes)}")
        return raw

    return parse


def choice(*options: str) -> Parse:
    """One of `options`, in any case; the value is the option as written here."""

    def parse(raw: str, name: str) -> str:
        if raw.lower() not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
        return raw.lower()

    return parse
def policy_file(raw: str, name: str) -> str:
    """A path to a policy file that reads and validates (`rules.load_policy`); the error is the policy's one line
    naming the file, the key and what is wrong."""
    from .rules import PolicyError, load_policy

    try:
        load_policy(raw)
    except PolicyError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return raw


def currency_code(raw: str, name: str) -> str:
    """A currency code of 3 letters (lowercased)."""
    if not re.fullmatch(r"[A-Za-z]{3}", raw):
        raise ConfigError(f"{name} must be a currency code of 3 letters, like usd, got {raw!r}")
    return raw.lower()


def stripe_key(raw: str, name: str) -> str:
    if not raw.startswith(("sk_", "rk_")):
        raise ConfigError(f"{name} must be a Stripe secret or restricted key (sk_... or rk_...)")
    return raw


def signing_secrets(raw: str, name: str) -> tuple[str, ...]:
    """`whsec_<base64>` secrets separated by spaces or commas, each decoded once here to refuse a bad one."""
    secrets = tuple(s for s in re.split(r"[\s,]+", raw) if s)
    for number, secret in enumerate(secrets, start=1):
        try:
            decode_signing_secret(secret)
        except ValueError as exc:
            # Never echo the value: it is a secret.
            raise ConfigError(f"{name}: secret {number} of {len(secrets)} {exc} (expected whsec_<base64>, "
                              "several separated by spaces or commas)") from None
    return secrets


def _intake_can_authenticate(values: Mapping[str, Any]) -> None:
    if values["intake_token"] is None and not values["intake_signing_secrets"]:
        raise ConfigError(
            "INTAKE_TOKEN is not set, nor INTAKE_SIGNING_SECRET: set INTAKE_TOKEN to the secret your support tool "
            "sends as 'Authorization: Bearer ...', or INTAKE_SIGNING_SECRET to its Standard Webhooks secret(s)"
        )


@dataclass(frozen=True)
class Var:
    """One environment variable: its name, how it is parsed, whether it is a secret, what it is for.

    An unset or blank variable takes the field's default (`None` when the field has none), unless
    `required` is given: then it is refused, with `required` saying what to set it to. `then` is a
    check over the values read so far, run right after this one (for rules that join several).
    """

    name: str
    parse: Parse
    help: str
    secret: bool = False
    required: str | None = None
    then: Callable[[Mapping[str, Any]], None] | None = None

    def read(self, env: Mapping[str, str], default: Any) -> Any:
        raw = (env.get(self.name) or "").strip()
        if raw:
            return self.parse(raw, self.name)
        if self.required is not None:
            raise ConfigError(f"{self.name} is not set: {self.required}")
        return default


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the service needs to run, one field per environment variable (see `Var`).

    Secrets are excluded from `repr`. Read in this order: the first bad variable is the one named.
    """

    stripe_secret_key: Annotated[str, Var(
        "STRIPE_SECRET_KEY", stripe_key, "your Stripe secret (sk_...) or restricted (rk_...) key", secret=True,
        required="set it to your Stripe secret key (sk_live_... or sk_test_...)")]
    intake_token: Annotated[str | None, Var(
        "INTAKE_TOKEN", long_secret(16), "the secret your support tool sends as 'Authorization: Bearer ...'",
        secret=True)]
    # Signed intake: Standard Webhooks secrets (`whsec_...`), several while one is being rotated.
    intake_signing_secrets: Annotated[tuple[str, ...], Var(
        "INTAKE_SIGNING_SECRET", signing_secrets, "Standard Webhooks secret(s) whsec_<base64> signing intake requests",
        secret=True, then=_intake_can_authenticate)] = ()
    database_url: Annotated[str, Var(
        "DATABASE_URL", url("sqlite", "postgresql", expected="be a sqlite:/// or postgresql+psycopg:// URL"),
        "sqlite:/// (migrated at start) or postgresql+psycopg:// (run `flask db upgrade`)")] = DEFAULT_DATABASE_URL
    stripe_api_base: Annotated[str | None, Var(
        "STRIPE_API_BASE", url("http://", "https://"), "another address for the Stripe API (stripe-mock, the stand-in)"
    )] = None
    stripe_max_network_retries: Annotated[int, Var(
        "STRIPE_MAX_NETWORK_RETRIES", whole(0), "how many times stripe-python retries a failed network call")] = 2
    stripe_timeout_seconds: Annotated[float, Var(
        "STRIPE_TIMEOUT_SECONDS", positive, "seconds before a Stripe call times out")] = 20.0
    auto_approve_threshold: Annotated[int, Var(
        "AUTO_APPROVE_THRESHOLD", whole(0), "without POLICY_FILE: refunds at or under this many minor units of "
        "AUTO_APPROVE_CURRENCY execute at once")] = 5000
    auto_approve_currency: Annotated[str, Var(
        "AUTO_APPROVE_CURRENCY", currency_code, "without POLICY_FILE: the one currency auto-approved; others go to "
        "review")] = "usd"
    # Issue 9: the refund policy file (TOML); unset: the article's policy, from the two settings above.
    policy_file: Annotated[str | None, Var(
        "POLICY_FILE", policy_file, "the refund policy (TOML, see deploy/policy.example.toml); unset: one threshold"
    )] = None
    slack_webhook_url: Annotated[str | None, Var(
        "SLACK_WEBHOOK_URL", url("https://", "http://"), "Slack incoming webhook; unset: notifications only logged",
        secret=True)] = None
    stripe_webhook_secret: Annotated[str | None, Var(
        "STRIPE_WEBHOOK_SECRET", text, "signing secret (whsec_...) of your Stripe webhook endpoint", secret=True
    )] = None
    execution_lease_seconds: Annotated[int, Var(
        "EXECUTION_LEASE_SECONDS", whole(1), "seconds a process may work on a refund before the worker takes over"
    )] = 120
    retry_backoff_seconds: Annotated[float, Var(
        "RETRY_BACKOFF_SECONDS", positive, "first wait before retrying Stripe or Slack, doubled each time")] = 5.0
    slack_timeout_seconds: Annotated[int, Var(
        "SLACK_TIMEOUT_SECONDS", whole(1), "seconds before a Slack delivery times out")] = 10
    refund_poll_after_seconds: Annotated[int, Var(
        "REFUND_POLL_AFTER_SECONDS", whole(1), "seconds a refund may stay pending at Stripe before it is polled"
    )] = 1800
    worker_in_process: Annotated[bool, Var(
        "WORKER_IN_PROCESS", flag, "run the background worker inside each web process")] = True
    worker_poll_seconds: Annotated[float, Var(
        "WORKER_POLL_SECONDS", positive, "seconds between the worker's passes when idle")] = 1.0
    public_base_url: Annotated[str | None, Var(
        "PUBLIC_BASE_URL", url("https://", "http://"), "the service's public address, for links and instructions"
    )] = None
    # Approvals (issue 4): two-person rule, signed links, Slack buttons, escalation and expiry.
    two_person_threshold: Annotated[int | None, Var(
        "TWO_PERSON_THRESHOLD", whole_or_off, "above this many minor units two approvers must approve (off: never)"
    )] = None
    approval_link_secret: Annotated[str | None, Var(
        "APPROVAL_LINK_SECRET", long_secret(32), "signs one-click approval links; unset: no links", secret=True
    )] = None
    approval_link_ttl_seconds: Annotated[int, Var(
        "APPROVAL_LINK_TTL", whole(60), "seconds an approval link stays valid")] = 86_400
    slack_approval_links: Annotated[bool, Var(
        "SLACK_APPROVAL_LINKS", flag, "also post one link per approver in the shared Slack message")] = False
    slack_signing_secret: Annotated[str | None, Var(
        "SLACK_SIGNING_SECRET", text, "your Slack app's signing secret; enables the Approve / Reject buttons",
        secret=True)] = None
    slack_response_url_prefix: Annotated[str, Var(
        "SLACK_RESPONSE_URL_PREFIX", text, "the only place Slack interaction replies are sent"
    )] = "https://hooks.slack.com/"
    pending_escalate_after_seconds: Annotated[int | None, Var(
        "PENDING_ESCALATE_AFTER", whole_or_off, "seconds before a waiting refund is announced again (off: never)"
    )] = 4 * 3600
    pending_expire_after_seconds: Annotated[int | None, Var(
        "PENDING_EXPIRE_AFTER", whole_or_off, "seconds before a waiting refund expires (off: never)")] = 72 * 3600
    slack_escalation_mention: Annotated[str, Var(
        "SLACK_ESCALATION_MENTION", text, "who is mentioned when a waiting refund is escalated")] = "<!here>"
    # The daily report (issue 10).
    report_tz: Annotated[str, Var(
        "REPORT_TZ", time_zone, "time zone of the daily report's days and of `sync --since`")] = "UTC"
    # Operations (issue 11): log lines and metrics.
    log_format: Annotated[str, Var(
        "LOG_FORMAT", choice("text", "json"), "text, or json: one JSON object per log line, with the request id"
    )] = "text"
    metrics_token: Annotated[str | None, Var(
        "METRICS_TOKEN", long_secret(16), "bearer token for GET /metrics; unset: /metrics answers 404", secret=True
    )] = None
    # Bursts within Stripe's and Slack's limits (issue 11).
    stripe_rate_limit: Annotated[float, Var(
        "STRIPE_RATE_LIMIT", positive, "Stripe reads and writes per second, each, across every process")] = 25.0
    redis_url: Annotated[str | None, Var(
        "REDIS_URL", url("redis://", "rediss://", "unix://", expected="be a redis://, rediss:// or unix:// URL"),
        "keep the Stripe rate limit in Redis instead of the database", secret=True)] = None
    slack_digest_after: Annotated[int, Var(
        "SLACK_DIGEST_AFTER", whole(1), "more routine Slack messages than this waiting: one digest instead")] = 10
    report_time: Annotated[str | None, Var(
        "REPORT_TIME", clock_time, "HH:MM in REPORT_TZ when the worker posts yesterday's report to Slack; unset: never"
    )] = None
    session_secret: Annotated[str | None, Var(
        "SESSION_SECRET", long_secret(32), "signs approvers' sign-in cookies for the report page; unset: no sign-in",
        secret=True)] = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def policy(self) -> PolicyConfig:
        """The refund policy: POLICY_FILE's, else the article's (AUTO_APPROVE_THRESHOLD in AUTO_APPROVE_CURRENCY,
        TWO_PERSON_THRESHOLD in that currency). Raises ConfigError with the policy's one-line problem."""
        from .rules import PolicyError, default_policy, load_policy

        try:
            if self.policy_file is not None:
                return load_policy(self.policy_file)
            return default_policy(self.auto_approve_threshold, self.auto_approve_currency, self.two_person_threshold)
        except PolicyError as exc:
            raise ConfigError(f"POLICY_FILE: {exc}" if self.policy_file else str(exc)) from None

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                          if not VARIABLES[f.name].secret)
        return f"Settings({shown})"


def _variables() -> dict[str, Var]:
    hints = get_type_hints(Settings, include_extras=True)
    return {f.name: next(m for m in hints[f.name].__metadata__ if isinstance(m, Var))
            for f in dataclasses.fields(Settings)}


# Field name -> its variable, in the order they are read.
VARIABLES: Mapping[str, Var] = _variables()


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build `Settings` from `env` (default: `os.environ`), then apply `overrides` (by field name).

    Raises `ConfigError` naming the first missing or malformed variable.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        var = VARIABLES[field.name]
        default = None if field.default is dataclasses.MISSING else field.default
        values[field.name] = var.read(env, default)
        if var.then is not None:
            var.then(values)
    return dataclasses.replace(Settings(**values), **overrides)
