"""outbox index per request, so claiming Slack messages stays fast with many waiting

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The worker only claims the oldest undelivered message of each request, and finds it by counting the
    # request's earlier undelivered messages. Without this index that count read every undelivered message,
    # once per candidate: with 8,000 waiting (a Slack outage) one claim took 5 s, inside a write transaction.
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_request_id', ['request_id', 'id'], unique=False)
