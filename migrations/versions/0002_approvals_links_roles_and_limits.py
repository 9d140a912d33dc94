"""approvals, links, roles and limits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('approval_link_uses',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('approver', sa.String(length=100), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['refund_requests.id'], ),
    sa.PrimaryKeyConstraint('nonce')
    )
    op.create_table('approvals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('approver', sa.String(length=100), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['refund_requests.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('request_id', 'approver', name='uq_approvals_request_approver')
    )
    with op.batch_alter_table('approvers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=20), server_default='approver', nullable=False))
        batch_op.add_column(sa.Column('approval_limit', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('slack_user_id', sa.String(length=50), nullable=True))
        batch_op.create_unique_constraint('uq_approvers_slack_user_id', ['slack_user_id'])

    with op.batch_alter_table('pending_refunds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True))
        # Two approvers' names must fit: 100 characters each could not before.
        batch_op.alter_column('decided_by', existing_type=sa.String(length=100), type_=sa.Text(),
                              existing_nullable=True)

    with op.batch_alter_table('refund_log', schema=None) as batch_op:
        batch_op.alter_column('approved_by', existing_type=sa.String(length=100), type_=sa.Text(),
                              existing_nullable=True)


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
