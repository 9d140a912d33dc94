"""the daily report: the Stripe charge cache and the indexes its queries use

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Refund rate needs every charge of a product in a window; asking Stripe on every report would take
    # minutes and its rate limit. `flask --app app sync` fills this from charges.list.
    op.create_table('stripe_charges',
    sa.Column('charge_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('product', sa.String(length=200), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('amount_refunded', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('fee', sa.BigInteger(), nullable=True),
    sa.Column('fee_currency', sa.String(length=3), nullable=True),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('charge_id')
    )
    with op.batch_alter_table('stripe_charges', schema=None) as batch_op:
        batch_op.create_index('ix_stripe_charges_created_at', ['created_at', 'product'], unique=False)
    # Without these, a report of one day read all of refund_requests, refund_log and pending_refunds:
    # seconds at a million requests, where the indexes make it milliseconds.
    with op.batch_alter_table('refund_requests', schema=None) as batch_op:
        batch_op.create_index('ix_refund_requests_resolved_at', ['resolved_at'], unique=False)
    with op.batch_alter_table('refund_log', schema=None) as batch_op:
        batch_op.create_index('ix_refund_log_processed_at', ['processed_at'], unique=False)
    with op.batch_alter_table('pending_refunds', schema=None) as batch_op:
        batch_op.create_index('ix_pending_refunds_decided_at', ['decided_at'], unique=False)


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
