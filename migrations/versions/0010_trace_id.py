"""the request id (X-Request-Id) a refund request came with, kept as its trace id

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: requests received before this migration have none, and the worker logs them without one.
    with op.batch_alter_table('refund_requests') as batch:
        batch.add_column(sa.Column('trace_id', sa.String(length=100), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
