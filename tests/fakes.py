"""Fakes for the two adapters: they keep state like Stripe and record what they were sent."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from refunds.errors import ChargeNotFound, RefundError, StripeRefused
from refunds.stripe_gateway import ChargeInfo, RefundInfo, RefundParams


@dataclass
class FakeCharge:
    charge_id: str
    amount: int
    currency: str = "usd"
    amount_refunded: int = 0
    disputed: bool = False
    payment_intent_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    customer_id: str | None = None
    email: str | None = None
    card_fingerprint: str | None = None
    product: str | None = None
    early_fraud_warning: bool = False


@dataclass
class FakeGateway:
    """A `RefundGateway` with Stripe's rules: idempotency-key replay, no over-refund, disputes.

    `fail_next` holds exceptions raised by the next `create_refund` calls, in order.
    """

    charges: dict[str, FakeCharge] = field(default_factory=dict)
    refunds: list[RefundInfo] = field(default_factory=list)
    calls: list[RefundParams] = field(default_factory=list)
    fail_next: list[RefundError] = field(default_factory=list)
    fail_lookups: list[RefundError] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)
    # Charges whose early fraud warnings were looked up, in order (one more Stripe call each).
    fraud_lookups: list[str] = field(default_factory=list)
    new_refund_status: str = "succeeded"
    _by_key: dict[str, RefundInfo] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_charge(self, charge_id: str, amount: int, **kwargs: Any) -> FakeCharge:
        charge = FakeCharge(charge_id, amount, **kwargs)
        self.charges[charge_id] = charge
        return charge

    def get_charge(self, *, charge_id: str | None = None, payment_intent_id: str | None = None,
                   early_fraud_warnings: bool = False) -> ChargeInfo:
        if self.fail_lookups:
            raise self.fail_lookups.pop(0)
        charge = self._find(charge_id, payment_intent_id)
        if early_fraud_warnings:
            self.fraud_lookups.append(charge.charge_id)
        return ChargeInfo(charge.charge_id, charge.amount, charge.amount_refunded, charge.currency,
                          charge.disputed, charge.payment_intent_id, created_at=charge.created_at,
                          customer_id=charge.customer_id, email=charge.email,
                          card_fingerprint=charge.card_fingerprint, product=charge.product,
                          early_fraud_warning=early_fraud_warnings and charge.early_fraud_warning)

    def create_refund(self, params: RefundParams) -> RefundInfo:
        with self._lock:
            self.calls.append(params)
            if self.fail_next:
                raise self.fail_next.pop(0)
            if params.idempotency_key in self._by_key:
                return self._by_key[params.idempotency_key]
            charge = self._find(params.charge_id if not params.payment_intent_id else None, params.payment_intent_id)
            if charge.disputed:
                raise StripeRefused("The charge is disputed.", code="charge_disputed")
            if charge.amount_refunded >= charge.amount:
                raise StripeRefused("Charge has already been refunded.", code="charge_already_refunded")
            if params.amount > charge.amount - charge.amount_refunded:
                raise StripeRefused("Refund amount is greater than unrefunded amount.", code="amount_too_large")
            charge.amount_refunded += params.amount
            refund = RefundInfo(f"re_fake_{next(self._ids)}", charge.charge_id, params.amount,
                                charge.currency, self.new_refund_status, metadata=dict(params.metadata or {}))
            self.refunds.append(refund)
            self._by_key[params.idempotency_key] = refund
            return refund

    def get_refund(self, refund_id: str) -> RefundInfo:
        if self.fail_lookups:
            raise self.fail_lookups.pop(0)
        for refund in self.refunds:
            if refund.refund_id == refund_id:
                return refund
        raise ChargeNotFound(f"No such refund: '{refund_id}'")

    def find_refund(self, *, charge_id: str, metadata_key: str, metadata_value: str) -> RefundInfo | None:
        self.lists.append(charge_id)
        for refund in self.refunds:
            if refund.charge_id == charge_id and (refund.metadata or {}).get(metadata_key) == metadata_value:
                return refund
        return None

    def set_status(self, refund_id: str, status: str, failure_reason: str | None = None) -> RefundInfo:
        """Change a refund as Stripe would later (pending -> succeeded, or failed)."""
        for i, refund in enumerate(self.refunds):
            if refund.refund_id == refund_id:
                self.refunds[i] = replace(refund, status=status, failure_reason=failure_reason)
                return self.refunds[i]
        raise KeyError(refund_id)

    def _find(self, charge_id: str | None, payment_intent_id: str | None) -> FakeCharge:
        for charge in self.charges.values():
            if charge.charge_id == charge_id or (payment_intent_id and charge.payment_intent_id == payment_intent_id):
                return charge
        raise ChargeNotFound(f"No such charge: '{charge_id or payment_intent_id}'")


@dataclass
class FakeNotifier:
    """Records every message it is asked to send; `down` makes every send fail."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    down: bool = False

    def send(self, kind: str, facts: dict[str, Any]) -> None:
        from refunds.notifier import DeliveryFailed, build_message

        build_message(kind, facts)  # every message must render
        if self.down:
            raise DeliveryFailed("Slack answered 500")
        self.sent.append((kind, facts))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.sent]


class FakeClock:
    """A clock the test moves by hand; shared by the service, the lifecycle and the worker."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
