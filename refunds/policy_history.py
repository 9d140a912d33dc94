"""The history `flask --app app policy replay` decides again: past requests with the facts they were decided on.

Read-only: one read transaction (`Database.read()`), never a write. The facts are the JSON of
`rules.facts_as_json` stored in `refund_requests.policy_facts` (migration 0006) when the request was
decided, and the action decided then is `refund_requests.decision`. Requests never decided (their
charge was never read) are not history. A decided request without recorded facts (decided before
they were recorded) cannot be replayed: it is counted, not guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select

from .db import Database
from .policy import Action
from .rules import PastDecision, PolicyConfig, ReplayReport, facts_from_json, replay
from .tables import refund_requests

__all__ = ["NO_FACTS", "UNREADABLE_FACTS", "replay_history"]

NO_FACTS = "no recorded facts"
UNREADABLE_FACTS = "recorded facts unreadable"

def replay_history(db: Database, candidate: PolicyConfig,
                   since: datetime | None = None) -> tuple[ReplayReport, dict[str, int]]:
    """Every request decided (created at or after `since`, timezone-aware, when given) decided again under
    `candidate`, in id order; and how many could not be, by reason (`NO_FACTS`, `UNREADABLE_FACTS`).
    Writes nothing."""
    skipped: Counter[str] = Counter()
    with db.read() as conn:
        query = (select(refund_requests.c.id, refund_requests.c.decision, refund_requests.c.policy_facts)
                 .where(refund_requests.c.decision.is_not(None)).order_by(refund_requests.c.id))
        if since is not None:
            query = query.where(refund_requests.c.created_at >= since)
        report = replay(_past(conn.execute(query), skipped), candidate)
    return report, dict(skipped)


def _past(rows: Iterable[Any], skipped: Counter[str]) -> Iterator[PastDecision]:
    for row in rows:
        if row.policy_facts is None:
            skipped[NO_FACTS] += 1
            continue
        try:
            yield PastDecision(row.id, facts_from_json(json.loads(row.policy_facts)), Action(row.decision))
        except (KeyError, TypeError, ValueError):  # a shape this code cannot read: say so, never guess
            skipped[UNREADABLE_FACTS] += 1
