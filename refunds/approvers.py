"""Approvers: people allowed to approve or reject refunds, each with their own bearer token.

Only a SHA-256 hash of each token is stored. Tokens are 256 random bits, so a plain hash
is enough: there is nothing to brute-force.

An approver's identities are their name, their email addresses (kept normalised, see
`identity.normalise`) and their Slack user id: self-approval is checked against all of them.
Names, Slack users and addresses are unique; a clash, even one lost in a race with another
request, raises ApproverExists.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from . import identity
from .db import Database
from .errors import ApproverExists, ApproverNotFound
from .limits import EMAIL
from .tables import approver_emails, approvers, iso_utc

TOKEN_PREFIX = "apr_"  # noqa: S105 - a prefix, not a secret


ROLES = ("approver", "admin")


@dataclass(frozen=True)
class Approver:
    """A person who may decide refunds. `approval_limit` is in minor units; None means no limit.

    `token_hash` identifies the credential they hold now (approval links are bound to it); it is
    never shown.
    """

    name: str
    created_at: datetime
    revoked_at: datetime | None
    role: str = "approver"
    approval_limit: int | None = None
    slack_user_id: str | None = None
    emails: tuple[str, ...] = ()
    token_hash: str = field(default="", repr=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def identities(self) -> tuple[str, ...]:
        """Everything this person is known by: name, email addresses and Slack user id."""
        return (self.name, *self.emails, *([self.slack_user_id] if self.slack_user_id else []))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "approval_limit": self.approval_limit,
                "slack_user_id": self.slack_user_id, "emails": list(self.emails),
                "active": self.revoked_at is None, "created_at": iso_utc(self.created_at, "seconds")}


def _approver(row: Any, emails: Iterable[str] = ()) -> Approver:
    return Approver(row.name, row.created_at, row.revoked_at, row.role, row.approval_limit, row.slack_user_id,
                    tuple(sorted(emails)), row.token_hash)


def _with_emails(conn: Connection, row: Any) -> Approver:
    return _approver(row, emails_of(conn, row.id))


# Built once: authentication and the approval's checks run these on every request.
_EMAILS_OF = (select(approver_emails.c.email).where(approver_emails.c.approver_id == bindparam("b_id"))
              .order_by(approver_emails.c.email))
_ACTIVE = approvers.c.revoked_at.is_(None)
_ACTIVE_BY_NAME = select(approvers).where(approvers.c.name == bindparam("b_name"), _ACTIVE)
_ACTIVE_BY_SLACK_USER = select(approvers).where(approvers.c.slack_user_id == bindparam("b_user"), _ACTIVE)
_ACTIVE_BY_TOKEN_HASH = select(approvers).where(approvers.c.token_hash == bindparam("b_hash"), _ACTIVE)


def emails_of(conn: Connection, approver_id: int) -> list[str]:
    """The normalised email addresses of approver `approver_id`, sorted."""
    return [r.email for r in conn.execute(_EMAILS_OF, {"b_id": approver_id})]


def normalise_emails(emails: Iterable[str]) -> list[str]:
    """`emails` normalised (see `identity.normalise`), without repeats, in the order given.

    Raises ValueError for one that is not a single address (`local@domain`), is too long, or
    cannot be read unambiguously (invisible characters, mixed scripts).
    """
    result: list[str] = []
    for raw in emails:
        reason = identity.ambiguity(raw)
        email = identity.normalise(raw)
        local, at, domain = email.rpartition("@")
        if reason is not None:
            raise ValueError(f"email {raw!r}: {reason}")
        if not at or not local or not domain or "@" in local or " " in email or len(email) > EMAIL:
            raise ValueError(f"email {raw!r}: must be one email address, like name@example.com")
        if email not in result:
            result.append(email)
    return result


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(db: Database, name: str, now: datetime, *, role: str = "approver", approval_limit: int | None = None,
        slack_user_id: str | None = None, emails: Sequence[str] = ()) -> str:
    """Create approver `name` (or re-issue a revoked one) and return their new token, shown once.

    Re-issuing sets every attribute anew (role, limit, Slack user, `emails`). Links issued for the
    earlier token stop working, as the token itself does.

    Raises ApproverExists if an active approver already has that name, or another approver that
    Slack user or one of `emails` (also when a concurrent request took it first), ValueError for an
    unknown role, a negative limit or an invalid email address.
    """
    _check(role, approval_limit)
    addresses = normalise_emails(emails)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values: dict[str, Any] = {"token_hash": hash_token(token), "created_at": now, "revoked_at": None,
                              "role": role, "approval_limit": approval_limit, "slack_user_id": slack_user_id}
    try:
        with db.transaction() as conn:
            row = conn.execute(select(approvers).where(approvers.c.name == name)).first()
            if row is not None and row.revoked_at is None:
                raise _exists(name)
            _check_free(conn, name, slack_user_id, addresses)
            if row is None:
                approver_id = conn.execute(approvers.insert().values(name=name, **values)
                                           .returning(approvers.c.id)).scalar_one()
            else:
                # Guarded: of two concurrent re-issues, only one finds the approver still revoked.
                result = conn.execute(update(approvers)
                                      .where(approvers.c.id == row.id, approvers.c.revoked_at.is_not(None))
                                      .values(**values))
                if result.rowcount != 1:
                    raise _exists(name)
                approver_id = row.id
                conn.execute(delete(approver_emails).where(approver_emails.c.approver_id == approver_id))
            _insert_emails(conn, approver_id, addresses, now)
    except IntegrityError:
        raise _lost_race(db, name, slack_user_id, addresses) from None
    return token


def change(db: Database, name: str, *, role: str | None = None, approval_limit: int | None = None,
           no_limit: bool = False, slack_user_id: str | None = None, add_emails: Sequence[str] = (),
           remove_emails: Sequence[str] = (), now: datetime | None = None) -> Approver:
    """Change an active approver's role, limit (`no_limit` removes it), Slack user or email addresses.
    Their token, and so their links, stay valid. `now` dates added addresses (default: the clock).

    Raises ApproverNotFound; ApproverExists if another approver has that Slack user or one of
    `add_emails` (also when a concurrent request took it first); ValueError for an unknown role, a
    negative limit, an invalid address, or one in `remove_emails` that is not theirs.
    """
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = role
    if approval_limit is not None or no_limit:
        values["approval_limit"] = None if no_limit else approval_limit
    if slack_user_id is not None:
        values["slack_user_id"] = slack_user_id
    _check(values.get("role", "approver"), values.get("approval_limit"))
    adding, removing = normalise_emails(add_emails), normalise_emails(remove_emails)
    try:
        with db.transaction() as conn:
            condition = (approvers.c.name == name) & approvers.c.revoked_at.is_(None)
            row = conn.execute(select(approvers).where(condition)).first()
            if row is None:
                raise ApproverNotFound(f"No active approver named {name!r}.")
            _check_free(conn, name, slack_user_id, adding)
            if values:
                conn.execute(update(approvers).where(approvers.c.id == row.id).values(**values))
            current = set(emails_of(conn, row.id))
            missing = [e for e in removing if e not in current]
            if missing:
                raise ValueError(f"{', '.join(missing)} is not an address of {name}")
            conn.execute(delete(approver_emails).where(approver_emails.c.approver_id == row.id,
                                                       approver_emails.c.email.in_(removing)))
            _insert_emails(conn, row.id, [e for e in adding if e not in current], now or datetime.now(UTC))
            return _with_emails(conn, conn.execute(select(approvers).where(approvers.c.id == row.id)).one())
    except IntegrityError:
        raise _lost_race(db, name, slack_user_id, adding) from None


def _insert_emails(conn: Connection, approver_id: int, emails: Sequence[str], now: datetime) -> None:
    if emails:
        conn.execute(approver_emails.insert(),
                     [{"approver_id": approver_id, "email": e, "created_at": now} for e in emails])


def _exists(name: str) -> ApproverExists:
    return ApproverExists(f"Approver {name!r} already exists; revoke them first to issue a new token.")


def _check_free(conn: Connection, name: str, slack_user_id: str | None, emails: Sequence[str]) -> None:
    """Raises ApproverExists if `slack_user_id` or one of `emails` belongs to an approver other than `name`
    (active or revoked: a revoked approver keeps theirs until re-issued or changed)."""
    if slack_user_id is not None and conn.execute(
        select(approvers.c.name).where(approvers.c.slack_user_id == slack_user_id, approvers.c.name != name)
    ).first():
        raise ApproverExists(f"Slack user {slack_user_id} is already linked to another approver.")
    if emails:
        taken = conn.execute(
            select(approver_emails.c.email).join(approvers, approvers.c.id == approver_emails.c.approver_id)
            .where(approver_emails.c.email.in_(emails), approvers.c.name != name)
        ).first()
        if taken is not None:
            raise ApproverExists(f"{taken.email} is already an address of another approver.")


def _lost_race(db: Database, name: str, slack_user_id: str | None, emails: Sequence[str]) -> ApproverExists:
    """What to say when a unique constraint refused a write that the checks had let through: a
    concurrent request took the name, Slack user or address in between. Checks again to say which."""
    try:
        with db.read() as conn:
            row = conn.execute(select(approvers.c.revoked_at).where(approvers.c.name == name)).first()
            if row is not None and row.revoked_at is None:
                return _exists(name)
            _check_free(conn, name, slack_user_id, emails)
    except ApproverExists as exc:
        return exc
    return ApproverExists(f"Approver {name!r}, their Slack user or one of their addresses was taken by a "
                          "concurrent change; try again.")


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
    """Every approver, active or revoked, by name, with their email addresses."""
    with db.read() as conn:
        rows = conn.execute(select(approvers).order_by(approvers.c.name)).all()
        emails: dict[int, list[str]] = {}
        for r in conn.execute(select(approver_emails).order_by(approver_emails.c.email)):
            emails.setdefault(r.approver_id, []).append(r.email)
    return [_approver(r, emails.get(r.id, ())) for r in rows]


def active_in(conn: Connection, name: str) -> Approver | None:
    """The active approver called `name` with all their identities, read in transaction `conn`, or None."""
    row = conn.execute(_ACTIVE_BY_NAME, {"b_name": name}).first()
    return _with_emails(conn, row) if row is not None else None


def by_slack_user(db: Database, slack_user_id: str) -> Approver | None:
    """The active approver linked to Slack user `slack_user_id`, or None."""
    with db.read() as conn:
        row = conn.execute(_ACTIVE_BY_SLACK_USER, {"b_user": slack_user_id}).first()
        return _with_emails(conn, row) if row is not None else None


def authenticate(db: Database, token: str) -> Approver | None:
    """The active approver holding `token`, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with db.read() as conn:
        row = conn.execute(_ACTIVE_BY_TOKEN_HASH, {"b_hash": hash_token(token)}).first()
    return _approver(row) if row is not None else None
