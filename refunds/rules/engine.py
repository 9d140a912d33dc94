"""The decision: every rule asked in a fixed order, and the strongest answer wins.

Precedence: refuse beats review beats auto-approve. Among findings of the same strength, the first
in `PRECEDENCE` is the one the decision names (all of them are kept in `Decision.findings`):

1. `disputed`: the charge is disputed (refuse or review, `[disputes].disputed`)
2. `early_fraud_warning`: Stripe Radar has an open early fraud warning on it (refuse or review)
3. `velocity`: the customer's refunds in the window, this one included, pass a count or an amount
4. `reason`: the reason forces review or refusal (or the policy does not list it: review)
5. `product`: the product forces review or refusal
6. `charge_age`: the charge is older than N days
7. `charge_share`: the refund is over X % of a charge over an amount
8. `currency`: the policy has no auto-approve threshold in the refund's currency
9. `threshold`: the refund is over the applicable threshold (the product's, else the currency's)
10. `circuit_breaker`: asked last, only of a refund everything above lets execute alone: would
    auto-approving it take the store's auto-approvals in the last hour or day past a limit?

A refund nothing sends to people is auto-approved by `threshold`. A refund for people needs
`approvals_required` approvers (two above its currency's `two_person` threshold).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..money import Money
from ..policy import Action
from . import checks
from .approval import approvals_required
from .checks import Finding
from .facts import Facts
from .loading import PolicyConfig
from .schema import PolicySpec

__all__ = ["PRECEDENCE", "Decision", "decide"]

Check = Callable[[PolicySpec, Facts], Finding | None]

PRECEDENCE: tuple[Check, ...] = (
    checks.disputed, checks.early_fraud_warning, checks.velocity, checks.reason, checks.product,
    checks.charge_age, checks.charge_share, checks.currency, checks.threshold,
)
_PREFIX = {Action.AUTO_APPROVE: "auto-approved", Action.NEEDS_APPROVAL: "manual review", Action.REFUSE: "refused"}
_STRENGTH = {Action.REFUSE: 2, Action.NEEDS_APPROVAL: 1, Action.AUTO_APPROVE: 0}


@dataclass(frozen=True)
class Decision:
    """What to do with a request, which rule decided, what it compared and a sentence saying why.

    `approvals` is how many different people must approve (0 unless `action` is needs_approval).
    `findings` lists every rule that applied, in precedence order. `policy_version` is the sha256 of
    the policy that decided.
    """

    action: Action
    rule: str
    explanation: str
    compared: Mapping[str, Any]
    approvals: int
    policy_version: str
    findings: tuple[Finding, ...]

    @property
    def breaker_tripped(self) -> bool:
        """True when the circuit breaker sent this refund to review: the service tells Slack (once)."""
        return self.rule == "circuit_breaker"

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict, to store with the request and show in answers."""
        return {"action": self.action.value, "rule": self.rule, "explanation": self.explanation,
                "compared": dict(self.compared), "approvals": self.approvals, "policy_version": self.policy_version,
                "breaker_tripped": self.breaker_tripped,
                "findings": [{"rule": f.rule, "action": f.action.value, "explanation": f.explanation,
                              "compared": dict(f.compared)} for f in self.findings]}


def _strongest(findings: list[Finding]) -> Finding:
    top = max(_STRENGTH[f.action] for f in findings)
    return next(f for f in findings if _STRENGTH[f.action] == top)


def decide(facts: Facts, policy: PolicyConfig) -> Decision:
    """Decide `facts` under `policy`. Pure and total: never raises for valid `Facts`.

    The explanation reads "<auto-approved | manual review | refused>: <why>", and says so when two
    approvers are needed.
    """
    findings = [f for check in PRECEDENCE if (f := check(policy.spec, facts)) is not None]
    deciding = _strongest(findings)  # never empty: `currency` or `threshold` always applies
    if deciding.action is Action.AUTO_APPROVE:
        tripped = checks.breaker(policy.spec, facts)
        if tripped is not None:
            findings.append(tripped)
            deciding = tripped
    explanation = f"{_PREFIX[deciding.action]}: {deciding.explanation}"
    approvals = 0
    if deciding.action is Action.NEEDS_APPROVAL:
        approvals = approvals_required(facts.refund, policy)
        two_person = policy.spec.thresholds[facts.refund.currency].two_person if approvals > 1 else None
        if two_person is not None:
            explanation += (f"; {approvals} approvers, as it is over the two-person threshold of "
                            f"{Money(two_person, facts.refund.currency)}")
    return Decision(deciding.action, deciding.rule, explanation, deciding.compared, approvals, policy.version,
                    tuple(findings))
