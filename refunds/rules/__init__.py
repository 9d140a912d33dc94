"""The refund policy of issue 9: a pure function of plain data that decides everything about a request.

No Flask, no SQL, no Stripe, no clock: the service gathers `Facts` and asks. The pieces:

- `loading`: the TOML policy file (`load_policy`), or the article's one threshold (`default_policy`);
  `PolicyConfig.customer_window` and `.needs_store_totals` say which history the service must gather.
- `schema`: the file's strict shape. `facts`: what a decision is made on, and its stored JSON.
- `intake`: a reason the policy accepts (`check_reason`), the amount Stripe would refund (`refundable_amount`).
- `engine`: `decide(facts, policy) -> Decision`, with the precedence of the rules; `checks`: the rules.
- `approval`: how many must approve (`approvals_required`) and who may (`may_approve`, `within_limit`).
- `replay`: past requests decided again under a candidate policy, and what would change.
"""

from .approval import ApproverFacts, approvals_required, may_approve, within_limit
from .checks import Finding
from .engine import PRECEDENCE, Decision, decide
from .facts import LAST_DAY, LAST_HOUR, ChargeFacts, Facts, Recent, customer_identity, facts_as_json, facts_from_json
from .intake import check_reason, refundable_amount, stripe_reason
from .loading import DEFAULT_SOURCE, PolicyConfig, PolicyError, default_policy, load_policy, parse_policy
from .replay import PastDecision, ReplayReport, replay

__all__ = [
    "DEFAULT_SOURCE", "LAST_DAY", "LAST_HOUR", "PRECEDENCE", "ApproverFacts", "ChargeFacts", "Decision", "Facts",
    "Finding", "PastDecision", "PolicyConfig", "PolicyError", "Recent", "ReplayReport", "approvals_required",
    "check_reason", "customer_identity", "decide", "default_policy", "facts_as_json", "facts_from_json",
    "load_policy", "may_approve", "parse_policy", "refundable_amount", "replay", "stripe_reason", "within_limit",
]
