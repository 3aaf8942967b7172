"""endpoints and dialects: config cache_key, cached prompt tokens on request rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 23:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("config_revisions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cache_key", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cached_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.drop_column("cached_tokens")
    with op.batch_alter_table("config_revisions", schema=None) as batch_op:
        batch_op.drop_column("cache_key")
