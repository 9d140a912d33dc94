"""Request bodies of the HTTP API, and the Stripe events it receives, validated with pydantic.

Every size comes from `limits`, the module the database columns are built from too: whatever these models
accept fits where it is stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from . import limits
from .errors import InvalidEvent
from .identity import unambiguous

__all__ = [
    "CURRENCY_PATTERN",
    "EMAIL_PATTERN",
    "IDEMPOTENCY_KEY_MAX_LENGTH",
    "IDEMPOTENCY_KEY_PATTERN",
    "LINE_PATTERN",
    "MAX_AMOUNT",
    "MAX_ID",
    "MAX_TIMESTAMP",
    "PATTERN_MEANINGS",
    "REASONS",
    "TEXT_PATTERN",
    "UNAMBIGUOUS_FORMAT",
    "ApproveBody",
    "NewApproverBody",
    "RefundRequestBody",
    "RejectBody",
    "StripeEvent",
    "StripeRefund",
    "describe",
    "parse_stripe_event",
]

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime can hold
MAX_AMOUNT = 99_999_999_999  # minor units; Stripe's own amounts stay far below
# Idempotency-Key header: 1 to 255 visible ASCII characters, spaces allowed between them.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"
IDEMPOTENCY_KEY_MAX_LENGTH = limits.IDEMPOTENCY_KEY
# One `@`, no spaces or control characters. `\s` alone differs between regex dialects (Python's and Rust's
# include U+0085, JavaScript's and JSON Schema's do not; only theirs include U+FEFF): listing the controls and
# U+FEFF as well makes pydantic and every client reading the OpenAPI document agree on the same set.
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f-\x9f\ufeff]+"
EMAIL_PATTERN = rf"^{_EMAIL_PART}@{_EMAIL_PART}$"
# Free text: anything but NUL (U+0000), which PostgreSQL text columns cannot store. Notes may span lines.
TEXT_PATTERN = r"^[^\x00]*$"
# One line of text: no control characters (C0, DEL, C1: so no newline, tab or NUL) and no Unicode line or
# paragraph separator. A line break in a product name or a ticket id can only be there to forge lines where
# the value is shown (a Slack message, a log line).
LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
# Stripe writes currencies as ISO 4217 codes in lower case.
CURRENCY_PATTERN = rf"^[a-z]{{{limits.CURRENCY}}}$"
PATTERN_MEANINGS = {
    EMAIL_PATTERN: "must be an email address, like name@example.com, without spaces",
    TEXT_PATTERN: "must not contain NUL characters (\\u0000)",
    LINE_PATTERN: "must be one line: no newlines, tabs or other control characters",
    CURRENCY_PATTERN: f"must be a {limits.CURRENCY}-letter ISO 4217 code in lower case, like usd",
    limits.APPROVER_NAME_PATTERN: f"must be 1 to {limits.APPROVER_NAME} letters, digits or _ . @ + -",
    limits.SLACK_USER_ID_PATTERN: "must be a Slack member id, like U024BE7LH",
}

# A person's name or address that reads one way only: no invisible or control characters (zero-width
# space, joiners, U+2060, U+FEFF, bidi controls, tabs, newlines), no word mixing scripts (see identity.py).
UNAMBIGUOUS_FORMAT = "unambiguous"

# A reason the policy may list: a name of at most `limits.REASON` characters. The document lists the article's
# policy's reasons (Stripe's); the policy in force decides which are accepted (`rules.check_reason`).
REASON_PATTERN = rf"^[a-z][a-z0-9_]{{0,{limits.REASON - 1}}}$"
RequestReason = Annotated[StrictStr, Field(pattern=REASON_PATTERN),
                          WithJsonSchema({"type": "string", "enum": list(REASONS)})]
ShortText = Annotated[StrictStr, Field(min_length=1, max_length=limits.SHORT_TEXT, pattern=LINE_PATTERN)]
Note = Annotated[StrictStr, Field(max_length=limits.NOTE, pattern=TEXT_PATTERN)]
Email = Annotated[StrictStr, Field(max_length=limits.EMAIL, pattern=EMAIL_PATTERN)]
ApproverName = Annotated[StrictStr, Field(min_length=1, max_length=limits.APPROVER_NAME,
                                          pattern=limits.APPROVER_NAME_PATTERN)]
SlackUserId = Annotated[StrictStr, Field(max_length=limits.SLACK_USER_ID, pattern=limits.SLACK_USER_ID_PATTERN)]


# Stripe ids this service stores, at most as long as their columns (limits.STRIPE_ID) with the prefix.
ChargeId = Annotated[StrictStr, Field(max_length=limits.STRIPE_ID,
                                      pattern=rf"^ch_[A-Za-z0-9_]{{1,{limits.STRIPE_ID - 3}}}$")]
PaymentIntentId = Annotated[StrictStr, Field(max_length=limits.STRIPE_ID,
                                             pattern=rf"^pi_[A-Za-z0-9_]{{1,{limits.STRIPE_ID - 3}}}$")]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: `120.0` is the integer 120 (so says JSON Schema's "integer"); `120.5` is not one."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integers: `5` or `5.0`, never `5.5`, `"5"` or `true`.
Id = Annotated[StrictInt, Field(gt=0, le=MAX_ID), BeforeValidator(_whole_number)]
Amount = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT), BeforeValidator(_whole_number)]


class _Strict(BaseModel):
    """Strict types, no unknown fields, and no explicit nulls: leave a field out instead."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                if value is None and name in cls.model_fields:
                    raise ValueError(f"{name}: must not be null; leave the field out instead")
        return data


class RefundRequestBody(_Strict):
    """Body of POST /refund-request."""

    charge_id: ChargeId | None = Field(
        default=None, description="The Stripe charge to refund (ch_...). Give this or payment_intent_id."
    )
    payment_intent_id: PaymentIntentId | None = Field(
        default=None, description="The Stripe PaymentIntent to refund (pi_...). Give this or charge_id."
    )
    amount: Amount | None = Field(
        default=None,
        description="Positive integer in the charge currency's minor units; absent means all that remains refundable.",
    )
    reason: RequestReason = Field(
        default="requested_by_customer",
        description="Why. Without POLICY_FILE one of Stripe's three reasons (listed here); a policy file lists the "
                    "reasons it accepts (`[reasons]`). Any other: `400 invalid_request` naming them.")
    dry_run: StrictBool = Field(
        default=False, description="true: answer what the policy would decide and why (200, `DryRun`), and change "
                                   "nothing: no request recorded, no refund, no Slack message, no idempotency record.")
    product: ShortText | None = None
    customer_email: Email | None = None
    ticket_id: ShortText | None = None
    note: Note | None = None
    requested_by: Annotated[ShortText, AfterValidator(unambiguous("requested_by"))] | None = Field(
        default=None,
        description="Who asked for the refund (the agent's name or email). No approver who is that person (by "
                    "name, email or Slack user id, look-alikes included) may approve it.",
        json_schema_extra={"format": UNAMBIGUOUS_FORMAT},
    )

    @model_validator(mode="after")
    def _exactly_one_id(self) -> RefundRequestBody:
        if (self.charge_id is None) == (self.payment_intent_id is None):
            raise ValueError("give exactly one of charge_id or payment_intent_id")
        return self


class ApproveBody(_Strict):
    """Body of POST /approve-refund."""

    pending_id: Id


CurrencyCode = Annotated[StrictStr, Field(max_length=limits.CURRENCY, pattern=CURRENCY_PATTERN)]
LimitAmount = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT), BeforeValidator(_whole_number)]


class NewApproverBody(_Strict):
    """Body of POST /approvers (admins only)."""

    name: ApproverName
    role: Literal["approver", "admin"] = "approver"
    approval_limits: dict[CurrencyCode, LimitAmount] | None = Field(
        default=None, max_length=50,
        description="The most they may approve alone, per currency, in its minor units: `{\"usd\": 50000, "
                    "\"jpy\": 50000}` is 500.00 USD and 50,000 JPY. A refund in a currency not listed is one they "
                    "may not approve. Absent or empty: no limit in any currency.")
    slack_user_id: SlackUserId | None = None
    emails: list[Annotated[StrictStr, Field(max_length=limits.EMAIL, pattern=EMAIL_PATTERN,
                                            json_schema_extra={"format": UNAMBIGUOUS_FORMAT}),
                           AfterValidator(unambiguous("emails"))]] | None = Field(
        default=None, max_length=20,
        description="Their email addresses (stored normalised; each belongs to one approver at most). A refund "
                    "requested by any of them, or by their name or Slack user, is one they may not approve.")


class RejectBody(_Strict):
    """Body of POST /reject-refund."""

    pending_id: Id
    note: Note | None = None


# What Stripe sends is checked like any input, signed or not: a value that cannot be stored or compared is a
# 400 naming the field (Stripe shows it on the endpoint's page), never a 500 that Stripe retries for days.
StripeText = Annotated[StrictStr, Field(min_length=1, max_length=limits.STRIPE_ID, pattern=TEXT_PATTERN)]
# Metadata within Stripe's own limits. `refund_key` is compared with a TEXT column: a NUL would make PostgreSQL fail.
MetadataKey = Annotated[StrictStr, Field(min_length=1, max_length=limits.METADATA_KEY, pattern=TEXT_PATTERN)]
MetadataValue = Annotated[StrictStr, Field(max_length=limits.METADATA_VALUE, pattern=TEXT_PATTERN)]
# An amount Stripe reports: `0` (a zero-amount object) or more, within the bound of the request's Amount.
StripeAmount = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT), BeforeValidator(_whole_number)]


class _StripeObject(BaseModel):
    """Stripe's objects carry many more fields than this service reads: those are allowed and ignored."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class StripeRefund(_StripeObject):
    """A Stripe refund object (`"object": "refund"`): the fields this service reads and stores."""

    id: StripeText
    object: Literal["refund"]
    amount: StripeAmount = Field(description="Minor units of `currency`.")
    currency: Annotated[StrictStr, Field(max_length=limits.CURRENCY, pattern=CURRENCY_PATTERN)]
    status: Annotated[StrictStr, Field(min_length=1, max_length=limits.STATUS, pattern=TEXT_PATTERN)] | None = None
    failure_reason: Annotated[StrictStr, Field(max_length=limits.FAILURE_REASON, pattern=TEXT_PATTERN)] | None = None
    charge: StripeText | None = Field(default=None, description="The refunded charge's id.")
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=limits.METADATA_KEYS)] | None = Field(
        default=None, description="Stripe's limits: 50 keys of up to 40 characters, values of up to 500; no NUL.")


class _StripeEventData(_StripeObject):
    object: dict[str, Any] = Field(description="The refund (or other object) the event is about.")


class StripeEvent(_StripeObject):
    """Body of POST /stripe/webhook: a Stripe event. The fields this service reads; Stripe's others are allowed."""

    id: StripeText
    type: Annotated[StrictStr, Field(min_length=1, max_length=limits.EVENT_TYPE, pattern=TEXT_PATTERN)]
    created: Annotated[StrictInt, Field(ge=0, le=MAX_TIMESTAMP, description="Unix time."),
                       BeforeValidator(_whole_number)]
    data: _StripeEventData


def parse_stripe_event(data: Any) -> tuple[StripeEvent, StripeRefund | None]:
    """The event in `data` (parsed JSON), and its refund when `data.object` is one (`"object": "refund"`), else None.

    Raises InvalidEvent naming the first field that is missing or wrong (`data.object.amount: ...`).
    """
    try:
        event = StripeEvent.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"Not a Stripe event: {describe(exc)}") from None
    if event.data.object.get("object") != "refund":
        return event, None
    try:
        return event, StripeRefund.model_validate(event.data.object)
    except ValidationError as exc:
        raise InvalidEvent(f"Not a Stripe refund: {describe(exc, at='data.object')}") from None


def describe(error: ValidationError, *, at: str = "") -> str:
    """One sentence naming the first invalid field (under `at`, a dotted path) and what is wrong with it."""
    first = error.errors(include_url=False)[0]
    field = ".".join([at] * bool(at) + [str(part) for part in first["loc"]]) or "body"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    if first["type"] in ("literal_error", "string_pattern_mismatch", "string_type") and field == "reason":
        return f"reason: must be one of {', '.join(REASONS)}"
    if first["type"] == "string_pattern_mismatch" and first.get("ctx", {}).get("pattern") in PATTERN_MEANINGS:
        return f"{field}: {PATTERN_MEANINGS[first['ctx']['pattern']]}"
    if first["type"] == "value_error":
        return message.removeprefix("Value error, ")
    return f"{field}: {message}"
