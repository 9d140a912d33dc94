"""The words the refund use cases speak: commands in, outcomes out, who acted, and what they run on."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection

from .db import Database
from .errors import RefundError
from .rules import PolicyConfig
from .stripe_gateway import RefundGateway

__all__ = ["CREDENTIAL_CHANGED", "INTAKE", "Actor", "Clock", "Context", "CredentialCheck", "Outcome",
           "RefundCommand", "WithDecision", "utcnow"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RefundCommand:
    """A validated refund request from the support tool. Exactly one of the two ids is set."""

    charge_id: str | None = None
    payment_intent_id: str | None = None
    amount: int | None = None
    reason: str = "requested_by_customer"
    product: str | None = None
    customer_email: str | None = None
    ticket_id: str | None = None
    note: str | None = None
    requested_by: str | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who acted, and through which channel (api, cli, worker)."""

    name: str
    channel: str = "api"


INTAKE = Actor("intake", "api")


@dataclass(frozen=True)
class Outcome:
    """Where a request stands after a call.

    `status` is one of: auto_approved, pending_approval, awaiting_second_approval, approved, rejected,
    succeeded, processing, failed, refused. For failed and refused, `error` is the domain exception that explains
    why. At intake, `rule`, `explanation` and `policy_version` say how the policy decided (None before it did).
    """

    status: str
    request_id: int
    pending_id: int | None = None
    refund_id: str | None = None
    error: RefundError | None = None
    rule: str | None = None
    explanation: str | None = None
    policy_version: str | None = None


# Given the acting approver's current token hash, True if the action was authorised with that credential
# (an approval link bound to it). Checked in the transaction that decides, so a credential re-issued after
# the caller's own check still stops the action.
CredentialCheck = Callable[[str], bool]
# Runs first in the transaction that decides: what it writes commits with the decision (a link's nonce, a
# Slack click marked decided), and what it raises rolls the decision back and reaches the caller.
WithDecision = Callable[[Connection], None]
CREDENTIAL_CHANGED = "This approval link belongs to someone who is no longer an approver."


class Context(Protocol):
    """What every use case runs on: the database, Stripe, the policy (`rules.PolicyConfig`), a clock and the timings.

    `service.RefundService` is the one implementation; the use cases read these attributes at each
    call, so a test may swap the clock on a live service.
    """

    db: Database
    gateway: RefundGateway
    policy: PolicyConfig
    clock: Clock
    execution_lease: timedelta
    retry_backoff: timedelta
    two_person_threshold: int | None  # TWO_PERSON_THRESHOLD; see `approvals.required_approvals`
    duplicate_wait_seconds: float
