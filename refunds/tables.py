"""The database schema as SQLAlchemy Core tables. Migrations in `migrations/` create exactly this.

`pending_refunds` and `refund_log` keep the columns of the original article so that its
queries still work; everything else is added beside them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

from .limits import (
    APPROVER_NAME,
    AUDIT_ACTOR,
    CURRENCY,
    CUSTOMER_KEY,
    EMAIL,
    ERROR_CODE,
    EVENT_TYPE,
    FAILURE_REASON,
    IDEMPOTENCY_KEY,
    POLICY_RULE,
    POLICY_VERSION,
    REASON,
    SHORT_TEXT,
    SLACK_USER_ID,
    STATUS,
    STRIPE_ID,
)


def iso_utc(value: datetime, timespec: str = "milliseconds") -> str:
    """`2026-11-26T10:39:25.123Z`: the one way timestamps are written for people and for SQLite."""
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes: `timestamptz` on PostgreSQL, ISO 8601 text on SQLite.

    SQLite has no date type; storing `2026-11-26T10:39:25.123Z` keeps the column readable
    with `sqlite3` and sortable as text.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if dialect.name == "sqlite":
            return iso_utc(value)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        result: datetime = value.astimezone(UTC)
        return result


metadata = MetaData()

refund_requests = Table(
    "refund_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("idempotency_key", String(IDEMPOTENCY_KEY), unique=True),
    Column("body_fingerprint", String(64), nullable=False),
    # What the support tool asked for; charge_id is filled in from a payment intent once read.
    Column("charge_id", String(STRIPE_ID)),
    Column("payment_intent_id", String(STRIPE_ID)),
    Column("requested_amount", BigInteger),
    # What will be refunded, known once the charge was read from Stripe.
    Column("amount", BigInteger),
    Column("currency", String(CURRENCY)),
    Column("reason", String(REASON), nullable=False),
    Column("product", String(SHORT_TEXT)),
    Column("customer_email", String(EMAIL)),
    Column("ticket_id", String(SHORT_TEXT)),
    Column("note", Text),
    # A states.RequestStatus; states.TRANSITIONS lists every move, transition.transition() makes them.
    Column("status", String(STATUS), nullable=False),
    Column("decision", String(STATUS)),
    Column("policy_explanation", Text),
    Column("requested_by", String(SHORT_TEXT), nullable=False),
    Column("stripe_idempotency_key", String(IDEMPOTENCY_KEY), unique=True),
    Column("stripe_refund_id", String(STRIPE_ID), unique=True),
    Column("error_code", String(ERROR_CODE)),
    Column("error_message", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("execution_started_at", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    # Lease and retry schedule while status is `received` or `executing`.
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    # Issue 9's policy (migration 0006): who the customer is for velocity, the rule that decided, the policy's
    # version and the facts it decided on (`rules.facts_as_json`), so a decision can be explained and replayed.
    Column("customer_key", String(CUSTOMER_KEY)),
    Column("policy_rule", String(POLICY_RULE)),
    Column("policy_version", String(POLICY_VERSION)),
    Column("policy_facts", Text),
    # The X-Request-Id the request came with (migration 0010): the worker's log lines about it carry it, and
    # Stripe's refund has it in its metadata, so one id follows the refund from the support tool to Stripe.
    Column("trace_id", String(100)),
)
# A customer's recent requests (velocity), and the store's recent auto-approvals (the circuit breaker).
Index("ix_refund_requests_customer", refund_requests.c.customer_key, refund_requests.c.created_at)
Index("ix_refund_requests_decision", refund_requests.c.decision, refund_requests.c.created_at)
Index("ix_refund_requests_due", refund_requests.c.status, refund_requests.c.next_attempt_at)
Index("ix_refund_requests_charge_id", refund_requests.c.charge_id)

pending_refunds = Table(
    "pending_refunds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", Integer, ForeignKey("refund_requests.id"), nullable=False, unique=True),
    Column("charge_id", String(STRIPE_ID), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(CURRENCY), nullable=False),
    Column("reason", String(REASON), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("status", String(STATUS), nullable=False),  # a states.PendingStatus
    Column("decided_by", Text),  # one name, or several for the two-person rule
    Column("decided_at", UTCDateTime),
    Column("decision_note", Text),
    Column("escalated_at", UTCDateTime),
)

# One row per approver per request: the two-person rule counts these, and the unique
# constraint is the last guard against one person approving twice.
approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", Integer, ForeignKey("refund_requests.id"), nullable=False),
    Column("approver", String(APPROVER_NAME), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("request_id", "approver", name="uq_approvals_request_approver"),
)

# Signed approval links are usable once: each link's nonce is recorded when it acts.
approval_link_uses = Table(
    "approval_link_uses",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("request_id", Integer, ForeignKey("refund_requests.id"), nullable=False),
    Column("approver", String(APPROVER_NAME), nullable=False),
    Column("used_at", UTCDateTime, nullable=False),
)
Index("ix_pending_refunds_status", pending_refunds.c.status, pending_refunds.c.requested_at)

refund_log = Table(
    "refund_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("refund_id", String(STRIPE_ID), nullable=False, unique=True),
    Column("request_id", Integer, ForeignKey("refund_requests.id")),
    Column("charge_id", String(STRIPE_ID), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(CURRENCY), nullable=False),
    Column("status", String(STATUS), nullable=False),  # Stripe's refund status
    Column("processed_at", UTCDateTime, nullable=False),
    Column("reason", String(REASON)),
    Column("decision", String(STATUS)),  # auto_approved | approved | external (made outside this service)
    Column("approved_by", Text),
    Column("product", String(SHORT_TEXT)),
    Column("failure_reason", String(FAILURE_REASON)),
    Column("status_changed_at", UTCDateTime),  # Stripe's time of the last status we applied
    Column("checked_at", UTCDateTime),  # last time the worker asked Stripe about a pending refund
)
Index("ix_refund_log_request_id", refund_log.c.request_id)
Index("ix_refund_log_status", refund_log.c.status, refund_log.c.checked_at)

# Per charge: how much this service has in flight and has refunded, so concurrent requests
# can never refund more than the charge has left. Guarded updates only.
charge_ledger = Table(
    "charge_ledger",
    metadata,
    Column("charge_id", String(STRIPE_ID), primary_key=True),
    Column("currency", String(CURRENCY), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, default=0),
    Column("refunded", BigInteger, nullable=False, default=0),
    Column("stripe_refunded", BigInteger, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Stripe webhook events already handled: delivery is at least once.
stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", String(STRIPE_ID), primary_key=True),
    Column("type", String(EVENT_TYPE), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", Integer, ForeignKey("refund_requests.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("action", String(50), nullable=False),
    Column("actor", String(AUDIT_ACTOR), nullable=False),
    Column("channel", String(20), nullable=False),  # api | signed | link | slack | cli | stripe | worker | webhook
    Column("detail", Text),
)
Index("ix_audit_log_request_id", audit_log.c.request_id, audit_log.c.id)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", Integer, ForeignKey("refund_requests.id")),
    Column("kind", String(50), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_until", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("last_error", Text),
    # Set when Slack refused the message as invalid (a 4xx other than 429): never retried, kept for ops.
    Column("dead_at", UTCDateTime),
)
Index("ix_outbox_due", outbox.c.delivered_at, outbox.c.next_attempt_at)
# Finds a request's earlier undelivered messages when claiming (see store.claim_due_messages).
Index("ix_outbox_request_id", outbox.c.request_id, outbox.c.id)

approvers = Table(
    "approvers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(APPROVER_NAME), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("role", String(20), nullable=False, server_default="approver"),  # approver | admin
    Column("slack_user_id", String(SLACK_USER_ID)),
    UniqueConstraint("slack_user_id", name="uq_approvers_slack_user_id"),
)

# The most an approver may approve alone, per currency, in that currency's minor units. An approver
# with no row here has no limit; one with rows may approve only in those currencies (a limit in one
# currency never covers another). Rows rather than a JSON column: one limit per currency is a key
# the database enforces, amounts are typed and checked, and the rows read like `approver_emails`.
approver_limits = Table(
    "approver_limits",
    metadata,
    Column("approver_id", Integer, ForeignKey("approvers.id"), primary_key=True),
    Column("currency", String(CURRENCY), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("amount >= 0", name="ck_approver_limits_amount"),
)

# An approver's email addresses, stored normalised (see `identity.normalise`): with the name and the
# Slack user id, what self-approval is checked against. An address belongs to one approver at most.
approver_emails = Table(
    "approver_emails",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("approver_id", Integer, ForeignKey("approvers.id"), nullable=False),
    Column("email", String(EMAIL), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("email", name="uq_approver_emails_email"),
)
Index("ix_approver_emails_approver_id", approver_emails.c.approver_id)

# What the daily report needs and a query per day can find fast (migration 0005): the day's resolved
# requests, the day's refunds made outside the service, and the approval queue as it stood at a moment.
Index("ix_refund_requests_resolved_at", refund_requests.c.resolved_at)
Index("ix_refund_log_processed_at", refund_log.c.processed_at)
Index("ix_pending_refunds_decided_at", pending_refunds.c.decided_at)

# Charges as Stripe listed them (`flask --app app sync`), one row per charge: the report counts a
# product's charges in any window from here, never from Stripe, and finds the fee Stripe kept on a
# refunded charge (its balance transaction's fee, in that transaction's currency; NULL when unknown).
stripe_charges = Table(
    "stripe_charges",
    metadata,
    Column("charge_id", String(STRIPE_ID), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("product", String(SHORT_TEXT)),  # the charge's metadata["product"]
    Column("amount", BigInteger, nullable=False),
    Column("amount_refunded", BigInteger, nullable=False),
    Column("currency", String(CURRENCY), nullable=False),
    Column("fee", BigInteger),
    Column("fee_currency", String(CURRENCY)),
    Column("synced_at", UTCDateTime, nullable=False),
)
Index("ix_stripe_charges_created_at", stripe_charges.c.created_at, stripe_charges.c.product)
# Policy versions seen at start, and changes between them (audit_log rows belong to a request, these do not).
policy_events = Table(
    "policy_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("action", String(50), nullable=False),  # policy_first_seen | policy_changed
    Column("old_version", String(POLICY_VERSION)),
    Column("new_version", String(POLICY_VERSION), nullable=False),
    Column("source", Text, nullable=False),  # the policy file's path, or <default policy>
    Column("detail", Text),
)

# Circuit-breaker trips: a row while auto-approvals are held (`ended_at` NULL), so Slack is told once per trip,
# not once per request; ended when the breaker lets a refund through again.
breaker_trips = Table(
    "breaker_trips",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tripped_at", UTCDateTime, nullable=False),
    Column("request_id", Integer, ForeignKey("refund_requests.id"), nullable=False),  # the first one held
    Column("detail", Text, nullable=False),
    Column("ended_at", UTCDateTime),
)
Index("ix_breaker_trips_open", breaker_trips.c.ended_at)

# Stripe's rate limit shared by every process on PostgreSQL (`refunds.rate_limit.SqlLimiter`): per kind of
# call (read, write), when its next slot is free, in Unix seconds of the database's clock.
stripe_rate_limit = Table(
    "stripe_rate_limit",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("next_at", Double, nullable=False),
)

# The scheduled Slack report (migration 0009): one row per report day, claimed by the worker that posts
# it. The primary key is what makes several workers post a day once; `claim` names the claim that may
# mark it posted, and a claim older than the lease (its worker died) is taken over.
report_posts = Table(
    "report_posts",
    metadata,
    Column("day", Date, primary_key=True),  # the calendar day in REPORT_TZ the report covers
    Column("claim", String(64), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("posted_at", UTCDateTime),
    Column("last_error", Text),
)
