"""The Stripe adapter: the only module that imports `stripe`.

It speaks in plain data (`ChargeInfo`, `RefundInfo`) and domain exceptions, so the service
never sees a Stripe object and tests can pass a fake with the same two methods.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import requests
import stripe
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from .errors import (
    ChargeNotFound,
    IdempotencyKeyReused,
    RefundError,
    StripeMisconfigured,
    StripeRefused,
    StripeThrottled,
    StripeUnavailable,
)

log = logging.getLogger(__name__)

# Stripe codes that mean "try the same call again later", even though they arrive as 4xx.
TRANSIENT_CODES = frozenset({"rate_limit", "lock_timeout", "idempotency_key_in_use"})


@dataclass(frozen=True)
class ChargeInfo:
    """What we need to know about a charge before refunding it. Amounts in minor units.

    The policy's facts: `created_at` (aware), the Stripe `customer_id`, the billing or receipt `email`, the card's
    `card_fingerprint`, the `product` named in the charge's metadata, and `early_fraud_warning`: True when Stripe
    Radar has an actionable early fraud warning on the charge (only looked up when asked, else False).
    """

    charge_id: str
    amount: int
    amount_refunded: int
    currency: str
    disputed: bool
    payment_intent_id: str | None = None
    created_at: datetime | None = None
    customer_id: str | None = None
    email: str | None = None
    card_fingerprint: str | None = None
    product: str | None = None
    early_fraud_warning: bool = False

    @property
    def remaining(self) -> int:
        return max(self.amount - self.amount_refunded, 0)


@dataclass(frozen=True)
class RefundInfo:
    refund_id: str
    charge_id: str
    amount: int
    currency: str
    status: str
    failure_reason: str | None = None
    metadata: dict[str, str] | None = None

    @classmethod
    def from_stripe(cls, refund: dict[str, Any], *, charge_id: str | None = None) -> RefundInfo:
        """From a Stripe refund object (as a dict: API answer or webhook event data)."""
        charge = refund.get("charge")
        if isinstance(charge, dict):
            charge = charge.get("id")
        return cls(
            refund_id=str(refund["id"]),
            charge_id=str(charge or charge_id or ""),
            amount=int(refund["amount"]),
            currency=str(refund["currency"]).lower(),
            status=str(refund.get("status") or "pending"),
            failure_reason=refund.get("failure_reason"),
            metadata={str(k): str(v) for k, v in (refund.get("metadata") or {}).items()},
        )


@dataclass(frozen=True)
class RefundParams:
    """Exactly what is sent to Stripe to create one refund, with the key that makes it once-only."""

    charge_id: str
    amount: int
    reason: str
    idempotency_key: str
    payment_intent_id: str | None = None
    metadata: dict[str, str] | None = None


class RefundGateway(Protocol):
    def get_charge(self, *, charge_id: str | None = None, payment_intent_id: str | None = None,
                   early_fraud_warnings: bool = False) -> ChargeInfo: ...

    def create_refund(self, params: RefundParams) -> RefundInfo: ...

    def get_refund(self, refund_id: str) -> RefundInfo: ...

    def find_refund(self, *, charge_id: str, metadata_key: str, metadata_value: str) -> RefundInfo | None: ...


class StripeGateway:
    """`RefundGateway` over a `stripe.StripeClient` with explicit retries.

    Raises `ChargeNotFound`, `StripeRefused` (final, with Stripe's code; `IdempotencyKeyReused`
    when the key was used before with other parameters), `StripeUnavailable` (transient: the same
    call may succeed later) or `StripeMisconfigured` (our key or request).
    """

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout_seconds: float = 20.0,
    ) -> None:
        base_addresses: dict[str, str] = {"api": api_base.rstrip("/")} if api_base else {}
        self._client = stripe.StripeClient(
            api_key,
            max_network_retries=max_network_retries,
            base_addresses=base_addresses,  # type: ignore[arg-type]
            http_client=stripe.RequestsClient(
                timeout=timeout_seconds,
                session=_Sessions(get_environ_proxies(api_base or stripe.DEFAULT_API_BASE)),  # type: ignore[arg-type]
            ),
        )

    def get_charge(self, *, charge_id: str | None = None, payment_intent_id: str | None = None,
                   early_fraud_warnings: bool = False) -> ChargeInfo:
        """The charge named by `charge_id`, or the latest charge of `payment_intent_id`. With
        `early_fraud_warnings`, one more call lists the charge's early fraud warnings (Stripe Radar)."""
        if payment_intent_id is not None:
            intent = self._request("retrieve payment intent", "get", f"/v1/payment_intents/{_id(payment_intent_id)}")
            latest = intent.get("latest_charge")
            if not latest:
                raise ChargeNotFound(f"Payment intent {payment_intent_id} has no charge to refund.")
            charge_id = latest if isinstance(latest, str) else latest["id"]
        if charge_id is None:
            raise ValueError("get_charge needs charge_id or payment_intent_id")
        charge = self._request("retrieve charge", "get", f"/v1/charges/{_id(charge_id)}")
        intent_id = charge.get("payment_intent")
        warned = early_fraud_warnings and self._early_fraud_warning(charge["id"])
        return charge_info(charge, intent_id if isinstance(intent_id, str) else payment_intent_id, warned)

    def _early_fraud_warning(self, charge_id: str) -> bool:
        """Whether the charge has an actionable early fraud warning (refunding can still prevent a dispute)."""
        page = self._request("list early fraud warnings", "get", "/v1/radar/early_fraud_warnings",
                             {"charge": charge_id, "limit": 100})
        return any(warning.get("actionable") for warning in page.get("data", []))

    def create_refund(self, params: RefundParams) -> RefundInfo:
        """Create the refund; the same `params.idempotency_key` never creates a second one."""
        body: dict[str, Any] = {"amount": params.amount, "reason": params.reason}
        if params.payment_intent_id:
            body["payment_intent"] = params.payment_intent_id
        else:
            body["charge"] = params.charge_id
        if params.metadata:
            body["metadata"] = params.metadata
        refund = self._request("create refund", "post", "/v1/refunds", body, idempotency_key=params.idempotency_key)
        return RefundInfo.from_stripe(refund, charge_id=params.charge_id)

    def get_refund(self, refund_id: str) -> RefundInfo:
        """The refund as Stripe has it now."""
        return RefundInfo.from_stripe(self._request("retrieve refund", "get", f"/v1/refunds/{_id(refund_id)}"))

    def find_refund(self, *, charge_id: str, metadata_key: str, metadata_value: str) -> RefundInfo | None:
        """The charge's refund whose metadata has `metadata_key` = `metadata_value`, if any."""
        params: dict[str, Any] = {"charge": charge_id, "limit": 100}
        while True:
            page = self._request("list refunds", "get", "/v1/refunds", params)
            for refund in page.get("data", []):
                if (refund.get("metadata") or {}).get(metadata_key) == metadata_value:
                    return RefundInfo.from_stripe(refund)
            if not page.get("has_more") or not page.get("data"):
                return None
            params["starting_after"] = page["data"][-1]["id"]

    def _request(self, what: str, method: str, path: str, params: dict[str, Any] | None = None, *,
                 idempotency_key: str | None = None) -> dict[str, Any]:
        """One Stripe API call through stripe-python (its retries, headers and error types); returns Stripe's
        JSON object as a dict, or raises a domain exception.

        `raw_request` rather than the typed services (`client.v1.charges.retrieve`): those build a StripeObject
        tree from every answer, which the service turned back into a dict at once. That round trip cost about a
        quarter of a millisecond of CPU per refund, for nothing the service reads.
        """
        options = {"idempotency_key": idempotency_key} if idempotency_key is not None else {}
        try:
            data: dict[str, Any] = self._client.raw_request(method, path, **(params or {}), **options).data
            return data
        except stripe.StripeError as exc:
            error = translate(exc)
            log.warning(
                "stripe %s failed: %s (%s, http %s, request %s)",
                what, error.code, type(exc).__name__, exc.http_status, exc.request_id,
            )
            raise error from None

    def list_refunds(self, *, created_gte: int, created_lt: int | None = None) -> Iterator[ListedRefund]:
        """Every refund Stripe made from `created_gte` (Unix seconds) to before `created_lt`, newest first.

        Pages through Stripe's list with stripe-python's auto-pagination (100 a page) as it is iterated;
        raises the domain exceptions `translate` gives, also mid-way.
        """
        params: dict[str, Any] = {"created": _created(created_gte, created_lt), "limit": 100}
        for refund in self._each("list refunds", self._client.v1.refunds.list, params):
            yield ListedRefund(RefundInfo.from_stripe(refund), created=_unix(refund["created"]),
                               reason=refund.get("reason"))

    def list_charges(self, *, created_gte: int, created_lt: int | None = None) -> Iterator[ListedCharge]:
        """Every charge created from `created_gte` to before `created_lt` (Unix seconds), newest first,
        each with the fee of its balance transaction (expanded) when Stripe has one. As `list_refunds`."""
        params: dict[str, Any] = {"created": _created(created_gte, created_lt), "limit": 100,
                                  "expand": ["data.balance_transaction"]}
        for charge in self._each("list charges", self._client.v1.charges.list, params):
            yield ListedCharge.from_stripe(charge)

    def _each(self, what: str, fn: Any, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Each object of a Stripe list, page after page, as plain dicts; a failure as a domain exception."""
        try:
            for item in fn(params=params).auto_paging_iter():
                yield item.to_dict()
        except stripe.StripeError as exc:
            error = translate(exc)
            log.warning("stripe %s failed: %s (%s, http %s)", what, error.code, type(exc).__name__, exc.http_status)
            raise error from None


def charge_info(charge: dict[str, Any], payment_intent_id: str | None, early_fraud_warning: bool) -> ChargeInfo:
    """A Stripe charge object (as a dict) as the facts the service uses."""
    customer = charge.get("customer")
    billing = charge.get("billing_details") or {}
    card = (charge.get("payment_method_details") or {}).get("card") or {}
    product = (charge.get("metadata") or {}).get("product")
    created = charge.get("created")
    return ChargeInfo(
        charge_id=charge["id"],
        amount=int(charge["amount"]),
        amount_refunded=int(charge.get("amount_refunded") or 0),
        currency=str(charge["currency"]).lower(),
        disputed=bool(charge.get("disputed")),
        payment_intent_id=payment_intent_id,
        created_at=datetime.fromtimestamp(int(created), UTC) if created is not None else None,
        customer_id=customer if isinstance(customer, str) else (customer or {}).get("id"),
        email=billing.get("email") or charge.get("receipt_email") or None,
        card_fingerprint=card.get("fingerprint") or None,
        product=str(product) if product else None,
        early_fraud_warning=early_fraud_warning,
    )


class _Sessions:
    """What stripe-python's `RequestsClient` takes as its session: sends each call through one `requests`
    transport adapter per thread (a pool of kept-alive connections), as a session would, without the session.

    A `requests.Session` merges cookies, auth, hooks, default headers and environment settings into every
    call, and a default one reads the proxy variables, NO_PROXY and ~/.netrc again each time: none of it
    applies to Stripe's API, and it cost about 0.2 ms of CPU per refund. The proxies that apply to Stripe's
    address (HTTPS_PROXY, NO_PROXY, ...) are taken once, when the gateway is made. The adapter raises
    requests' own exceptions, so stripe-python decides what to retry exactly as with a session; certificates
    are stripe-python's bundle (the `verify` it passes).
    """

    def __init__(self, proxies: dict[str, str]) -> None:
        self._proxies = proxies
        self._local = threading.local()

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None,
                timeout: float | None = None, verify: bool | str = True, **_: Any) -> requests.Response:
        adapter: HTTPAdapter | None = getattr(self._local, "adapter", None)
        if adapter is None:
            adapter = self._local.adapter = HTTPAdapter()
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method.upper(), url=url, headers=headers, data=data)
        response = adapter.send(prepared, timeout=timeout, verify=verify, proxies=self._proxies)
        _body = response.content  # read it all here, as a session does: a timeout while reading is a requests error
        return response


def translate(exc: stripe.StripeError) -> RefundError:
    """Map a stripe-python exception to the domain exception the service handles.

    Messages are Stripe's user-facing text, which never contains our key.
    """
    code = _error_code(exc)
    message = exc.user_message or "Stripe returned an error."
    if isinstance(exc, stripe.RateLimitError) or code == "rate_limit":
        return StripeThrottled("Stripe could not be reached or is busy; try again shortly.")
    if isinstance(exc, stripe.APIConnectionError) or code in TRANSIENT_CODES:
        return StripeUnavailable("Stripe could not be reached or is busy; try again shortly.")
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return StripeMisconfigured("Stripe rejected the service's API key; an operator must fix STRIPE_SECRET_KEY.")
    if isinstance(exc, stripe.IdempotencyError) and code != "idempotency_key_in_use":
        # Final for this call: the same key and parameters get the same answer forever. The key's
        # first use may have refunded, though: only the charge's refunds can tell (the service looks).
        return IdempotencyKeyReused("Stripe saw this refund's idempotency key used before with different "
                                    "parameters, so it did not run this call.")
    if code == "resource_missing":
        return ChargeNotFound(message)
    if isinstance(exc, stripe.InvalidRequestError) or isinstance(exc, stripe.CardError):
        return StripeRefused(message, code=code or "stripe_refused")
    # APIError and anything unknown: Stripe failed on its side.
    return StripeUnavailable("Stripe failed to answer the request; try again shortly.")


def _error_code(exc: stripe.StripeError) -> str:
    """Stripe's error code; stripe-python only sets `.code` for 400/402/404, so read the body too."""
    if exc.code:
        return str(exc.code)
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return str(error.get("code") or "") if isinstance(error, dict) else ""


@dataclass(frozen=True)
class ListedRefund:
    """A refund from Stripe's list: what `RefundInfo` holds, plus when Stripe made it and why."""

    info: RefundInfo
    created: datetime
    reason: str | None


@dataclass(frozen=True)
class ListedCharge:
    """A charge from Stripe's list, for the report's charge cache. `fee` is Stripe's processing fee in
    `fee_currency` (the balance transaction's), None when Stripe reports none (yet)."""

    charge_id: str
    created: datetime
    amount: int
    amount_refunded: int
    currency: str
    product: str | None
    fee: int | None
    fee_currency: str | None

    @classmethod
    def from_stripe(cls, charge: dict[str, Any]) -> ListedCharge:
        """From a Stripe charge object (a dict), its `balance_transaction` expanded or not."""
        txn = charge.get("balance_transaction")
        fee = txn if isinstance(txn, dict) and txn.get("fee") is not None else None
        product = (charge.get("metadata") or {}).get("product")
        return cls(charge_id=str(charge["id"]), created=_unix(charge["created"]), amount=int(charge["amount"]),
                   amount_refunded=int(charge.get("amount_refunded") or 0), currency=str(charge["currency"]).lower(),
                   product=str(product) if product else None, fee=int(fee["fee"]) if fee else None,
                   fee_currency=str(fee["currency"]).lower() if fee else None)


def _id(stripe_id: str) -> str:
    """An object id as one path segment (stripe-python's typed services quote it the same way)."""
    return quote(stripe_id, safe="")


def _created(gte: int, lt: int | None) -> dict[str, int]:
    return {"gte": gte} if lt is None else {"gte": gte, "lt": lt}


def _unix(seconds: Any) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)
