"""Stripe's rate limit shared by every process: the next free slot of each kind of call

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per kind of Stripe call (made by its first call), updated before each call on PostgreSQL.
    # SQLite keeps the same two numbers in a file beside the database, out of its single write lock; the
    # table is made there too, so that both databases have one schema.
    op.create_table('stripe_rate_limit',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('next_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('kind')
    )
