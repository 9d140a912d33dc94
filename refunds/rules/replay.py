"""Replay: decide past requests again under a candidate policy, and count what would change. Pure.

The caller reads the history (the facts stored with each decision, and what was decided then) and
prints the report; nothing here writes. Each request is decided on the facts recorded when it was
first decided, including the store's auto-approved totals of that moment: a candidate that
auto-approves more or less would have seen other totals, so circuit-breaker figures are those
the original policy saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..money import Money
from ..policy import Action
from .engine import Decision, decide
from .facts import Facts
from .loading import PolicyConfig

__all__ = ["Change", "PastDecision", "ReplayReport", "Tally", "replay"]


@dataclass(frozen=True)
class PastDecision:
    """One past request: its id, the facts it was decided on, and the action decided then."""

    request_id: int
    facts: Facts
    action: Action


@dataclass
class Tally:
    """How many requests, and how much money per currency (minor units)."""

    count: int = 0
    amounts: dict[str, int] = field(default_factory=dict)

    def add(self, refund: Money) -> None:
        self.count += 1
        self.amounts[refund.currency] = self.amounts.get(refund.currency, 0) + refund.amount

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "amounts": dict(sorted(self.amounts.items()))}

    def __str__(self) -> str:
        money = ", ".join(str(Money(amount, cur)) for cur, amount in sorted(self.amounts.items()))
        return f"{self.count}" + (f" ({money})" if money else "")


@dataclass(frozen=True)
class Change:
    """A request whose outcome the candidate changes: what was decided then, and the new decision."""

    request_id: int
    refund: Money
    before: Action
    after: Decision


def _tallies() -> dict[Action, Tally]:
    return {action: Tally() for action in Action}


@dataclass(frozen=True)
class ReplayReport:
    """Per action, the requests and money before (as decided) and after (under `candidate_version`),
    and every request whose action changes, in the order given."""

    candidate_version: str
    before: Mapping[Action, Tally]
    after: Mapping[Action, Tally]
    changes: tuple[Change, ...]

    def as_json(self) -> dict[str, Any]:
        """The report as JSON (`--format json`)."""
        return {
            "candidate_version": self.candidate_version,
            "before": {a.value: t.as_json() for a, t in self.before.items()},
            "after": {a.value: t.as_json() for a, t in self.after.items()},
            "changes": [{"request_id": c.request_id, "amount": c.refund.amount, "currency": c.refund.currency,
                         "before": c.before.value, "after": c.after.as_json()} for c in self.changes],
        }

    def lines(self) -> list[str]:
        """The report for people: one line per action, then one per changed request."""
        out = [f"candidate policy {self.candidate_version[:12]}: {len(self.changes)} request(s) change outcome"]
        for action in Action:
            out.append(f"{action.value}: {self.before[action]} as decided, {self.after[action]} under the candidate")
        out += [f"request {c.request_id} ({c.refund}): {c.before.value} -> {c.after.explanation}" for c in self.changes]
        return out


def replay(history: Iterable[PastDecision], candidate: PolicyConfig) -> ReplayReport:
    """Decide every request of `history` again under `candidate`. Never raises for valid facts."""
    before, after = _tallies(), _tallies()
    changes: list[Change] = []
    for past in history:
        decision = decide(past.facts, candidate)
        before[past.action].add(past.facts.refund)
        after[decision.action].add(past.facts.refund)
        if decision.action is not past.action:
            changes.append(Change(past.request_id, past.facts.refund, past.action, decision))
    return ReplayReport(candidate.version, before, after, tuple(changes))
