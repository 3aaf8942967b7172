"""verified end users: the identity provider, user-token keys and their origins, verified
end users, and a per-operator session nonce (server-side logout)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_providers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=2048), nullable=False),
        sa.Column("jwks_url", sa.String(length=2048), nullable=False),
        sa.Column("audience", sa.String(length=2048), nullable=False),
        sa.Column("user_claim", sa.String(length=255), nullable=False),
        sa.Column("name_claim", sa.String(length=255), nullable=False),
        sa.Column("email_claim", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("user_token", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("origins", sa.JSON(), nullable=True))
    with op.batch_alter_table("end_users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_nonce", sa.String(length=32), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.drop_column("session_nonce")
    with op.batch_alter_table("end_users", schema=None) as batch_op:
        batch_op.drop_column("verified")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("origins")
        batch_op.drop_column("user_token")
    op.drop_table("identity_providers")
