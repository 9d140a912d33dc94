"""the scheduled daily report: one row per day posted to Slack

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Several workers (and instances) reach REPORT_TIME together: the primary key lets one claim the day.
    op.create_table('report_posts',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('claim', sa.String(length=64), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('day')
    )


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
