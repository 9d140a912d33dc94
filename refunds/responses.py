"""The JSON answers of the HTTP API, as pydantic models: each view builds one and `respond` sends it.

The same models generate the response schemas of `/openapi.json` (see `openapi.py`), so a shape is
written once. Fields are always present, null when empty, except the few declared with `omitted_when_none`
(absent rather than null, as clients have always seen them). Models that mirror stored data read it
from dicts or from objects with the same attributes (`from_attributes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from flask import Response, jsonify
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, computed_field

from . import limits
from .money import format_money
from .pagination import MAX_LIMIT
from .schemas import REASON_PATTERN, REASONS
from .states import RequestStatus
from .tables import iso_utc

__all__ = [
    "Answer",
    "Approval",
    "ApprovalEntry",
    "ApprovalLimit",
    "Approved",
    "Approver",
    "ApproverList",
    "AutoApproved",
    "AwaitingSecondApproval",
    "DryRun",
    "Error",
    "Explained",
    "Health",
    "HistoryEntry",
    "NewApprover",
    "OutcomeAnswer",
    "PendingPage",
    "PendingRefund",
    "Processing",
    "Queued",
    "RefundHistory",
    "Rejected",
    "RequestError",
    "Revoked",
    "StripeRefundEntry",
    "WebhookReceipt",
    "respond",
]

# A stored reason: Stripe's three under the article's policy, or one a policy file lists.
Reason = Annotated[str, WithJsonSchema({"type": "string", "pattern": REASON_PATTERN,
                                         "examples": list(REASONS)})]


def _iso_milliseconds(value: datetime) -> str:
    return iso_utc(value)


def _iso_seconds(value: datetime) -> str:
    return iso_utc(value, "seconds")


_DATE_TIME = WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization")
# `2026-11-26T10:39:25.123Z`; approvers' dates to the second, as they were always shown.
Timestamp = Annotated[datetime, PlainSerializer(_iso_milliseconds, return_type=str), _DATE_TIME]
SecondsTimestamp = Annotated[datetime, PlainSerializer(_iso_seconds, return_type=str), _DATE_TIME]
Currency = Annotated[str, AfterValidator(str.lower), Field(description="ISO 4217 code, lower case.")]
Amount = Annotated[int, Field(description="Minor units of the currency.")]


def _none(value: object) -> bool:
    return value is None


def omitted_when_none(description: str) -> Any:
    """A field left out of the JSON when None, instead of written as null (the document marks it optional)."""
    return Field(default=None, exclude_if=_none, description=description)


class Answer(BaseModel):
    """Base of every answer: read from dicts or attributes; every field is required in the document, since
    every field is always in the JSON (except those `omitted_when_none`)."""

    model_config = ConfigDict(from_attributes=True, frozen=True, json_schema_serialization_defaults_required=True)


def respond(answer: Answer, status: int = 200) -> Response:
    """`answer` as a JSON response with `status`, written by the app's JSON provider as every answer was."""
    response = jsonify(answer.model_dump(mode="json"))
    response.status_code = status
    return response


class Error(Answer):
    """Every error has this shape: a stable code, a sentence for a person, and the request when there is one."""

    error: str = Field(pattern=r"^[a-z0-9_]+$")
    message: str
    request_id: int | None = omitted_when_none("The refund request the error is about, when one was recorded.")


class OutcomeAnswer(Answer):
    """An answer to a use case's `Outcome`, whose `status` is the outcome's own."""

    @classmethod
    def of(cls, outcome: Any, **more: Any) -> Self:
        """From the outcome's attributes of the same names, and `more` (who decided, say). Raises
        ValidationError when the outcome is not one this answer describes."""
        return cls.model_validate({**{name: getattr(outcome, name) for name in cls.model_fields
                                      if name not in more}, **more})


class Explained(OutcomeAnswer):
    """How the policy decided: the rule, its sentence and the policy's version (left out before it decided)."""

    rule: str | None = omitted_when_none("The policy rule that decided (threshold, velocity, circuit_breaker, ...).")
    explanation: str | None = omitted_when_none("Why, in a sentence, with the values the rule compared.")
    policy_version: str | None = omitted_when_none("The SHA-256 of the policy that decided.")


class AutoApproved(Explained):
    status: Literal["auto_approved"] = "auto_approved"
    refund_id: str
    request_id: int


class Queued(Explained):
    status: Literal["pending_approval"] = "pending_approval"
    pending_id: int
    request_id: int


class DryRun(Answer):
    """What the policy would decide for a request sent with `"dry_run": true`, and why; nothing was changed."""

    dry_run: Literal[True] = True
    decision: Literal["auto_approve", "needs_approval", "refuse"]
    rule: str
    explanation: str
    approvals_required: int = Field(description="How many different approvers would be needed (0 unless "
                                                "needs_approval).")
    amount: int = Field(description="Minor units of the currency: what would be refunded.")
    currency: str
    policy_version: str


class Processing(OutcomeAnswer):
    status: Literal["processing"] = "processing"
    request_id: int


class Approved(OutcomeAnswer):
    status: Literal["approved"] = "approved"
    refund_id: str
    request_id: int
    approved_by: str


class AwaitingSecondApproval(OutcomeAnswer):
    status: Literal["awaiting_second_approval"] = "awaiting_second_approval"
    request_id: int
    pending_id: int
    approved_by: str


class Rejected(OutcomeAnswer):
    status: Literal["rejected"] = "rejected"
    request_id: int
    rejected_by: str


class PendingRefund(Answer):
    """One refund waiting in the approval queue."""

    pending_id: int
    request_id: int
    charge_id: str
    amount: Amount
    currency: Currency
    reason: str
    requested_at: Timestamp
    product: str | None
    customer_email: str | None
    ticket_id: str | None
    note: str | None
    policy_explanation: str
    approval_link: str | None = omitted_when_none("Your signed one-click link (when links are on).")

    @computed_field(description="For people, e.g. '120.00 USD'.")  # type: ignore[prop-decorator]
    @property
    def display(self) -> str:
        return format_money(self.amount, self.currency)


class PendingPage(Answer):
    """One page of the approval queue."""

    pending: list[PendingRefund] = Field(max_length=MAX_LIMIT)
    count: int = Field(ge=0, description="How many refunds wait for a decision in the whole queue (all pages), "
                                         "when this page was read.")
    next: str | None = Field(description="The path and query of the next page; null on the last page.")


def _field(record: Any, name: str) -> Any:
    """`record[name]` or `record.name`: the service answers with dicts today, typed records tomorrow."""
    return record[name] if isinstance(record, Mapping) else getattr(record, name)


class RequestError(Answer):
    code: str
    message: str | None


class ApprovalEntry(Answer):
    approver: str
    channel: str
    at: Timestamp


class Approval(Answer):
    """The approval queue entry of a request."""

    pending_id: int
    status: str = Field(description="`pending`, `approved`, `rejected` or `expired`.")
    decided_by: str | None
    decided_at: Timestamp | None
    note: str | None
    approvals: list[ApprovalEntry] = Field(description="Each approval: who, through which channel, when.")

    @classmethod
    def of(cls, pending: Any, approvals: list[Any]) -> Approval:
        """From a pending_refunds record and its approvals (records with approver, channel, at)."""
        return cls(pending_id=_field(pending, "id"), status=_field(pending, "status"),
                   decided_by=_field(pending, "decided_by"), decided_at=_field(pending, "decided_at"),
                   note=_field(pending, "decision_note"), approvals=approvals)


class StripeRefundEntry(Answer):
    refund_id: str
    status: str = Field(description="Stripe's refund status.")
    amount: Amount
    currency: Currency
    processed_at: Timestamp

    @computed_field(description="For people, e.g. '120.00 USD'.")  # type: ignore[prop-decorator]
    @property
    def display(self) -> str:
        return format_money(self.amount, self.currency)


class HistoryEntry(Answer):
    at: Timestamp
    action: str
    actor: str
    channel: str
    detail: str | None


class RefundHistory(Answer):
    """One refund request, its approval, its Stripe refunds and its audit trail."""

    request_id: int
    status: RequestStatus = Field(description="`received` until the charge was read from Stripe.")
    decision: Literal["auto_approve", "needs_approval", "refuse"] | None = Field(
        description="null until assessed.")
    policy_explanation: str | None
    charge_id: str | None = Field(description="null while a payment intent's charge is not known yet.")
    payment_intent_id: str | None
    amount: int | None = Field(description="Minor units of the currency; null until the charge was read from "
                                           "Stripe.")
    currency: Annotated[str, AfterValidator(str.lower)] | None = Field(
        description="ISO 4217 code, lower case; null until the charge was read from Stripe.")
    reason: Reason
    product: str | None
    customer_email: str | None
    ticket_id: str | None
    note: str | None
    stripe_refund_id: str | None
    error: RequestError | None = Field(description="Why the request failed; null unless it did.")
    created_at: Timestamp
    resolved_at: Timestamp | None
    approval: Approval | None = Field(description="The approval queue entry; null for refunds that were "
                                                  "auto-approved.")
    refunds: list[StripeRefundEntry]
    history: list[HistoryEntry]

    @computed_field(  # type: ignore[prop-decorator]
        description="For people, e.g. '120.00 USD'; null until the charge was read from Stripe.")
    @property
    def display(self) -> str | None:
        if self.amount is None or self.currency is None:
            return None
        return format_money(self.amount, self.currency)

    @classmethod
    def of(cls, found: Any) -> RefundHistory:
        """From what `RefundService.history` returns: `request`, `pending`, `approvals`, `refunds`, `history`."""
        req = _field(found, "request")
        pending = _field(found, "pending")
        code = _field(req, "error_code")
        return cls(
            request_id=_field(req, "id"),
            error=RequestError(code=code, message=_field(req, "error_message")) if code else None,
            approval=Approval.of(pending, _field(found, "approvals")) if pending is not None else None,
            refunds=_field(found, "refunds"),
            history=_field(found, "history"),
            **{name: _field(req, name) for name in _REQUEST_COLUMNS},
        )


_REQUEST_COLUMNS = ("status", "decision", "policy_explanation", "charge_id", "payment_intent_id", "amount",
                    "currency", "reason", "product", "customer_email", "ticket_id", "note", "stripe_refund_id",
                    "created_at", "resolved_at")

SlackUserId = Annotated[str, WithJsonSchema({"type": "string", "pattern": limits.SLACK_USER_ID_PATTERN})]


class ApprovalLimit(Answer):
    """The most an approver may approve alone in one currency."""

    amount: Amount
    currency: Currency

    @computed_field(description="For people, e.g. '500.00 USD'.")  # type: ignore[prop-decorator]
    @property
    def display(self) -> str:
        return format_money(self.amount, self.currency)


LIMITS_DESCRIPTION = ("Their limits, one per currency, by currency. A refund in a currency not listed is one they "
                      "may not approve; an empty list: no limit in any currency.")


def _limits(limits: Any) -> list[ApprovalLimit]:
    return [ApprovalLimit.model_validate(m) for m in limits]


class Approver(Answer):
    """An approver as admins see them; never their token or its hash."""

    name: str
    role: Literal["approver", "admin"]
    approval_limits: list[ApprovalLimit] = Field(description=LIMITS_DESCRIPTION)
    slack_user_id: SlackUserId | None
    emails: list[str] = Field(description="Their email addresses, normalised (NFKC, case-folded, trimmed).")
    active: bool
    created_at: SecondsTimestamp

    @classmethod
    def of(cls, approver: Any) -> Approver:
        """From an `approvers.Approver` (or anything with its attributes)."""
        return cls(name=approver.name, role=approver.role, approval_limits=_limits(approver.limits),
                   slack_user_id=approver.slack_user_id, emails=list(approver.emails),
                   active=approver.revoked_at is None, created_at=approver.created_at)


class ApproverList(Answer):
    approvers: list[Approver]


class NewApprover(Answer):
    """A new approver, with the token they authenticate with: shown this once, never stored in clear."""

    name: str
    role: Literal["approver", "admin"]
    approval_limits: list[ApprovalLimit] = Field(description=LIMITS_DESCRIPTION)
    slack_user_id: SlackUserId | None
    emails: list[str] = Field(description="Their email addresses, normalised (NFKC, case-folded, trimmed).")
    token: str


class Revoked(Answer):
    name: str
    revoked: Literal[True] = True


class Health(Answer):
    status: Literal["ok"] = "ok"


class WebhookReceipt(Answer):
    received: Literal[True] = True
    result: Literal["applied", "ignored", "duplicate"]
