"""Signed one-click approval links: bound to one pending refund, one approver and its amount.

A link is an itsdangerous token (HMAC-SHA256 with APPROVAL_LINK_SECRET) carrying a random
nonce; it expires after APPROVAL_LINK_TTL and acts at most once (the nonce is recorded in
`approval_link_uses` when it acts). Opening it (GET, HEAD) only shows a page.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .errors import LinkInvalid

SALT = "refund-approval-link"


@dataclass(frozen=True)
class LinkClaims:
    pending_id: int
    approver: str
    amount: int
    currency: str
    nonce: str


class ApprovalLinks:
    """Makes and reads approval link tokens. Refuses an empty or short secret."""

    def __init__(self, secret: str, *, ttl_seconds: int, base_url: str | None) -> None:
        if not secret or len(secret) < 32:
            raise ValueError("an approval link secret needs at least 32 characters")
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.ttl_seconds = ttl_seconds
        self.base_url = (base_url or "").rstrip("/")

    def token(self, pending_id: int, approver: str, amount: int, currency: str) -> str:
        return self._serializer.dumps(
            {"p": pending_id, "a": approver, "m": amount, "c": currency, "n": secrets.token_urlsafe(12)}
        )

    def url(self, pending_id: int, approver: str, amount: int, currency: str) -> str:
        """The link to send `approver`: absolute when PUBLIC_BASE_URL is set, else a path."""
        return f"{self.base_url}/approval-links/{self.token(pending_id, approver, amount, currency)}"

    def read(self, token: str) -> LinkClaims:
        """The claims of a genuine, unexpired token. Raises LinkInvalid saying which it is not."""
        try:
            data = self._serializer.loads(token, max_age=self.ttl_seconds)
        except SignatureExpired:
            raise LinkInvalid("This approval link has expired; ask for a new one.") from None
        except BadSignature:
            raise LinkInvalid("This approval link is not valid.") from None
        try:
            return LinkClaims(int(data["p"]), str(data["a"]), int(data["m"]), str(data["c"]), str(data["n"]))
        except (KeyError, TypeError, ValueError):
            raise LinkInvalid("This approval link is not valid.") from None
