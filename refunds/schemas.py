"""Request bodies of the HTTP API, validated with pydantic. Unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

REASONS = ("duplicate", "fraudulent", "requested_by_customer")

ShortText = Annotated[StrictStr, Field(min_length=1, max_length=200)]


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
    amount: Annotated[StrictInt, Field(gt=0, le=99_999_999_999)] | None = Field(
        default=None,
        description="Positive integer in the charge currency's minor units; absent means all that remains refundable.",
    )
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] = "requested_by_customer"
    product: ShortText | None = None
    customer_email: Annotated[StrictStr, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    ticket_id: ShortText | None = None
    note: Annotated[StrictStr, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _exactly_one_id(self) -> RefundRequestBody:
        if (self.charge_id is None) == (self.payment_intent_id is None):
            raise ValueError("give exactly one of charge_id or payment_intent_id")
        return self


class ApproveBody(_Strict):
    """Body of POST /approve-refund."""

    pending_id: Annotated[StrictInt, Field(gt=0, le=2**31 - 1)]


class RejectBody(_Strict):
    """Body of POST /reject-refund."""

    pending_id: Annotated[StrictInt, Field(gt=0, le=2**31 - 1)]
    note: Annotated[StrictStr, Field(max_length=2000)] | None = None


def describe(error: ValidationError) -> str:
    """One sentence naming the first invalid field and what is wrong with it."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    if first["type"] == "literal_error" and field == "reason":
        return f"reason: must be one of {', '.join(REASONS)}"
    if first["type"] == "value_error":
        return message.removeprefix("Value error, ")
    return f"{field}: {message}"
