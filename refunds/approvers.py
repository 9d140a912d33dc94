"""Approvers: people allowed to approve or reject refunds, each with their own bearer token.

Only a SHA-256 hash of each token is stored. Tokens are 256 random bits, so a plain hash
is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from .db import Database
from .errors import ApproverExists, ApproverNotFound
from .tables import approvers, iso_utc

TOKEN_PREFIX = "apr_"  # noqa: S105 - a prefix, not a secret


ROLES = ("approver", "admin")


@dataclass(frozen=True)
class Approver:
    """A person who may decide refunds. `approval_limit` is in minor units; None means no limit."""

    name: str
    created_at: datetime
    revoked_at: datetime | None
    role: str = "approver"
    approval_limit: int | None = None
    slack_user_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "approval_limit": self.approval_limit,
                "slack_user_id": self.slack_user_id, "active": self.revoked_at is None,
                "created_at": iso_utc(self.created_at, "seconds")}


def _approver(row: Any) -> Approver:
    return Approver(row.name, row.created_at, row.revoked_at, row.role, row.approval_limit, row.slack_user_id)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(db: Database, name: str, now: datetime, *, role: str = "approver", approval_limit: int | None = None,
        slack_user_id: str | None = None) -> str:
    """Create approver `name` (or re-issue a revoked one) and return their new token, shown once.

    Raises ApproverExists if an active approver already has that name (or that Slack user),
    ValueError for an unknown role or a negative limit.
    """
    _check(role, approval_limit)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values: dict[str, Any] = {"token_hash": hash_token(token), "created_at": now, "revoked_at": None,
                              "role": role, "approval_limit": approval_limit, "slack_user_id": slack_user_id}
    with db.transaction() as conn:
        row = conn.execute(select(approvers).where(approvers.c.name == name)).first()
        if row is not None and row.revoked_at is None:
            raise ApproverExists(f"Approver {name!r} already exists; revoke them first to issue a new token.")
        _check_slack_user_free(conn, slack_user_id, name)
        if row is None:
            conn.execute(approvers.insert().values(name=name, **values))
        else:
            conn.execute(update(approvers).where(approvers.c.id == row.id).values(**values))
    return token


def change(db: Database, name: str, *, role: str | None = None, approval_limit: int | None = None,
           no_limit: bool = False, slack_user_id: str | None = None) -> Approver:
    """Change an active approver's role, limit (`no_limit` removes it) or Slack user.

    Raises ApproverNotFound, or ValueError for an unknown role or a negative limit.
    """
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = role
    if approval_limit is not None or no_limit:
        values["approval_limit"] = None if no_limit else approval_limit
    if slack_user_id is not None:
        values["slack_user_id"] = slack_user_id
    _check(values.get("role", "approver"), values.get("approval_limit"))
    with db.transaction() as conn:
        condition = (approvers.c.name == name) & approvers.c.revoked_at.is_(None)
        _check_slack_user_free(conn, slack_user_id, name)
        if values:
            conn.execute(update(approvers).where(condition).values(**values))
        row = conn.execute(select(approvers).where(condition)).first()
        if row is None:
            raise ApproverNotFound(f"No active approver named {name!r}.")
        return _approver(row)


def _check_slack_user_free(conn: Connection, slack_user_id: str | None, name: str) -> None:
    """Raises ApproverExists if `slack_user_id` already belongs to an approver other than `name`."""
    if slack_user_id is not None and conn.execute(
        select(approvers.c.name).where(approvers.c.slack_user_id == slack_user_id, approvers.c.name != name)
    ).first():
        raise ApproverExists(f"Slack user {slack_user_id} is already linked to another approver.")


def _check(role: str, approval_limit: Any) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if approval_limit is not None and (not isinstance(approval_limit, int) or approval_limit < 0):
        raise ValueError("the approval limit must be a whole number of minor units, 0 or more")


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
        return [_approver(r) for r in rows]


def active(db: Database, name: str) -> Approver | None:
    """The active approver called `name`, or None."""
    with db.transaction() as conn:
        row = conn.execute(select(approvers).where(approvers.c.name == name, approvers.c.revoked_at.is_(None))).first()
    return _approver(row) if row is not None else None


def by_slack_user(db: Database, slack_user_id: str) -> Approver | None:
    """The active approver linked to Slack user `slack_user_id`, or None."""
    with db.transaction() as conn:
        row = conn.execute(select(approvers).where(approvers.c.slack_user_id == slack_user_id,
                                                   approvers.c.revoked_at.is_(None))).first()
    return _approver(row) if row is not None else None


def authenticate(db: Database, token: str) -> Approver | None:
    """The active approver holding `token`, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with db.transaction() as conn:
        row = conn.execute(
            select(approvers).where(approvers.c.token_hash == hash_token(token), approvers.c.revoked_at.is_(None))
        ).first()
    return _approver(row) if row is not None else None
