"""limits: policies, settings and counter resets

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No rows: a missing tier:default is the shipped default (messages=1000) and a
    # missing tier_key is "plan", so an emptied table still means the shipped policy.
    op.create_table(
        "limit_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_policies")),
        sa.UniqueConstraint("scope", name=op.f("uq_limit_policies_scope")),
    )
    op.create_table(
        "limit_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_settings")),
        sa.UniqueConstraint("name", name=op.f("uq_limit_settings_name")),
    )
    op.create_table(
        "limit_resets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("reset_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_resets")),
        sa.UniqueConstraint("subject", name=op.f("uq_limit_resets_subject")),
    )


def downgrade() -> None:
    op.drop_table("limit_resets")
    op.drop_table("limit_settings")
    op.drop_table("limit_policies")
