"""policy decisions stored with each request, policy versions seen, circuit-breaker trips

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
# 0005 (report cache) is on another branch; whoever merges both re-chains this onto it.
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('refund_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('customer_key', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('policy_rule', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('policy_version', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('policy_facts', sa.Text(), nullable=True))
        # Velocity counts one customer's recent requests; the circuit breaker sums the store's recent
        # auto-approvals. Both run inside the write transaction that decides, so they must be index reads.
        batch_op.create_index('ix_refund_requests_customer', ['customer_key', 'created_at'], unique=False)
        batch_op.create_index('ix_refund_requests_decision', ['decision', 'created_at'], unique=False)

    # audit_log.request_id is NOT NULL: a policy change at start belongs to no request, so it has its own table.
    op.create_table('policy_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=50), nullable=False),
    sa.Column('old_version', sa.String(length=64), nullable=True),
    sa.Column('new_version', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('breaker_trips',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tripped_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['refund_requests.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('breaker_trips', schema=None) as batch_op:
        batch_op.create_index('ix_breaker_trips_open', ['ended_at'], unique=False)


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
