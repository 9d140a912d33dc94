"""Approvers: people allowed to approve or reject refunds, each with their own bearer token.

Only a SHA-256 hash of each token is stored. Tokens are 256 random bits, so a plain hash
is enough: there is nothing to brute-force.

An approver's identities are their name, their email addresses (kept normalised, see
`identity.normalise`) and their Slack user id: self-approval is checked against all of them.
Names, Slack users and addresses are unique; a clash, even one lost in a race with another
request, raises ApproverExists.

Limits carry a currency (`approver_limits`): an approver with none may approve any amount; one
with limits may approve alone up to each, in its currency only (`rules.may_approve` decides).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from . import identity, rules
from .db import Database
from .errors import ApproverExists, ApproverNotFound
from .limits import EMAIL
from .money import Money
from .rules import ApproverFacts
from .tables import approver_emails, approver_limits, approvers, iso_utc

TOKEN_PREFIX = "apr_"  # noqa: S105 - a prefix, not a secret


ROLES = ("approver", "admin")


@dataclass(frozen=True)
class Approver:
    """A person who may decide refunds. `limits`: the most they may approve alone in each currency, by
    currency; empty means no limit in any currency (see `facts`).

    `token_hash` identifies the credential they hold now (approval links are bound to it); it is
    never shown.
    """

    name: str
    created_at: datetime
    revoked_at: datetime | None
    role: str = "approver"
    limits: tuple[Money, ...] = ()
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

    @property
    def facts(self) -> ApproverFacts:
        """What the policy decides on (`rules.may_approve`): identities, and limits (None: no limit)."""
        limits = {m.currency: m.amount for m in self.limits} if self.limits else None
        return ApproverFacts(self.name, self.identities, limits)

    def covers(self, refund: Money) -> bool:
        """True if `refund` is within their limit in its currency, or they have no limit at all."""
        return rules.within_limit(self.facts, refund)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "approval_limits": [m.as_json() for m in self.limits],
                "slack_user_id": self.slack_user_id, "emails": list(self.emails),
                "active": self.revoked_at is None, "created_at": iso_utc(self.created_at, "seconds")}


def _approver(row: Any, emails: Iterable[str] = (), limits: Mapping[str, int] | None = None) -> Approver:
    return Approver(row.name, row.created_at, row.revoked_at, row.role,
                    tuple(Money(amount, cur) for cur, amount in sorted((limits or {}).items())), row.slack_user_id,
                    tuple(sorted(emails)), row.token_hash)


def _with_emails(conn: Connection, rows: Sequence[Any]) -> Approver:
    """The approver of `rows` (one per limit, from `_WITH_LIMITS`), with their email addresses."""
    return _approver(rows[0], emails_of(conn, rows[0].id), _limits_of(rows))


def _limits_of(rows: Sequence[Any]) -> dict[str, int]:
    return {r.limit_currency: r.limit_amount for r in rows if r.limit_currency is not None}


# Built once: authentication and the approval's checks run these on every request. An approver's limits
# come with their row (one row per limit), so checking an approval reads no more statements than before.
_EMAILS_OF = (select(approver_emails.c.email).where(approver_emails.c.approver_id == bindparam("b_id"))
              .order_by(approver_emails.c.email))
_ACTIVE = approvers.c.revoked_at.is_(None)
_WITH_LIMITS = (select(approvers, approver_limits.c.currency.label("limit_currency"),
                       approver_limits.c.amount.label("limit_amount"))
                .outerjoin(approver_limits, approver_limits.c.approver_id == approvers.c.id))
_ACTIVE_BY_NAME = _WITH_LIMITS.where(approvers.c.name == bindparam("b_name"), _ACTIVE)
_ACTIVE_BY_SLACK_USER = _WITH_LIMITS.where(approvers.c.slack_user_id == bindparam("b_user"), _ACTIVE)
_ACTIVE_BY_TOKEN_HASH = _WITH_LIMITS.where(approvers.c.token_hash == bindparam("b_hash"), _ACTIVE)


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


def add(db: Database, name: str, now: datetime, *, role: str = "approver", limits: Iterable[Money] = (),
        slack_user_id: str | None = None, emails: Sequence[str] = ()) -> str:
    """Create approver `name` (or re-issue a revoked one) and return their new token, shown once.

    `limits`: the most they may approve alone, one per currency; none means no limit. Re-issuing
    sets every attribute anew (role, limits, Slack user, `emails`). Links issued for the earlier
    token stop working, as the token itself does.

    Raises ApproverExists if an active approver already has that name, or another approver that
    Slack user or one of `emails` (also when a concurrent request took it first), ValueError for an
    unknown role, a negative limit, two limits in one currency or an invalid email address.
    """
    _check(role)
    by_currency = _limits(limits)
    addresses = normalise_emails(emails)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values: dict[str, Any] = {"token_hash": hash_token(token), "created_at": now, "revoked_at": None,
                              "role": role, "slack_user_id": slack_user_id}
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
            _replace_limits(conn, approver_id, by_currency)
    except IntegrityError:
        raise _lost_race(db, name, slack_user_id, addresses) from None
    return token


def change(db: Database, name: str, *, role: str | None = None, limits: Sequence[Money] = (),
           no_limit: bool = False, slack_user_id: str | None = None, add_emails: Sequence[str] = (),
           remove_emails: Sequence[str] = (), now: datetime | None = None) -> Approver:
    """Change an active approver's role, limits, Slack user or email addresses. `limits`, when given,
    replace all their limits; `no_limit` removes them all (no limit in any currency). Their token,
    and so their links, stay valid. `now` dates added addresses (default: the clock).

    Raises ApproverNotFound; ApproverExists if another approver has that Slack user or one of
    `add_emails` (also when a concurrent request took it first); ValueError for an unknown role, a
    negative limit, two limits in one currency, `limits` with `no_limit`, an invalid address, or
    one in `remove_emails` that is not theirs.
    """
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = role
    if slack_user_id is not None:
        values["slack_user_id"] = slack_user_id
    _check(values.get("role", "approver"))
    if limits and no_limit:
        raise ValueError("give limits or no limit, not both")
    new_limits = _limits(limits) if limits or no_limit else None
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
            if new_limits is not None:
                _replace_limits(conn, row.id, new_limits)
            return _with_emails(conn, conn.execute(_WITH_LIMITS.where(approvers.c.id == row.id)).all())
    except IntegrityError:
        raise _lost_race(db, name, slack_user_id, adding) from None


def _insert_emails(conn: Connection, approver_id: int, emails: Sequence[str], now: datetime) -> None:
    if emails:
        conn.execute(approver_emails.insert(),
                     [{"approver_id": approver_id, "email": e, "created_at": now} for e in emails])


def _limits(limits: Iterable[Money]) -> dict[str, int]:
    """`limits` by currency. Raises ValueError for a negative amount or two limits in one currency."""
    by_currency: dict[str, int] = {}
    for limit in limits:
        if limit.amount < 0:
            raise ValueError("an approval limit must be 0 or more")
        if limit.currency in by_currency:
            raise ValueError(f"two approval limits in {limit.currency.upper()}: give one per currency")
        by_currency[limit.currency] = limit.amount
    return by_currency


def _replace_limits(conn: Connection, approver_id: int, limits: Mapping[str, int]) -> None:
    conn.execute(delete(approver_limits).where(approver_limits.c.approver_id == approver_id))
    if limits:
        conn.execute(approver_limits.insert(),
                     [{"approver_id": approver_id, "currency": c, "amount": a} for c, a in limits.items()])


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


def _check(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")


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
    """Every approver, active or revoked, by name, with their email addresses and limits."""
    with db.read() as conn:
        rows = conn.execute(select(approvers).order_by(approvers.c.name)).all()
        emails: dict[int, list[str]] = {}
        for r in conn.execute(select(approver_emails).order_by(approver_emails.c.email)):
            emails.setdefault(r.approver_id, []).append(r.email)
        limits: dict[int, dict[str, int]] = {}
        for r in conn.execute(select(approver_limits)):
            limits.setdefault(r.approver_id, {})[r.currency] = r.amount
    return [_approver(r, emails.get(r.id, ()), limits.get(r.id)) for r in rows]


def active_in(conn: Connection, name: str) -> Approver | None:
    """The active approver called `name` with all their identities, read in transaction `conn`, or None."""
    rows = conn.execute(_ACTIVE_BY_NAME, {"b_name": name}).all()
    return _with_emails(conn, rows) if rows else None


def by_slack_user(db: Database, slack_user_id: str) -> Approver | None:
    """The active approver linked to Slack user `slack_user_id`, or None."""
    with db.read() as conn:
        rows = conn.execute(_ACTIVE_BY_SLACK_USER, {"b_user": slack_user_id}).all()
        return _with_emails(conn, rows) if rows else None


def authenticate(db: Database, token: str) -> Approver | None:
    """The active approver holding `token`, with their limits but not their email addresses, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with db.read() as conn:
        rows = conn.execute(_ACTIVE_BY_TOKEN_HASH, {"b_hash": hash_token(token)}).all()
    return _approver(rows[0], (), _limits_of(rows)) if rows else None
