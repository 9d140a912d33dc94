"""Sizes and shapes shared by the HTTP API (pydantic models, `/openapi.json`) and the database columns.

One source of truth: a value the API accepts always fits the column it is stored in, on SQLite
(which does not enforce lengths) and on PostgreSQL (which does, and answers an error otherwise).
"""

from __future__ import annotations

__all__ = [
    "APPROVER_NAME",
    "APPROVER_NAME_PATTERN",
    "AUDIT_ACTOR",
    "CURRENCY",
    "CUSTOMER_KEY",
    "EMAIL",
    "ERROR_CODE",
    "EVENT_TYPE",
    "FAILURE_REASON",
    "IDEMPOTENCY_KEY",
    "METADATA_KEY",
    "METADATA_KEYS",
    "METADATA_VALUE",
    "NOTE",
    "POLICY_RULE",
    "POLICY_VERSION",
    "REASON",
    "SHORT_TEXT",
    "SLACK_USER_ID",
    "SLACK_USER_ID_PATTERN",
    "STATUS",
    "STRIPE_ID",
]

# Stripe object ids (charges, payment intents, refunds, events). Stripe documents no maximum; 255 is ours.
STRIPE_ID = 255
# ISO 4217 code, lower case as Stripe writes it.
CURRENCY = 3
# Short single-line free text from the support tool: product, ticket id, requested_by.
SHORT_TEXT = 200
# Notes (the request's note, a rejection reason). Stored as TEXT; the limit keeps Slack messages sane.
NOTE = 2000
# RFC 5321: at most 320 characters in an address.
EMAIL = 320
# Idempotency-Key header (Stripe's own limit for its keys).
IDEMPOTENCY_KEY = 255
# Approver names: letters, digits and _ . @ + -.
APPROVER_NAME = 100
APPROVER_NAME_PATTERN = r"^[A-Za-z0-9_.@+-]{1,100}$"
# Slack member ids: U or W, then upper-case letters and digits (U024BE7LH). Slack promises no length.
SLACK_USER_ID = 50
SLACK_USER_ID_PATTERN = r"^[UW][A-Z0-9]{2,49}$"
# Who did something in the audit trail: an approver's name, the requester (`requested_by`) or a system actor.
AUDIT_ACTOR = max(SHORT_TEXT, APPROVER_NAME)
# Stripe's refund failure_reason, error codes and statuses, and event types.
FAILURE_REASON = 100
ERROR_CODE = 100
EVENT_TYPE = 100
STATUS = 32
REASON = 32
# Stripe's own limits on an object's metadata: at most 50 keys, each at most 40 characters, each value at most 500.
METADATA_KEYS = 50
METADATA_KEY = 40
METADATA_VALUE = 500
# The customer a velocity rule counts (`rules.customer_identity`): a Stripe customer id, a normalised email
# address or `card:<fingerprint>`.
CUSTOMER_KEY = max(STRIPE_ID, EMAIL)
# A policy rule's name (`disputed`, `circuit_breaker`, ...) and a policy's version (a SHA-256 in hex).
POLICY_RULE = 40
POLICY_VERSION = 64
