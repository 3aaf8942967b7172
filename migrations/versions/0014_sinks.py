"""sinks and their outbox: the receivers of usage events and limit alerts (stripe,
openmeter, webhook, slack), and ``sink_events``, written by the usage writer in the same
transaction as the request rows and emptied by the delivery loop

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sinks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=True),
        sa.Column("events", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("last_delivered_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "sink_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "sink_id", sa.Integer(), sa.ForeignKey("sinks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("event_id", sa.String(300), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("parked_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.UniqueConstraint("sink_id", "event_id", name="uq_sink_events_sink_event"),
    )
    op.create_index("ix_sink_events_due", "sink_events", ["sink_id", "next_attempt_at"])
    op.create_index("ix_sink_events_parked", "sink_events", ["sink_id", "parked_at"])
    op.create_index("ix_sink_events_delivered", "sink_events", ["delivered_at"])


def downgrade() -> None:
    op.drop_index("ix_sink_events_delivered", table_name="sink_events")
    op.drop_index("ix_sink_events_parked", table_name="sink_events")
    op.drop_index("ix_sink_events_due", table_name="sink_events")
    op.drop_table("sink_events")
    op.drop_table("sinks")
