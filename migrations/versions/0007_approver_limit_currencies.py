"""approver limits per currency: a limit in one currency never covers another

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# A bare limit had no currency: it was applied to every currency alike. It becomes a limit in the
# service's default currency (AUTO_APPROVE_CURRENCY's default), as the README's upgrade note says;
# an approver who should approve other currencies gets limits in them with `approvers set --limit`.
BARE_LIMIT_CURRENCY = 'usd'


def upgrade() -> None:
    op.create_table('approver_limits',
    sa.Column('approver_id', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('amount >= 0', name='ck_approver_limits_amount'),
    sa.ForeignKeyConstraint(['approver_id'], ['approvers.id'], ),
    sa.PrimaryKeyConstraint('approver_id', 'currency')
    )
    op.execute(sa.text(
        "INSERT INTO approver_limits (approver_id, currency, amount) "
        "SELECT id, :currency, approval_limit FROM approvers WHERE approval_limit IS NOT NULL"
    ).bindparams(currency=BARE_LIMIT_CURRENCY))
    with op.batch_alter_table('approvers', schema=None) as batch_op:
        batch_op.drop_column('approval_limit')


def downgrade() -> None:
    raise NotImplementedError("migrations are forward-only")
