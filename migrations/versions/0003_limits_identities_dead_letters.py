"""column sizes from the API's limits, approver email identities, dead Slack messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # requested_by is valid up to 200 characters in the API and is also written as the audit actor:
    # 100-character columns made PostgreSQL answer 500 for a valid request (SQLite ignores lengths).
    with op.batch_alter_table('refund_requests', schema=None) as batch_op:
        batch_op.alter_column('requested_by', existing_type=sa.String(length=100), type_=sa.String(length=200),
                              existing_nullable=False)
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('actor', existing_type=sa.String(length=100), type_=sa.String(length=200),
                              existing_nullable=False)

    op.create_table('approver_emails',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('approver_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['approver_id'], ['approvers.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email', name='uq_approver_emails_email')
    )
    with op.batch_alter_table('approver_emails', schema=None) as batch_op:
        batch_op.create_index('ix_approver_emails_approver_id', ['approver_id'], unique=False)

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dead_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
