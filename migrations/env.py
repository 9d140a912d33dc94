"""Alembic environment: runs migrations on the service's engine, all in one transaction.

One transaction makes concurrent first starts safe: on SQLite it begins with BEGIN IMMEDIATE,
so a second process waits, then finds the schema already at head.
"""

from __future__ import annotations

import os
from typing import Any

from alembic import context

from refunds.config import DEFAULT_DATABASE_URL
from refunds.db import make_engine
from refunds.tables import metadata

config = context.config
engine = config.attributes.get("engine") or make_engine(
    os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
)

applied: list[str] = config.attributes.setdefault("applied", [])


def _record(*, step: Any, **_: Any) -> None:
    """Note each migration applied, as `revision (description)`, for refunds.db.upgrade to report."""
    if step.is_upgrade:
        applied.append(f"{step.up_revision_id} ({step.up_revision.doc})")


with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transactional_ddl=True,
        transaction_per_migration=False,
        render_as_batch=True,
        on_version_apply=_record,
    )
    with context.begin_transaction():
        context.run_migrations()
