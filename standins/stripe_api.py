"""A stateful stand-in for the part of Stripe's v1 API that the refund service uses.

The real ``stripe.StripeClient(api_key, base_addresses={"api": base_url})`` works
against it over plain HTTP on loopback. Only the standard library is used.

Endpoints (all require ``Authorization: Bearer <api_key>``; HTTP Basic with the
key as user name, as in ``curl -u sk_test_standin:``, is accepted too):

* ``GET  /v1/charges/{id}``
* ``GET  /v1/payment_intents/{id}``
* ``POST /v1/refunds`` (``charge`` or ``payment_intent``, ``amount``, ``reason``,
  ``metadata[...]``, ``expand[]``)
* ``GET  /v1/refunds/{id}``
* ``GET  /v1/refunds?charge=...|payment_intent=...&limit=N`` (newest first,
  ``starting_after``/``ending_before`` pagination, ``created[gte|gt|lte|lt]=<unix>`` or ``created=<unix>``)
* ``GET  /v1/charges`` (the same pagination and ``created`` filters; ``expand[]=data.balance_transaction``
  gives each charge's fee, for charges added with ``fee=``)

Errors use Stripe's shape ``{"error": {"type", "code", "message", "param", ...}}``
and status codes, so stripe-python raises the same exception classes as against
Stripe (``InvalidRequestError``, ``AuthenticationError``, ``IdempotencyError``,
``RateLimitError``, ``APIError``, ``APIConnectionError``).

Idempotency follows Stripe: a POST's ``Idempotency-Key`` together with its
parameters is remembered with the response; a repeat with the same parameters
replays that response byte for byte (status and body, errors included) with the
header ``Idempotent-Replayed: true`` and changes nothing; a repeat with other
parameters is answered 400 ``idempotency_error``; a repeat while the first
request with that key is still executing is answered 409
``idempotency_key_in_use`` (type ``idempotency_error``) and does nothing, as
Stripe does (a later retry gets the first request's result). As at Stripe,
nothing is remembered for requests refused before the endpoint ran
(authentication, parameter validation, unknown route, injected faults, a key in
use). State changes are serialised by one lock and a request executes at once
under it, so a repeat arriving meanwhile waits and gets the replay; the
``"slow"`` fault makes a request execute for a while, holding its key but not
the lock, which is when Stripe answers a repeat ``idempotency_key_in_use``.

Run ``python -m standins.stripe_api --demo`` for a foreground server with demo data.
"""

import argparse
import base64
import binascii
import copy
import json
import logging
import os
import re
import secrets
import string
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from standins._http import StandInRequestHandler, StandInServerBase, run_in_foreground

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "sk_test_standin"
DEFAULT_PORT = 12111

FaultAction = Literal["error", "drop_before", "drop_after", "delay", "slow"]
FAULT_ACTIONS: frozenset[str] = frozenset({"error", "drop_before", "drop_after", "delay", "slow"})
REFUND_STATUSES: frozenset[str] = frozenset({"pending", "requires_action", "succeeded", "failed", "canceled"})
TERMINAL_UNSUCCESSFUL: frozenset[str] = frozenset({"failed", "canceled"})
REFUND_REASONS: tuple[str, ...] = ("duplicate", "fraudulent", "requested_by_customer")
ZERO_DECIMAL_CURRENCIES: frozenset[str] = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# Parameters accepted by POST /v1/refunds. The last three are accepted and ignored.
REFUND_CREATE_PARAMS: frozenset[str] = frozenset(
    {
        "charge",
        "payment_intent",
        "amount",
        "reason",
        "metadata",
        "expand",
        "instructions_email",
        "refund_application_fee",
        "reverse_transfer",
    }
)
REFUND_LIST_PARAMS: frozenset[str] = frozenset(
    {"charge", "payment_intent", "limit", "starting_after", "ending_before", "expand", "created"}
)
CHARGE_LIST_PARAMS: frozenset[str] = frozenset(
    {"customer", "payment_intent", "transfer_group", "limit", "starting_after", "ending_before", "expand", "created"}
)
CREATED_FILTERS: frozenset[str] = frozenset({"gt", "gte", "lt", "lte"})
# object type -> expandable field -> type of the object it expands to
_EXPANDABLE: dict[str, dict[str, str]] = {
    "charge": {"payment_intent": "payment_intent", "balance_transaction": "balance_transaction"},
    "payment_intent": {"latest_charge": "charge"},
    "refund": {"charge": "charge", "payment_intent": "payment_intent"},
}
_METADATA_MAX_KEYS = 50
_METADATA_MAX_KEY_LENGTH = 40
_METADATA_MAX_VALUE_LENGTH = 500
_ID_ALPHABET = string.ascii_letters + string.digits
_BRACKET_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_KEY_PREFIX = re.compile(r"^((?:sk|rk|pk)_(?:test|live)_)(.*)$", re.DOTALL)


def _new_id(prefix: str, length: int = 24) -> str:
    """Return a Stripe-looking object id such as ``re_3MtwBwLkdIwHu7ix0Yw3Rf2S``."""
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _encode(obj: Any) -> bytes:
    """Serialise a response body the way Stripe does (pretty-printed JSON)."""
    return json.dumps(obj, indent=2).encode("utf-8")


def mask_api_key(key: str) -> str:
    """Mask an API key for messages: ``sk_test_****`` or ``sk_test_*****...abcd``.

    Never returns the whole key; the last four characters are shown only when
    at least nine characters follow the ``sk_test_``-style prefix.
    """
    match = _KEY_PREFIX.match(key)
    prefix, rest = (match.group(1), match.group(2)) if match else ("", key)
    if len(rest) > 8:
        return prefix + "*" * (len(rest) - 4) + rest[-4:]
    return prefix + "****"


def format_amount(amount: int, currency: str) -> str:
    """Format minor units for messages: ``$25.00``, ``1500 JPY``, ``120.00 EUR``."""
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{amount} {currency.upper()}"
    major = f"{amount // 100}.{amount % 100:02d}"
    return f"${major}" if currency == "usd" else f"{major} {currency.upper()}"


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe-style form pairs into nested data.

    ``metadata[request_id]=42`` becomes ``{"metadata": {"request_id": "42"}}``;
    ``expand[]=a`` and ``expand[0]=a`` become ``{"expand": ["a"]}``. All leaf values
    stay strings, as at Stripe. Dicts whose keys are all digits become lists,
    except directly under ``metadata`` (whose keys are free-form).
    """
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        base, bracket, rest = raw_key.partition("[")
        segments = [raw_key]
        if bracket and base:
            found = _BRACKET_SEGMENT.findall(bracket + rest)
            if "".join(f"[{s}]" for s in found) == bracket + rest:
                segments = [base, *found]
        node = root
        for segment in segments[:-1]:
            key = segment if segment else str(len(node))
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        last = segments[-1] if segments[-1] else str(len(node))
        node[last] = value
    return {key: (value if key == "metadata" else _listify(value)) for key, value in root.items()}


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        items = {key: _listify(item) for key, item in value.items()}
        if items and all(key.isdigit() for key in items):
            return [items[key] for key in sorted(items, key=int)]
        return items
    return value


class _ApiError(Exception):
    """A Stripe-shaped error answer.

    ``saved`` says whether an idempotency key may remember this answer: False for
    refusals that happen before the endpoint runs (auth, validation, routing).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        saved: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.saved = saved
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body, with Stripe's key order and absent keys omitted."""
        error: dict[str, Any] = {}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        error["message"] = self.message
        if self.param:
            error["param"] = self.param
        error["type"] = self.error_type
        return {"error": error}


def _validation_error(message: str, *, code: str | None, param: str | None) -> _ApiError:
    return _ApiError(400, message, code=code, param=param, saved=False)


def _missing(kind: str, object_id: str, *, param: str, status: int) -> _ApiError:
    return _ApiError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    saved: bool = True


@dataclass
class _Fault:
    action: str
    method: str
    path_prefix: str
    remaining: int
    status: int
    code: str | None
    message: str | None
    error_type: str | None
    headers: dict[str, str]
    delay: float

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method == method) and path.startswith(self.path_prefix)

    def error(self) -> _ApiError:
        status = self.status
        error_type: str
        code: str | None
        if status == 429:
            error_type, code = "invalid_request_error", self.code or "rate_limit"
            message = "Request rate limit exceeded. (injected by the Stripe stand-in)"
        elif status >= 500:
            error_type, code = "api_error", self.code
            message = "An unknown error occurred (injected by the Stripe stand-in)"
        elif status == 402:
            error_type, code = "card_error", self.code
            message = "Your card was declined. (injected by the Stripe stand-in)"
        elif status == 409:
            error_type, code = "invalid_request_error", self.code or "lock_timeout"
            message = (
                "This object cannot be accessed right now because another API request "
                "or Stripe process is currently accessing it. (injected by the Stripe stand-in)"
            )
        else:
            error_type, code = "invalid_request_error", self.code
            message = "Injected error (by the Stripe stand-in)"
        return _ApiError(
            status,
            self.message or message,
            error_type=self.error_type or error_type,
            code=code,
            saved=False,
            headers=self.headers,
        )


class _TokenBucket:
    """``rate`` tokens a second, holding at most ``rate`` (a second's worth); not thread-safe."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("write_rate_limit must be positive")
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class _SavedResult:
    fingerprint: str
    reply: _Reply


class StripeStandIn(StandInServerBase):
    """Stateful HTTP stand-in for Stripe charges, payment intents and refunds.

    Thread-safe: tests may inspect and mutate it while the service under test
    talks to it over HTTP from other threads or processes. Every accessor returns
    deep copies, so callers cannot change the stand-in's state by accident.
    """

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, new_refund_status: str = "succeeded",
                 write_rate_limit: float | None = None) -> None:
        """Create a stopped stand-in accepting ``api_key``.

        ``new_refund_status`` is the status given to refunds created over HTTP
        (see the attribute of the same name). ``write_rate_limit``: allow that many
        POSTs a second (a token bucket holding a second's worth, as Stripe's limiter)
        and answer 429 ``rate_limit`` with ``Stripe-Should-Retry: false`` beyond,
        before authentication and idempotency; None (the default): no limit.
        """
        super().__init__()
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._api_key = api_key
        self._lock = threading.RLock()
        self._charges: dict[str, dict[str, Any]] = {}
        self._payment_intents: dict[str, dict[str, Any]] = {}
        self._refunds: dict[str, dict[str, Any]] = {}  # in creation order
        self._balance_transactions: dict[str, dict[str, Any]] = {}
        self._early_fraud_warnings: dict[str, dict[str, Any]] = {}  # in creation order
        self._requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        # Idempotency keys: results saved, and keys whose first request is still executing ("slow").
        self._idempotent: dict[str, _SavedResult] = {}
        self._executing: set[str] = set()
        # Set by release_slow() to end the "slow" executions under way; replaced by a fresh one then.
        self._slow_release = threading.Event()
        self._refund_creations = 0
        self._write_limit = _TokenBucket(write_rate_limit) if write_rate_limit is not None else None
        self.rate_limited = 0  # POSTs answered 429 by write_rate_limit
        self._new_refund_status = "succeeded"
        self.new_refund_status = new_refund_status

    # -- configuration ----------------------------------------------------------
    @property
    def api_key(self) -> str:
        """The only API key the stand-in accepts."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """``http://host:port`` to pass as ``base_addresses={"api": ...}``; needs start()."""
        return self._url(self._host, self.port)

    @property
    def new_refund_status(self) -> str:
        """Status of refunds created from now on (default ``succeeded``).

        ``pending``/``requires_action``/``succeeded`` count against the charge at
        once; ``failed``/``canceled`` refunds never do.
        """
        return self._new_refund_status

    @new_refund_status.setter
    def new_refund_status(self, status: str) -> None:
        if status not in REFUND_STATUSES:
            raise ValueError(f"unknown refund status {status!r}; use one of {sorted(REFUND_STATUSES)}")
        with self._lock:
            self._new_refund_status = status

    def _url(self, host: str, port: int) -> str:
        return f"http://{host}:{port}"

    # -- test data --------------------------------------------------------------
    def add_charge(
        self,
        amount: int,
        currency: str = "usd",
        *,
        charge_id: str | None = None,
        amount_refunded: int = 0,
        disputed: bool = False,
        with_payment_intent: bool = False,
        payment_intent_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        customer: str | None = None,
        receipt_email: str | None = None,
        card_fingerprint: str | None = None,
        created: int | None = None,
        fee: int | None = None,
    ) -> dict[str, Any]:
        """Create a succeeded charge of ``amount`` minor units and return it.

        ``customer`` (a ``cus_...`` id), ``receipt_email``, ``card_fingerprint``
        (``payment_method_details.card.fingerprint``) and ``created`` (Unix
        seconds, default now) are set as Stripe sets them.
        ``charge_id`` defaults to a generated ``ch_...`` id; ``amount_refunded``
        pre-refunds part of it (no refund objects are created for that).
        ``with_payment_intent`` (implied by ``payment_intent_id``) also creates a
        succeeded PaymentIntent whose ``latest_charge`` is this charge, and sets
        the charge's ``payment_intent``. ``created`` (Unix seconds) backdates it;
        ``fee`` gives it a balance transaction with that Stripe fee (in the charge's
        currency). Raises ValueError for invalid amounts or an id that already exists.
        """
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise ValueError(f"amount must be a positive integer, got {amount!r}")
        if not 0 <= amount_refunded <= amount:
            raise ValueError(f"amount_refunded must be between 0 and {amount}")
        if not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise ValueError(f"currency must be a three-letter ISO code, got {currency!r}")
        currency = currency.lower()
        created = int(time.time()) if created is None else int(created)
        with self._lock:
            charge_id = charge_id or _new_id("ch")
            if charge_id in self._charges:
                raise ValueError(f"charge {charge_id} already exists")
            pi_id: str | None = None
            if with_payment_intent or payment_intent_id:
                pi_id = payment_intent_id or _new_id("pi")
                if pi_id in self._payment_intents:
                    raise ValueError(f"payment intent {pi_id} already exists")
                self._payment_intents[pi_id] = {
                    "id": pi_id,
                    "object": "payment_intent",
                    "amount": amount,
                    "amount_received": amount,
                    "created": created,
                    "currency": currency,
                    "latest_charge": charge_id,
                    "livemode": False,
                    "metadata": {},
                    "status": "succeeded",
                }
            self._charges[charge_id] = {
                "id": charge_id,
                "object": "charge",
                "amount": amount,
                "amount_captured": amount,
                "amount_refunded": amount_refunded,
                "billing_details": {"address": None, "email": None, "name": None, "phone": None},
                "captured": True,
                "created": created,
                "currency": currency,
                "customer": customer,
                "disputed": disputed,
                "livemode": False,
                "metadata": dict(metadata or {}),
                "paid": True,
                "payment_intent": pi_id,
                "payment_method_details": {"type": "card", "card": {
                    "brand": "visa", "country": "US", "exp_month": 12, "exp_year": 2030,
                    "fingerprint": card_fingerprint or _new_id("fp")[3:19], "funding": "credit", "last4": "4242"}},
                "receipt_email": receipt_email,
                "refunded": amount_refunded == amount,
                "status": "succeeded",
                "balance_transaction": self._add_balance_transaction(amount, currency, fee, created),
            }
            return copy.deepcopy(self._charges[charge_id])

    def _add_balance_transaction(self, amount: int, currency: str, fee: int | None, created: int) -> str | None:
        """The balance transaction of a charge with Stripe's ``fee`` (None: the charge has none). Needs _lock."""
        if fee is None:
            return None
        txn_id = _new_id("txn")
        self._balance_transactions[txn_id] = {
            "id": txn_id, "object": "balance_transaction", "amount": amount, "created": created,
            "currency": currency, "fee": fee, "net": amount - fee, "status": "available", "type": "charge",
        }
        return txn_id

    def add_refund(
        self,
        charge_id: str,
        amount: int | None = None,
        *,
        created: int | None = None,
        status: str = "succeeded",
        reason: str | None = None,
        failure_reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A refund made outside the API under test (in the Stripe Dashboard), at ``created`` (Unix seconds).

        ``amount`` defaults to what remains; a ``succeeded`` or ``pending`` refund counts against the
        charge. KeyError for an unknown charge, ValueError for more than remains.
        """
        if status not in REFUND_STATUSES:
            raise ValueError(f"unknown refund status {status!r}")
        with self._lock:
            charge = self._charges[charge_id]
            remaining = charge["amount"] - charge["amount_refunded"]
            amount = remaining if amount is None else amount
            if not 0 < amount <= remaining:
                raise ValueError(f"{amount} does not fit in the {remaining} that remains on {charge_id}")
            refund = {
                "id": _new_id("re"), "object": "refund", "amount": amount, "balance_transaction": None,
                "charge": charge_id, "created": int(time.time()) if created is None else created,
                "currency": charge["currency"],
                "failure_reason": (failure_reason or "unknown") if status == "failed" else None,
                "metadata": dict(metadata or {}), "payment_intent": charge["payment_intent"], "reason": reason,
                "receipt_number": None, "source_transfer_reversal": None, "status": status,
                "transfer_reversal": None,
            }
            if status not in TERMINAL_UNSUCCESSFUL:
                charge["amount_refunded"] += amount
                charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            self._refunds[refund["id"]] = refund
            return copy.deepcopy(refund)
    def set_charge_created(self, charge_id: str, created: int) -> None:
        """Set when ``charge_id`` was made (Unix seconds), to make it old. Raises KeyError for an unknown charge."""
        with self._lock:
            self._charges[charge_id]["created"] = int(created)

    def add_early_fraud_warning(self, charge_id: str, *, actionable: bool = True,
                                fraud_type: str = "made_with_stolen_card") -> dict[str, Any]:
        """Open a Stripe Radar early fraud warning (``issfr_...``) on ``charge_id`` and return it.
        Raises KeyError for an unknown charge."""
        with self._lock:
            charge = self._charges[charge_id]
            warning = {"id": _new_id("issfr"), "object": "radar.early_fraud_warning", "actionable": actionable,
                       "charge": charge_id, "created": int(time.time()), "fraud_type": fraud_type,
                       "livemode": False, "payment_intent": charge["payment_intent"]}
            self._early_fraud_warnings[warning["id"]] = warning
            return copy.deepcopy(warning)

    def seed_demo(self) -> list[dict[str, Any]]:
        """Create the demo charges (idempotent) and return them.

        ``ch_demo_small`` 25.00 USD, ``ch_demo_large`` 200.00 USD,
        ``ch_demo_refunded`` 50.00 USD fully refunded, ``ch_demo_disputed``
        30.00 USD disputed, ``ch_demo_jpy`` 1500 JPY, and ``ch_demo_pi``
        120.00 EUR paid through PaymentIntent ``pi_demo_large``.
        """
        demo: list[tuple[str, int, str, dict[str, Any]]] = [
            ("ch_demo_small", 2500, "usd", {}),
            ("ch_demo_large", 20000, "usd", {}),
            ("ch_demo_refunded", 5000, "usd", {"amount_refunded": 5000}),
            ("ch_demo_disputed", 3000, "usd", {"disputed": True}),
            ("ch_demo_jpy", 1500, "jpy", {}),
            ("ch_demo_pi", 12000, "eur", {"payment_intent_id": "pi_demo_large"}),
        ]
        charges: list[dict[str, Any]] = []
        with self._lock:
            for charge_id, amount, currency, options in demo:
                if charge_id in self._charges:
                    charges.append(copy.deepcopy(self._charges[charge_id]))
                else:
                    charges.append(self.add_charge(amount, currency, charge_id=charge_id, **options))
        return charges

    def export_state(self) -> dict[str, Any]:
        """Charges, payment intents, refunds and saved idempotent answers, as JSON-ready data.

        Not exported: recorded requests, faults, refund statuses to come. ``import_state`` reads it back.
        """
        with self._lock:
            return copy.deepcopy({
                "charges": self._charges,
                "payment_intents": self._payment_intents,
                "refunds": self._refunds,
                "balance_transactions": self._balance_transactions,
                "refund_creations": self._refund_creations,
                "idempotent": {
                    key: {"fingerprint": saved.fingerprint, "status": saved.reply.status,
                          "body": saved.reply.body.decode("utf-8"), "headers": saved.reply.headers}
                    for key, saved in dict(self._idempotent).items()
                },
            })

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Replace charges, payment intents, refunds and idempotent answers with ``export_state()``'s."""
        with self._lock:
            self._charges = copy.deepcopy(dict(state["charges"]))
            self._payment_intents = copy.deepcopy(dict(state["payment_intents"]))
            self._refunds = copy.deepcopy(dict(state["refunds"]))
            self._balance_transactions = copy.deepcopy(dict(state.get("balance_transactions", {})))
            self._refund_creations = int(state["refund_creations"])
            self._idempotent.clear()
            for key, saved in state["idempotent"].items():
                reply = _Reply(saved["status"], saved["body"].encode("utf-8"), dict(saved["headers"]))
                self._idempotent[key] = _SavedResult(saved["fingerprint"], reply)

    def reset(self) -> None:
        """Forget all charges, refunds, recorded requests, faults and idempotency keys."""
        with self._lock:
            self._charges.clear()
            self._payment_intents.clear()
            self._refunds.clear()
            self._balance_transactions.clear()
            self._early_fraud_warnings.clear()
            self._requests.clear()
            self._faults.clear()
            self._idempotent.clear()
            self._executing.clear()
            self._refund_creations = 0

    def set_refund_status(self, refund_id: str, status: str, failure_reason: str | None = None) -> dict[str, Any]:
        """Move a refund to ``status`` (as Stripe would asynchronously) and return it.

        Going to ``failed``/``canceled`` gives the amount back to the charge
        (``amount_refunded`` decreases, ``refunded`` becomes false). A failed
        refund gets ``failure_reason`` (default ``unknown``). Those two states are
        final: leaving them raises ValueError. Unknown refund: KeyError.
        """
        if status not in REFUND_STATUSES:
            raise ValueError(f"unknown refund status {status!r}; use one of {sorted(REFUND_STATUSES)}")
        with self._lock:
            refund = self._refunds.get(refund_id)
            if refund is None:
                raise KeyError(refund_id)
            old = refund["status"]
            if old in TERMINAL_UNSUCCESSFUL and status != old:
                raise ValueError(f"refund {refund_id} is {old}, which is final at Stripe")
            if status in TERMINAL_UNSUCCESSFUL and old not in TERMINAL_UNSUCCESSFUL:
                charge = self._charges[refund["charge"]]
                charge["amount_refunded"] = max(0, charge["amount_refunded"] - refund["amount"])
                charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            refund["status"] = status
            if failure_reason is not None:
                refund["failure_reason"] = failure_reason
            elif status == "failed" and refund["failure_reason"] is None:
                refund["failure_reason"] = "unknown"
            return copy.deepcopy(refund)

    # -- inspection -------------------------------------------------------------
    def charge(self, charge_id: str) -> dict[str, Any]:
        """The charge as the API would return it; KeyError if unknown."""
        with self._lock:
            return copy.deepcopy(self._charges[charge_id])

    def payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        """The PaymentIntent as the API would return it; KeyError if unknown."""
        with self._lock:
            return copy.deepcopy(self._payment_intents[payment_intent_id])

    def refund(self, refund_id: str) -> dict[str, Any]:
        """The refund as the API would return it; KeyError if unknown."""
        with self._lock:
            return copy.deepcopy(self._refunds[refund_id])

    @property
    def refunds(self) -> list[dict[str, Any]]:
        """All refunds created over HTTP, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._refunds.values()))

    def refund_creations(self) -> int:
        """How many refund POSTs actually created a refund (replays do not count)."""
        with self._lock:
            return self._refund_creations

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received, in arrival order, faulted ones included.

        Each is ``{"method", "path", "params", "idempotency_key", "authorized",
        "fault", "status", "replayed"}``: ``params`` is the decoded query (GET) or
        form body (POST); ``idempotency_key`` is None unless a POST carried one;
        ``fault`` is the injected action applied, if any; ``status`` is the HTTP
        status answered (None while in flight or when the connection was dropped);
        ``replayed`` is True when an idempotent result was replayed.
        """
        with self._lock:
            return copy.deepcopy(self._requests)

    def idempotency_keys(self, path: str = "/v1/refunds") -> list[str]:
        """Idempotency keys of POSTs to exactly ``path``, in arrival order, repeats kept."""
        with self._lock:
            return [
                r["idempotency_key"]
                for r in self._requests
                if r["method"] == "POST" and r["path"] == path and r["idempotency_key"]
            ]

    # -- fault injection ----------------------------------------------------------
    def inject(
        self,
        action: FaultAction,
        *,
        method: str = "POST",
        path_prefix: str = "/v1/refunds",
        times: int = 1,
        status: int = 500,
        code: str | None = None,
        message: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Queue a fault for the next ``times`` requests matching method and path prefix.

        Actions:

        * ``"error"``: answer ``status`` with a Stripe-shaped error and do nothing
          else. Defaults by status: 5xx ``api_error``; 429 ``rate_limit``; 409
          ``lock_timeout``; others ``invalid_request_error``. ``code``,
          ``message`` and ``error_type`` override; ``headers`` are added to the
          answer (e.g. ``{"Stripe-Should-Retry": "false"}``).
        * ``"drop_before"``: close the connection without answering or acting.
        * ``"drop_after"``: act normally (e.g. create the refund, remembering the
          idempotency key), then close the connection without answering.
        * ``"delay"``: wait ``delay`` seconds, then answer normally.
        * ``"slow"``: take the idempotency key, then execute for ``delay``
          seconds (or until ``release_slow()``) before acting and answering; a
          request reusing the key meanwhile gets ``409 idempotency_key_in_use``.

        ``delay`` is waited before any action, except by ``"slow"`` (so
        ``drop_after`` with a delay simulates a client timeout after the work was done). ``method="*"``
        matches any method. Each request consumes at most one fault: the
        earliest queued one that matches. Faults are applied before
        authentication and idempotency handling.
        """
        if action not in FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; use one of {sorted(FAULT_ACTIONS)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        if delay < 0:
            raise ValueError("delay must not be negative")
        if action == "error" and not 400 <= status <= 599:
            raise ValueError("an injected error needs a 4xx or 5xx status")
        with self._lock:
            self._faults.append(
                _Fault(
                    action=action,
                    method=method.upper(),
                    path_prefix=path_prefix,
                    remaining=times,
                    status=status,
                    code=code,
                    message=message,
                    error_type=error_type,
                    headers=dict(headers or {}),
                    delay=delay,
                )
            )

    def release_slow(self) -> None:
        """Let every request now executing under a ``"slow"`` fault finish at once.

        With a long ``delay``, a test decides when the first request ends instead of racing a timer;
        "slow" requests that start later wait their own ``delay`` again.
        """
        with self._lock:
            released, self._slow_release = self._slow_release, threading.Event()
        released.set()

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many faulted requests are still queued (sum of remaining ``times``)."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._faults[index]
                return fault
        return None

    # -- HTTP -------------------------------------------------------------------
    def _serve(self, handler: StandInRequestHandler) -> None:
        method = handler.command.upper()
        target = urlsplit(handler.path)
        path = target.path
        body = handler.read_body()
        params = self._decode_params(target.query, body)
        idempotency_key = handler.headers.get("Idempotency-Key") if method == "POST" else None
        presented_key = _key_from_authorization(handler.headers.get("Authorization"))
        authorized = presented_key is not None and secrets.compare_digest(
            presented_key.encode("utf-8"), self._api_key.encode("utf-8")
        )
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "params": params,
            "idempotency_key": idempotency_key,
            "authorized": authorized,
            "fault": None,
            "status": None,
            "replayed": False,
        }
        with self._lock:
            fault = self._take_fault(method, path)
            record["fault"] = fault.action if fault else None
            # Taken with the record, so a release_slow() once the request is seen reaches it.
            release = self._slow_release
            self._requests.append(record)
            limited = fault is None and method == "POST" and self._write_limit is not None \
                and not self._write_limit.take(time.monotonic())
            self.rate_limited += limited
        if fault is not None:
            if fault.action != "slow":
                self._sleep(fault.delay)
            if fault.action == "drop_before":
                logger.debug("%s %s -> dropped before acting (injected)", method, path)
                handler.drop()
                return
        if fault is not None and fault.action == "error":
            reply = self._error_reply(fault.error())
        elif limited:
            reply = self._error_reply(_ApiError(
                429, "Request rate limit exceeded. (the Stripe stand-in's write_rate_limit)", code="rate_limit",
                saved=False, headers={"Stripe-Should-Retry": "false"}))
        else:
            executing = fault.delay if fault is not None and fault.action == "slow" else 0.0
            reply = self._respond(method, path, params, idempotency_key, presented_key, authorized, executing, release)
        replayed = reply.headers.get("Idempotent-Replayed") == "true"
        if fault is not None and fault.action == "drop_after":
            with self._lock:
                record["replayed"] = replayed
            logger.debug("%s %s -> %d, dropped after acting (injected)", method, path, reply.status)
            handler.drop()
            return
        with self._lock:
            record["status"] = reply.status
            record["replayed"] = replayed
        headers = {"Request-Id": _new_id("req", 14), **reply.headers}
        logger.debug("%s %s -> %d%s", method, path, reply.status, " (replay)" if replayed else "")
        handler.send_bytes(reply.status, reply.body, "application/json", headers)

    @staticmethod
    def _decode_params(query: str, body: bytes) -> dict[str, Any]:
        pairs = parse_qsl(query, keep_blank_values=True)
        if body:
            pairs += parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return parse_form(pairs)

    def _respond(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        presented_key: str | None,
        authorized: bool,
        executing: float = 0.0,
        release: threading.Event | None = None,
    ) -> _Reply:
        if not authorized:
            return self._error_reply(_auth_error(presented_key))
        route = self._route(method, path)
        if route is None:
            return self._error_reply(
                _ApiError(
                    404,
                    f"Unrecognized request URL ({method}: {path}). Please see "
                    "https://stripe.com/docs or we can help at https://support.stripe.com/.",
                    saved=False,
                )
            )
        endpoint, args = route
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        with self._lock:
            if idempotency_key:
                early = self._idempotent_answer(idempotency_key, fingerprint)
                if early is not None:
                    return early
            if not executing:
                # Executes at once, under the lock: a repeat of the key waits for it, then gets its replay.
                return self._execute(endpoint, args, params, idempotency_key, fingerprint)
            if idempotency_key:
                self._executing.add(idempotency_key)
        try:
            # "slow": executing for a while, holding the key, not the lock
            self._sleep_until(release or self._slow_release, executing)
        finally:
            with self._lock:
                if idempotency_key:
                    self._executing.discard(idempotency_key)
                reply = self._execute(endpoint, args, params, idempotency_key, fingerprint)
        return reply

    def _sleep_until(self, release: threading.Event, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early on ``release`` or when the stand-in is stopped."""
        deadline = time.monotonic() + seconds
        while not release.is_set() and not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            release.wait(min(left, 0.05))  # two events to watch: look at the other one now and then

    def _execute(
        self, endpoint: Any, args: tuple[str, ...], params: dict[str, Any], idempotency_key: str | None,
        fingerprint: str,
    ) -> _Reply:
        """Run the endpoint and remember its answer under the key (unless refused before it ran). Needs _lock."""
        try:
            reply = _Reply(200, _encode(endpoint(params, *args)))
        except _ApiError as err:
            reply = self._error_reply(err)
        if idempotency_key:
            reply.headers["Idempotency-Key"] = idempotency_key
            if reply.saved:
                self._idempotent[idempotency_key] = _SavedResult(fingerprint, reply)
        return reply

    def _idempotent_answer(self, key: str, fingerprint: str) -> _Reply | None:
        """What a request with a known `key` gets instead of executing; None for a new key. Needs _lock."""
        if key in self._executing:
            return self._error_reply(
                _ApiError(
                    409,
                    "There is currently another in-progress request using this Stripe Idempotency Key "
                    "(that probably means you submitted twice, and the other request is still going "
                    f"through): {key}. Please try again later.",
                    error_type="idempotency_error",
                    code="idempotency_key_in_use",
                    saved=False,
                )
            )
        saved = self._idempotent.get(key)
        if saved is None:
            return None
        if saved.fingerprint != fingerprint:
            return self._error_reply(
                _ApiError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    f"first used with. Try using a key other than '{key}' if you meant to execute a "
                    "different request.",
                    error_type="idempotency_error",
                    saved=False,
                )
            )
        return _Reply(saved.reply.status, saved.reply.body, {**saved.reply.headers, "Idempotent-Replayed": "true"})

    @staticmethod
    def _error_reply(err: _ApiError) -> _Reply:
        return _Reply(err.status, _encode(err.body()), dict(err.headers), saved=err.saved)

    def _route(self, method: str, path: str) -> tuple[Any, tuple[str, ...]] | None:
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"/v1/charges", self._list_charges),
            ("GET", r"/v1/charges/([^/]+)", self._get_charge),
            ("GET", r"/v1/payment_intents/([^/]+)", self._get_payment_intent),
            ("POST", r"/v1/refunds", self._create_refund),
            ("GET", r"/v1/refunds", self._list_refunds),
            ("GET", r"/v1/refunds/([^/]+)", self._get_refund),
            ("GET", r"/v1/radar/early_fraud_warnings", self._list_early_fraud_warnings),
        ]
        for route_method, pattern, endpoint in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return endpoint, tuple(unquote(g) for g in match.groups())
        return None

    # -- endpoints (called with self._lock held) ---------------------------------
    def _get_charge(self, params: dict[str, Any], charge_id: str) -> dict[str, Any]:
        _check_params(params, {"expand"})
        expand = _expand_paths(params, "charge")
        charge = self._charges.get(charge_id)
        if charge is None:
            raise _missing("charge", charge_id, param="id", status=404)
        return self._expanded(charge, expand)

    def _get_payment_intent(self, params: dict[str, Any], pi_id: str) -> dict[str, Any]:
        _check_params(params, {"expand"})
        expand = _expand_paths(params, "payment_intent")
        payment_intent = self._payment_intents.get(pi_id)
        if payment_intent is None:
            raise _missing("payment_intent", pi_id, param="id", status=404)
        return self._expanded(payment_intent, expand)

    def _get_refund(self, params: dict[str, Any], refund_id: str) -> dict[str, Any]:
        _check_params(params, {"expand"})
        expand = _expand_paths(params, "refund")
        refund = self._refunds.get(refund_id)
        if refund is None:
            raise _missing("refund", refund_id, param="id", status=404)
        return self._expanded(refund, expand)

    def _list_refunds(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_params(params, REFUND_LIST_PARAMS)
        expand = _expand_paths(params, "refund", in_list=True)
        limit = _parse_int(params.get("limit"), "limit", minimum=1, maximum=100)
        limit = 10 if limit is None else limit
        charge_id = _optional_string(params, "charge")
        pi_id = _optional_string(params, "payment_intent")
        created = _created_filter(params)
        items = [
            r
            for r in _newest_first(self._refunds.values())
            if (charge_id is None or r["charge"] == charge_id) and (pi_id is None or r["payment_intent"] == pi_id)
            and created(r["created"])
        ]
        starting_after = _optional_string(params, "starting_after")
        ending_before = _optional_string(params, "ending_before")
        if starting_after is not None and ending_before is not None:
            raise _validation_error(
                "You may only specify one of these parameters: ending_before, starting_after.",
                code="parameters_exclusive",
                param="ending_before",
            )
        ids = [r["id"] for r in items]
        if starting_after is not None:
            if starting_after not in ids:
                raise _missing("refund", starting_after, param="starting_after", status=400)
            items = items[ids.index(starting_after) + 1 :]
            page, has_more = items[:limit], len(items) > limit
        elif ending_before is not None:
            if ending_before not in ids:
                raise _missing("refund", ending_before, param="ending_before", status=400)
            items = items[: ids.index(ending_before)]
            page, has_more = items[-limit:], len(items) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        return {
            "object": "list",
            "data": [self._expanded(r, expand) for r in page],
            "has_more": has_more,
            "url": "/v1/refunds",
        }

    def _list_charges(self, params: dict[str, Any]) -> dict[str, Any]:
        """``GET /v1/charges``: newest first, ``created`` filters, ``starting_after``/``ending_before``."""
        _check_params(params, CHARGE_LIST_PARAMS)
        expand = _expand_paths(params, "charge", in_list=True)
        limit = _parse_int(params.get("limit"), "limit", minimum=1, maximum=100)
        created = _created_filter(params)
        pi_id = _optional_string(params, "payment_intent")
        items = [c for c in _newest_first(self._charges.values())
                 if created(c["created"]) and (pi_id is None or c["payment_intent"] == pi_id)]
        page, has_more = _page(items, params, "charge", 10 if limit is None else limit)
        return {"object": "list", "data": [self._expanded(c, expand) for c in page], "has_more": has_more,
                "url": "/v1/charges"}

    def _list_early_fraud_warnings(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first, filtered by ``charge`` or ``payment_intent`` (one page: ``limit``, default 10)."""
        _check_params(params, {"charge", "payment_intent", "limit", "expand"})
        limit = _parse_int(params.get("limit"), "limit", minimum=1, maximum=100)
        limit = 10 if limit is None else limit
        charge_id = _optional_string(params, "charge")
        pi_id = _optional_string(params, "payment_intent")
        if charge_id is not None and pi_id is not None:
            raise _validation_error("You may only specify one of these parameters: charge, payment_intent.",
                                    code="parameters_exclusive", param="payment_intent")
        items = [w for w in reversed(self._early_fraud_warnings.values())
                 if (charge_id is None or w["charge"] == charge_id) and (pi_id is None or w["payment_intent"] == pi_id)]
        return {"object": "list", "data": copy.deepcopy(items[:limit]), "has_more": len(items) > limit,
                "url": "/v1/radar/early_fraud_warnings"}

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        # Validation first: these refusals are not remembered for idempotency keys.
        _check_params(params, REFUND_CREATE_PARAMS)
        charge_id = _optional_string(params, "charge")
        pi_id = _optional_string(params, "payment_intent")
        if charge_id and pi_id:
            raise _validation_error(
                "You may only specify one of these parameters: charge, payment_intent.",
                code="parameters_exclusive",
                param="payment_intent",
            )
        if not charge_id and not pi_id:
            raise _validation_error(
                "One of the following params should be provided for this request: payment_intent or charge.",
                code="parameter_missing",
                param="charge",
            )
        amount = _parse_int(params.get("amount"), "amount", minimum=1)
        reason = _optional_string(params, "reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise _validation_error(
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                code=None,
                param="reason",
            )
        metadata = _parse_metadata(params.get("metadata"))
        expand = _expand_paths(params, "refund")

        # The endpoint runs: from here on, refusals are remembered like successes.
        if pi_id:
            payment_intent = self._payment_intents.get(pi_id)
            if payment_intent is None:
                raise _missing("payment_intent", pi_id, param="payment_intent", status=400)
            charge = self._charges[payment_intent["latest_charge"]]
        else:
            assert charge_id is not None
            found = self._charges.get(charge_id)
            if found is None:
                raise _missing("charge", charge_id, param="charge", status=400)
            charge = found
        if charge["disputed"]:
            raise _ApiError(
                400,
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise _ApiError(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount is None:
            amount = remaining
        elif amount > remaining:
            raise _ApiError(
                400,
                f"Refund amount ({format_amount(amount, charge['currency'])}) is greater "
                "than unrefunded amount on charge "
                f"({format_amount(remaining, charge['currency'])})",
                code="amount_too_large",
                param="amount",
            )
        status = self._new_refund_status
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": None,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "failure_reason": "unknown" if status == "failed" else None,
            "metadata": metadata,
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": status,
            "transfer_reversal": None,
        }
        if status not in TERMINAL_UNSUCCESSFUL:
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        self._refunds[refund["id"]] = refund
        self._refund_creations += 1
        logger.debug("created %s for %s: %d %s", refund["id"], charge["id"], amount, charge["currency"])
        return self._expanded(refund, expand)

    def _expanded(self, obj: dict[str, Any], paths: list[list[str]]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        for parts in paths:
            node = result
            for part in parts:
                value = node.get(part)
                if isinstance(value, str):
                    value = self._object_by_id(value)
                    node[part] = value
                if not isinstance(value, dict):
                    break
                node = value
        return result

    def _object_by_id(self, object_id: str) -> dict[str, Any] | str:
        for store in (self._charges, self._payment_intents, self._refunds, self._balance_transactions):
            if object_id in store:
                return copy.deepcopy(store[object_id])
        return object_id


def _key_from_authorization(header: str | None) -> str | None:
    """Extract the API key from ``Bearer <key>`` or ``Basic base64(<key>:)``."""
    key: str | None = None
    if header:
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            key = credentials
        elif scheme.lower() == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            key = decoded.partition(":")[0] or None
    return key


def _auth_error(key: str | None) -> _ApiError:
    if key is None:
        message = (
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
            "details, or we can help at https://support.stripe.com/."
        )
    else:
        message = f"Invalid API Key provided: {mask_api_key(key)}"
    return _ApiError(401, message, saved=False, headers={"WWW-Authenticate": 'Bearer realm="Stripe"'})


def _check_params(params: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _validation_error(f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def _optional_string(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _validation_error(f"Invalid string: {json.dumps(value)}", code=None, param=name)
    return value


def _parse_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]+", value.strip()):
        shown = value if isinstance(value, str) else json.dumps(value)
        raise _validation_error(f"Invalid integer: {shown}", code="parameter_invalid_integer", param=name)
    number = int(value)
    if minimum is not None and number < minimum:
        raise _validation_error(
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    if maximum is not None and number > maximum:
        raise _validation_error(
            f"This value must be less than or equal to {maximum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    return number


def _parse_metadata(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise _validation_error("Invalid hash", code=None, param="metadata")
    if len(value) > _METADATA_MAX_KEYS:
        raise _validation_error(
            f"Metadata can have up to {_METADATA_MAX_KEYS} keys, but you passed in {len(value)} keys.",
            code=None,
            param="metadata",
        )
    metadata: dict[str, str] = {}
    for key, item in value.items():
        if len(key) > _METADATA_MAX_KEY_LENGTH:
            raise _validation_error(
                f"Metadata keys can have up to {_METADATA_MAX_KEY_LENGTH} characters, but "
                f"you passed in a key that is {len(key)} characters long.",
                code=None,
                param=f"metadata[{key}]",
            )
        if not isinstance(item, str):
            raise _validation_error(
                "Invalid string: metadata values must be strings",
                code=None,
                param=f"metadata[{key}]",
            )
        if len(item) > _METADATA_MAX_VALUE_LENGTH:
            raise _validation_error(
                f"Metadata values can have up to {_METADATA_MAX_VALUE_LENGTH} characters, "
                f"but you passed in a value that is {len(item)} characters long.",
                code=None,
                param=f"metadata[{key}]",
            )
        metadata[key] = item
    return metadata


def _expand_paths(params: Mapping[str, Any], object_type: str, *, in_list: bool = False) -> list[list[str]]:
    """Validate ``expand`` against what can be expanded and split it into paths."""
    raw = params.get("expand")
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise _validation_error("Invalid array", code=None, param="expand")
    paths: list[list[str]] = []
    for text in raw:
        parts = text.split(".")
        if in_list:
            if parts[0] != "data" or len(parts) < 2:
                raise _validation_error(f"This property cannot be expanded ({text}).", code=None, param="expand")
            parts = parts[1:]
        current = object_type
        for part in parts:
            target = _EXPANDABLE.get(current, {}).get(part)
            if target is None:
                raise _validation_error(f"This property cannot be expanded ({text}).", code=None, param="expand")
            current = target
        paths.append(parts)
    return paths


def _newest_first(objects: Any) -> list[dict[str, Any]]:
    """Stripe's list order: newest ``created`` first; among equals, the one made last first."""
    return sorted(reversed(list(objects)), key=lambda o: -int(o["created"]))


def _created_filter(params: Mapping[str, Any]) -> Any:
    """The ``created`` list filter (``created=<unix>`` or ``created[gte|gt|lte|lt]=<unix>``) as a predicate."""
    raw = params.get("created")
    if raw is None:
        return lambda _: True
    if isinstance(raw, str):
        exact = _parse_int(raw, "created")
        return lambda value: value == exact
    if not isinstance(raw, dict):
        raise _validation_error("Invalid hash", code=None, param="created")
    bounds: dict[str, int] = {}
    for key, value in raw.items():
        if key not in CREATED_FILTERS:
            raise _validation_error(f"Received unknown parameter: created[{key}]", code="parameter_unknown",
                                    param=f"created[{key}]")
        number = _parse_int(value, f"created[{key}]")
        assert number is not None
        bounds[key] = number
    checks = {"gt": lambda v, b: v > b, "gte": lambda v, b: v >= b, "lt": lambda v, b: v < b,
              "lte": lambda v, b: v <= b}
    return lambda value: all(checks[key](value, bound) for key, bound in bounds.items())


def _page(items: list[dict[str, Any]], params: Mapping[str, Any], kind: str,
          limit: int) -> tuple[list[dict[str, Any]], bool]:
    """One page of ``items`` after ``starting_after`` or before ``ending_before``, and whether more follow."""
    starting_after = _optional_string(params, "starting_after")
    ending_before = _optional_string(params, "ending_before")
    if starting_after is not None and ending_before is not None:
        raise _validation_error("You may only specify one of these parameters: ending_before, starting_after.",
                                code="parameters_exclusive", param="ending_before")
    ids = [item["id"] for item in items]
    if starting_after is not None:
        if starting_after not in ids:
            raise _missing(kind, starting_after, param="starting_after", status=400)
        rest = items[ids.index(starting_after) + 1:]
        return rest[:limit], len(rest) > limit
    if ending_before is not None:
        if ending_before not in ids:
            raise _missing(kind, ending_before, param="ending_before", status=400)
        rest = items[: ids.index(ending_before)]
        return rest[-limit:], len(rest) > limit
    return items[:limit], len(items) > limit


class PersistentStripeStandIn(StripeStandIn):
    """A stand-in that keeps its state in ``state_file``: read at creation, written after every POST.

    For the ``make run`` sandbox, whose database outlives a restart: without this a restart
    forgets every refund the database remembers.
    """

    def __init__(self, api_key: str, state_file: str | os.PathLike[str]) -> None:
        super().__init__(api_key)
        self.state_file = Path(state_file)
        if self.state_file.exists():
            self.import_state(json.loads(self.state_file.read_text()))

    def save(self) -> None:
        """Write the state atomically (a crash leaves the old file or the new one, never half)."""
        with self._lock:
            temporary = self.state_file.with_name(self.state_file.name + ".tmp")
            temporary.write_text(json.dumps(self.export_state(), indent=1))
            os.replace(temporary, self.state_file)

    def _serve(self, handler: StandInRequestHandler) -> None:
        try:
            super()._serve(handler)
        finally:
            if handler.command.upper() == "POST":
                self.save()

    def _route(self, method: str, path: str) -> tuple[Any, tuple[str, ...]] | None:
        if method == "POST" and path == "/v1/charges":
            return self._create_charge, ()
        return super()._route(method, path)

    def _create_charge(self, params: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/charges`` (``amount``, ``currency``; ``source`` and ``description`` ignored): a
        succeeded charge, as Stripe's test mode makes with ``source=tok_visa``. For ``make demo-charge``."""
        _check_params(params, {"amount", "currency", "source", "description"})
        amount = _parse_int(params.get("amount"), "amount", minimum=1)
        if amount is None:
            raise _validation_error("Missing required param: amount.", code="parameter_missing", param="amount")
        currency = _optional_string(params, "currency")
        if currency is None or not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise _validation_error("Missing or invalid currency.", code="parameter_missing", param="currency")
        return self.add_charge(amount, currency)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m standins.stripe_api",
        description="Stand-in for the Stripe API subset used by the refund service.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help=f"the API key to accept (default {DEFAULT_API_KEY})")
    parser.add_argument("--demo", action="store_true", help="create the demo charges")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose:
        logging.getLogger("standins").setLevel(logging.DEBUG)

    standin = StripeStandIn(api_key=args.api_key)
    try:
        url = standin.start(args.host, args.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s (choose another with --port, or --port 0 for a free one)",
                     args.host, args.port, exc.strerror or exc)
        return 1
    shown_key = args.api_key if args.api_key == DEFAULT_API_KEY else mask_api_key(args.api_key)
    logger.info("Stripe stand-in listening on %s (API key %s)", url, shown_key)
    if args.demo:
        for charge in standin.seed_demo():
            remaining = charge["amount"] - charge["amount_refunded"]
            notes = []
            if charge["disputed"]:
                notes.append("disputed")
            if charge["refunded"]:
                notes.append("fully refunded")
            if charge["payment_intent"]:
                notes.append(f"payment intent {charge['payment_intent']}")
            logger.info(
                "demo charge %s: %s, %s refundable%s",
                charge["id"],
                format_amount(charge["amount"], charge["currency"]),
                format_amount(remaining, charge["currency"]),
                f" ({', '.join(notes)})" if notes else "",
            )
        logger.info("try: curl -u %s: %s/v1/charges/ch_demo_small", shown_key, url)
    run_in_foreground(standin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
