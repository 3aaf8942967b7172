"""model prices: the per-model price table (USD per million prompt, completion and cached
prompt tokens) that costs a call whose upstream reported none; each request row says
where its cost came from (``cost_source``), and an OpenRouter stream cut before its
usage arrived waits for the generation endpoint's figures (``reconcile_*``)

Rows already logged with a cost got it from the upstream: they are marked so here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("prompt", sa.Float(), nullable=False),
        sa.Column("completion", sa.Float(), nullable=False),
        sa.Column("cached", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_prices")),
        sa.UniqueConstraint("model", name=op.f("uq_model_prices_model")),
    )
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_source", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("reconcile_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("reconcile_after", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_request_log_reconcile_after", ["reconcile_after"])
    op.execute("UPDATE request_log SET cost_source = 'upstream' WHERE cost IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.drop_index("ix_request_log_reconcile_after")
        batch_op.drop_column("reconcile_after")
        batch_op.drop_column("reconcile_attempts")
        batch_op.drop_column("cost_source")
    op.drop_table("model_prices")
