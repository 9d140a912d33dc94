"""The policy's versions over time: each start notes the version it decides with, and a change is an event.

`policy_events` holds them (audit_log rows belong to a request; these do not): `policy_first_seen`, then
`policy_changed` with the old and new versions, so an auditor can tell which rules decided a request by its
`policy_version` and when they came into force.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from . import policy_store
from .db import Database
from .rules import PolicyConfig

__all__ = ["note_policy_version"]

log = logging.getLogger(__name__)


def note_policy_version(db: Database, policy: PolicyConfig, now: datetime) -> str | None:
    """Record `policy`'s version if it is not the last one recorded; returns the event written
    (`policy changed from <old12> to <new12>`, or `policy first seen: <new12>`), None when unchanged.

    A read decides whether to write, so an unchanged start takes no write lock; the write checks again in
    its transaction, so workers starting together write one event. A schema not migrated yet (PostgreSQL
    before `flask db upgrade`) is skipped: that start cannot serve requests anyway.
    """
    try:
        with db.read() as conn:
            if policy_store.last_policy_version(conn) == policy.version:
                return None
        with db.transaction() as conn:
            policy_store.lock_deciding(conn)
            old = policy_store.last_policy_version(conn)
            if old == policy.version:
                return None
            if old is None:
                detail, action = f"policy first seen: {policy.version[:12]} ({policy.source})", "policy_first_seen"
            else:
                detail = f"policy changed from {old[:12]} to {policy.version[:12]} ({policy.source})"
                action = "policy_changed"
            policy_store.record_policy_event(conn, action=action, old=old, new=policy.version, source=policy.source,
                                             detail=detail, at=now)
    except SQLAlchemyError as exc:
        log.debug("policy version not recorded: %s", type(exc).__name__)
        return None
    if old is not None:
        log.info(detail)
    return detail
