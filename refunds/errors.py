"""Domain exceptions. Each carries a stable snake_case `code` and a sentence for a person.

They name what went wrong in refund terms; the HTTP layer alone decides status codes.
"""

from __future__ import annotations

__all__ = ["AlreadyApproved", "ApproverExists", "ApproverNotFound", "ChargeAlreadyRefunded",
           "ChargeDisputed", "ChargeNotFound", "EventTooEarly", "ExceedsRefundable", "Forbidden",
           "IdempotencyKeyReused", "IdempotencyMismatch", "InvalidEvent", "InvalidJson", "InvalidRequest",
           "LinkInvalid", "NotAnApprover", "NotPending", "OverApprovalLimit", "RefundError",
           "RequestNotFound", "SelfApproval", "StripeMisconfigured", "StripeRefused", "StripeThrottled",
           "StripeUnavailable", "UnsupportedMediaType"]


class RefundError(Exception):
    """Base class: `code` is a stable machine name, `str(exc)` a sentence for a person."""

    code = "refund_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ChargeNotFound(RefundError):
    code = "charge_not_found"


class ChargeAlreadyRefunded(RefundError):
    code = "charge_already_refunded"


class ExceedsRefundable(RefundError):
    code = "amount_exceeds_refundable"


class ChargeDisputed(RefundError):
    code = "charge_disputed"


class RefusedByPolicy(RefundError):
    """The policy file refused the request; the message is the decision's explanation."""

    code = "refused_by_policy"


class DuplicatePending(RefundError):
    """The charge already has a refund waiting for approval (named in the message)."""

    code = "duplicate_pending"

    def __init__(self, message: str, *, pending_id: int) -> None:
        super().__init__(message)
        self.pending_id = pending_id


class StripeRefused(RefundError):
    """Stripe refused the refund for good; `code` is Stripe's own error code."""

    code = "stripe_refused"


class IdempotencyKeyReused(StripeRefused):
    """Stripe saw this refund's idempotency key before with other parameters, so it did not run
    this call (and never will). It does not say whether that first use refunded anything."""

    code = "idempotency_error"


class StripeUnavailable(RefundError):
    """Stripe could not be reached or failed on its side; the same call may succeed later."""

    code = "stripe_unavailable"


class StripeThrottled(StripeUnavailable):
    """Stripe answered 429: too many calls on this account just now (`refunds.rate_limit` slows every
    process down when it sees one)."""


class StripeMisconfigured(RefundError):
    """Stripe rejected our credentials or our request shape: an operator must act."""

    code = "stripe_misconfigured"


class RequestNotFound(RefundError):
    code = "not_found"


class NotPending(RefundError):
    """The request is no longer waiting for a decision; `status` is where it is now."""

    code = "not_pending"

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class IdempotencyMismatch(RefundError):
    code = "idempotency_mismatch"


class InvalidEvent(RefundError):
    """A correctly signed Stripe event whose content we cannot use."""

    code = "invalid_event"


class SelfApproval(RefundError):
    """Nobody approves a refund they asked for."""

    code = "self_approval"


class OverApprovalLimit(RefundError):
    code = "over_approval_limit"


class AlreadyApproved(RefundError):
    """This approver already approved this request; the two-person rule needs someone else."""

    code = "already_approved"


class NotAnApprover(RefundError):
    """No active approver by that name (revoked, or never added)."""

    code = "unauthorized"


class Forbidden(RefundError):
    """The approver is known but their role does not allow this."""

    code = "forbidden"


class LinkInvalid(RefundError):
    """An approval link that is tampered, expired, used, or no longer matches its request."""

    code = "invalid_link"


class EventTooEarly(RefundError):
    """A Stripe event about our own refund that we have not recorded yet: Stripe should send it again."""

    code = "event_too_early"


class ApproverExists(RefundError):
    code = "approver_exists"


class ApproverNotFound(RefundError):
    code = "approver_not_found"


class InvalidJson(RefundError):
    """A request body that is not one JSON object: not UTF-8, not JSON, a repeated key, NaN, ..."""

    code = "invalid_json"


class InvalidRequest(RefundError):
    """A JSON body, header or query parameter that breaks the API's rules; the message names it."""

    code = "invalid_request"


class UnsupportedMediaType(RefundError):
    """A body sent without `Content-Type: application/json` to an endpoint that reads JSON."""

    code = "unsupported_media_type"
