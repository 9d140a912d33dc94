"""Signed one-click approval links: bound to one pending refund, its amount, one approver and the
credential that approver held when the link was made.

A link is an itsdangerous token (HMAC-SHA256 with APPROVAL_LINK_SECRET) carrying a random
nonce; it expires after APPROVAL_LINK_TTL and acts at most once (the nonce is recorded in
`approval_link_uses` when it acts). Opening it (GET, HEAD) only shows a page.

The claims are signed, not encrypted: anyone holding a link can read them. So the credential is
carried as a fingerprint (an HMAC of the approver's token hash under the link secret, 128 bits),
never the hash itself. Revoking or re-issuing the approver's token changes the hash, and with it
the fingerprint every earlier link carries: those links stop working.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .errors import LinkInvalid

__all__ = ["SALT", "ApprovalLinks", "LinkClaims"]

SALT = "refund-approval-link"
# Keeps fingerprints apart from any other use of the link secret.
_FINGERPRINT_CONTEXT = b"approval-link-credential:"


@dataclass(frozen=True)
class LinkClaims:
    pending_id: int
    approver: str
    amount: int
    currency: str
    nonce: str
    credential: str


class ApprovalLinks:
    """Makes and reads approval link tokens. Refuses an empty or short secret."""

    def __init__(self, secret: str, *, ttl_seconds: int, base_url: str | None) -> None:
        if not secret or len(secret) < 32:
            raise ValueError("an approval link secret needs at least 32 characters")
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self._secret = secret.encode()
        self.ttl_seconds = ttl_seconds
        self.base_url = (base_url or "").rstrip("/")

    def fingerprint(self, token_hash: str) -> str:
        """What a link carries of the credential whose hash is `token_hash`: unguessable without the
        link secret, and telling nothing about the hash."""
        return hmac.new(self._secret, _FINGERPRINT_CONTEXT + token_hash.encode(), hashlib.sha256).hexdigest()[:32]

    def matches(self, claims: LinkClaims, token_hash: str) -> bool:
        """True if the link was made for the credential whose hash is `token_hash` (constant time)."""
        return hmac.compare_digest(claims.credential.encode(), self.fingerprint(token_hash).encode())

    def token(self, pending_id: int, approver: str, amount: int, currency: str, *, credential: str) -> str:
        """A link token for `approver`, whose current token hash is `credential`."""
        return self._serializer.dumps({"p": pending_id, "a": approver, "m": amount, "c": currency,
                                       "n": secrets.token_urlsafe(12), "k": self.fingerprint(credential)})

    def url(self, pending_id: int, approver: str, amount: int, currency: str, *, credential: str) -> str:
        """The link to send `approver` (whose current token hash is `credential`): absolute when
        PUBLIC_BASE_URL is set, else a path."""
        token = self.token(pending_id, approver, amount, currency, credential=credential)
        return f"{self.base_url}/approval-links/{token}"

    def read(self, token: str) -> LinkClaims:
        """The claims of a genuine, unexpired token. Raises LinkInvalid saying which it is not."""
        try:
            data = self._serializer.loads(token, max_age=self.ttl_seconds)
        except SignatureExpired:
            raise LinkInvalid("This approval link has expired; ask for a new one.") from None
        except BadSignature:
            raise LinkInvalid("This approval link is not valid.") from None
        try:
            return LinkClaims(int(data["p"]), str(data["a"]), int(data["m"]), str(data["c"]), str(data["n"]),
                              str(data["k"]))
        except (KeyError, TypeError, ValueError):
            raise LinkInvalid("This approval link is not valid.") from None
