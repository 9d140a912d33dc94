"""Approvers: people allowed to approve or reject refunds, each with their own bearer token.

Only a SHA-256 hash of each token is stored. Tokens are 256 random bits, so a plain hash
is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from .db import Database
from .errors import ApproverExists, ApproverNotFound
from .tables import approvers

TOKEN_PREFIX = "apr_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class Approver:
    name: str
    created_at: datetime
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())


def add(db: Database, name: str, now: datetime) -> str:
    """Create approver `name` (or re-issue a revoked one) and return their new token, shown once.

    Raises ApproverExists if an active approver already has that name.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values: dict[str, Any] = {"token_hash": hash_token(token), "created_at": now, "revoked_at": None}
    with db.transaction() as conn:
        row = conn.execute(select(approvers).where(approvers.c.name == name)).first()
        if row is not None and row.revoked_at is None:
            raise ApproverExists(f"Approver {name!r} already exists; revoke them first to issue a new token.")
        if row is None:
            conn.execute(approvers.insert().values(name=name, **values))
        else:
            conn.execute(update(approvers).where(approvers.c.id == row.id).values(**values))
    return token


def revoke(db: Database, name: str, now: datetime) -> None:
    """Revoke `name`'s token at once. Raises ApproverNotFound if no active approver has that name."""
    with db.transaction() as conn:
        result = conn.execute(
            update(approvers)
            .where(approvers.c.name == name, approvers.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if result.rowcount != 1:
            raise ApproverNotFound(f"No active approver named {name!r}.")


def list_all(db: Database) -> list[Approver]:
    with db.transaction() as conn:
        rows = conn.execute(select(approvers).order_by(approvers.c.name))
        return [Approver(r.name, r.created_at, r.revoked_at) for r in rows]


def authenticate(db: Database, token: str) -> str | None:
    """The name of the active approver holding `token`, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with db.transaction() as conn:
        row = conn.execute(
            select(approvers.c.name).where(
                approvers.c.token_hash == hash_token(token), approvers.c.revoked_at.is_(None)
            )
        ).first()
    return row.name if row is not None else None
