"""Request bodies of the HTTP API, validated with pydantic. Unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from .identity import unambiguous

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime can hold
# Idempotency-Key header: 1 to 255 visible ASCII characters, spaces allowed between them.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# One `@`, no spaces or control characters. `\s` alone differs between regex dialects (Python's and Rust's
# include U+0085, JavaScript's and JSON Schema's do not; only theirs include U+FEFF): listing the controls and
# U+FEFF as well makes pydantic and every client reading the OpenAPI document agree on the same set.
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f-\x9f\ufeff]+"
EMAIL_PATTERN = rf"^{_EMAIL_PART}@{_EMAIL_PART}$"
# Free text: anything but NUL (U+0000), which PostgreSQL text columns cannot store.
TEXT_PATTERN = r"^[^\x00]*$"
PATTERN_MEANINGS = {
    EMAIL_PATTERN: "must be an email address, like name@example.com, without spaces",
    TEXT_PATTERN: "must not contain NUL characters (\\u0000)",
}

# A person's name or address that reads one way only: no invisible or control characters (zero-width
# space, joiners, U+2060, U+FEFF, bidi controls, tabs, newlines), no word mixing scripts (see identity.py).
UNAMBIGUOUS_FORMAT = "unambiguous"

ShortText = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
Note = Annotated[StrictStr, Field(max_length=2000, pattern=TEXT_PATTERN)]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: `120.0` is the integer 120 (so says JSON Schema's "integer"); `120.5` is not one."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integers: `5` or `5.0`, never `5.5`, `"5"` or `true`.
Id = Annotated[StrictInt, Field(gt=0, le=MAX_ID), BeforeValidator(_whole_number)]
Amount = Annotated[StrictInt, Field(gt=0, le=99_999_999_999), BeforeValidator(_whole_number)]


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

    charge_id: Annotated[StrictStr, Field(pattern=r"^ch_[A-Za-z0-9_]{1,250}$")] | None = Field(
        default=None, description="The Stripe charge to refund (ch_...). Give this or payment_intent_id."
    )
    payment_intent_id: Annotated[StrictStr, Field(pattern=r"^pi_[A-Za-z0-9_]{1,250}$")] | None = Field(
        default=None, description="The Stripe PaymentIntent to refund (pi_...). Give this or charge_id."
    )
    amount: Amount | None = Field(
        default=None,
        description="Positive integer in the charge currency's minor units; absent means all that remains refundable.",
    )
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] = "requested_by_customer"
    product: ShortText | None = None
    customer_email: Annotated[StrictStr, Field(max_length=320, pattern=EMAIL_PATTERN)] | None = None
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


class NewApproverBody(_Strict):
    """Body of POST /approvers (admins only)."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@+-]+$")]
    role: Literal["approver", "admin"] = "approver"
    approval_limit: Annotated[StrictInt, Field(ge=0, le=99_999_999_999)] | None = Field(
        default=None, description="The largest amount, in minor units, they may approve. Absent: no limit.")
    slack_user_id: Annotated[StrictStr, Field(pattern=r"^[UW][A-Z0-9]{2,30}$")] | None = None
    emails: list[Annotated[StrictStr, Field(max_length=320, pattern=EMAIL_PATTERN,
                                            json_schema_extra={"format": UNAMBIGUOUS_FORMAT}),
                           AfterValidator(unambiguous("emails"))]] | None = Field(
        default=None, max_length=20,
        description="Their email addresses (stored normalised; each belongs to one approver at most). A refund "
                    "requested by any of them, or by their name or Slack user, is one they may not approve.")


class RejectBody(_Strict):
    """Body of POST /reject-refund."""

    pending_id: Id
    note: Note | None = None


class _StripeEventData(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    object: dict[str, Any] = Field(description="The refund (or other object) the event is about.")


class StripeEvent(BaseModel):
    """Body of POST /stripe/webhook: a Stripe event. The fields this service reads; Stripe's others are allowed."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    id: Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=TEXT_PATTERN)]
    type: Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=TEXT_PATTERN)]
    created: Annotated[StrictInt, Field(ge=0, le=MAX_TIMESTAMP, description="Unix time."),
                       BeforeValidator(_whole_number)]
    data: _StripeEventData


def describe(error: ValidationError) -> str:
    """One sentence naming the first invalid field and what is wrong with it."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    if first["type"] == "literal_error" and field == "reason":
        return f"reason: must be one of {', '.join(REASONS)}"
    if first["type"] == "string_pattern_mismatch" and first.get("ctx", {}).get("pattern") in PATTERN_MEANINGS:
        return f"{field}: {PATTERN_MEANINGS[first['ctx']['pattern']]}"
    if first["type"] == "value_error":
        return message.removeprefix("Value error, ")
    return f"{field}: {message}"
