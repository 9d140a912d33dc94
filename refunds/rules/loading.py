"""Reading a policy: the TOML file (`POLICY_FILE`), or the article's one threshold when there is none.

A policy's version is the SHA-256 of its file's bytes (of the default policy's canonical TOML text
when there is no file): two decisions with the same version were made under the same rules.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from .schema import STRIPE_REASONS, PolicySpec

__all__ = ["DEFAULT_SOURCE", "PolicyConfig", "PolicyError", "default_policy", "load_policy", "parse_policy"]

DEFAULT_SOURCE = "<default policy>"


class PolicyError(Exception):
    """A policy file that cannot be used. The message is one line: `file: key: what is wrong`."""


@dataclass(frozen=True)
class PolicyConfig:
    """A validated policy: its rules (`spec`), its `version` (sha256 hex) and where it came from."""

    spec: PolicySpec
    version: str
    source: str

    @property
    def customer_window(self) -> timedelta | None:
        """How far back the service must count each customer's refunds (None: the velocity rule is off)."""
        return timedelta(days=self.spec.velocity.window_days) if self.spec.velocity else None

    @property
    def needs_store_totals(self) -> bool:
        """True if the service must gather what was auto-approved in the last hour and day."""
        return self.spec.circuit_breaker is not None

    @property
    def rule_names(self) -> tuple[str, ...]:
        """The rules this policy applies, in precedence order (see `engine.PRECEDENCE`)."""
        spec = self.spec
        switched = {"charge_age": spec.charge_age, "velocity": spec.velocity, "circuit_breaker": spec.circuit_breaker,
                    "product": spec.products, "charge_share": spec.charge_share}
        rules = ["disputed", "early_fraud_warning", "velocity", "reason", "product", "charge_age", "charge_share",
                 "currency", "threshold", "circuit_breaker", "two_person"]
        if not any(t.two_person is not None for t in spec.thresholds.values()):
            rules.remove("two_person")
        return tuple(r for r in rules if r not in switched or switched[r])


def _where(loc: tuple[int | str, ...]) -> str:
    """A dotted key as TOML writes it: `products."gift card".outcome`."""
    # pydantic marks a dict key's own error with "[key]"; the key itself already names the place.
    parts = [str(part) for part in loc if part != "[key]"]
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in parts)


def _message(error: dict[str, object]) -> str:
    kind, text = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        return "is not a known key (a misspelling?)"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return text.replace("Input should be", "must be")
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return "must be a table"
    if kind in {"string_type", "int_type", "bool_type"}:
        return text.replace("Input should be", "must be")
    return text.replace("Value error, ", "").replace("String should", "must").replace("Input should", "must")


def format_errors(source: str, exc: ValidationError) -> str:
    """One line for `exc`: `source: dotted.key: problem`, and how many more problems there are."""
    # A misspelt key also makes the right one missing: name the misspelling first.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    where = _where(first["loc"])
    line = f"{source}: {where + ': ' if where else ''}{_message(dict(first))}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


def parse_policy(data: bytes, source: str) -> PolicyConfig:
    """The policy in `data` (a TOML document) read from `source` (named in errors).

    Raises PolicyError naming `source`, the key and what is wrong.
    """
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"{source}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: is not valid TOML: {exc}") from None
    try:
        spec = PolicySpec.model_validate(document)
    except ValidationError as exc:
        raise PolicyError(format_errors(source, exc)) from None
    return PolicyConfig(spec, hashlib.sha256(data).hexdigest(), source)


def load_policy(path: str | Path) -> PolicyConfig:
    """The policy in the TOML file at `path`. Raises PolicyError naming the file (as given) when it
    cannot be read or is invalid."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_policy(data, str(path))


def default_text(auto_approve_threshold: int = 5000, currency: str = "usd",
                 two_person_threshold: int | None = None) -> str:
    """The canonical TOML of the policy used when there is no file (see `default_policy`)."""
    lines = ["# The article's policy: one threshold, in one currency.",
             f"[thresholds.{json.dumps(currency)}]", f"auto_approve = {auto_approve_threshold}"]
    if two_person_threshold is not None:
        lines.append(f"two_person = {two_person_threshold}")
    lines += ["", "[disputes]", 'disputed = "refuse"', 'early_fraud_warning = "review"', ""]
    lines += [f"[reasons.{name}]" for name in STRIPE_REASONS]
    return "\n".join(lines) + "\n"


def default_policy(auto_approve_threshold: int = 5000, currency: str = "usd",
                   two_person_threshold: int | None = None) -> PolicyConfig:
    """The policy when `POLICY_FILE` is unset: at or under `auto_approve_threshold` minor units of
    `currency` a refund executes alone; above it, or in any other currency, people approve it; above
    `two_person_threshold` (when given) two of them. Disputed charges are refused. Stripe's three
    reasons are accepted. Raises PolicyError (naming `<default policy>`) for a bad currency or amount."""
    return parse_policy(default_text(auto_approve_threshold, currency, two_person_threshold).encode(), DEFAULT_SOURCE)
