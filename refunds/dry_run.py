"""Dry run (issue 9): what the policy would decide for a refund request, and why, with nothing changed.

The charge is read from Stripe (a read, never a write), the history from a read-only snapshot; no request is
recorded, nothing is reserved or refunded, no Slack message is queued and no idempotency key is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import deciding
from .domain import Context, RefundCommand
from .intake import new_request, read_charge
from .rules import check_reason

__all__ = ["DryRunResult", "dry_run"]


@dataclass(frozen=True)
class DryRunResult:
    """The decision a request would get now: action, rule, sentence, approvers needed, refund, policy version."""

    decision: str
    rule: str
    explanation: str
    approvals_required: int
    amount: int
    currency: str
    policy_version: str


def dry_run(ctx: Context, command: RefundCommand) -> DryRunResult:
    """Decide `command` under the policy without acting. Raises what a real request would be refused with before
    any decision: InvalidRequest (a reason the policy does not list), ChargeNotFound, ChargeAlreadyRefunded,
    ExceedsRefundable, ChargeDisputed, DuplicatePending, StripeUnavailable."""
    check_reason(command.reason, ctx.policy)
    request = new_request(ctx, command, command.fingerprint(), None)
    charge, refund = read_charge(ctx, request)
    decision = deciding.decide_read_only(ctx, request, charge, refund, ctx.clock()).decision
    return DryRunResult(decision.action.value, decision.rule, decision.explanation, decision.approvals,
                        refund.amount, refund.currency, decision.policy_version)
