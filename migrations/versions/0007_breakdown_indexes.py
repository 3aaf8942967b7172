"""breakdown indexes: end users by their tags and by their metadata, as stored JSON text

The tag and metadata breakdowns add the totals up per distinct stored profile; walking
``end_users`` in this order (SQLite) groups them without sorting every user.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 02:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {"ix_end_users_tags_text": "tags", "ix_end_users_metadata_text": "profile_metadata"}


def upgrade() -> None:
    for name, column in INDEXES.items():
        op.create_index(name, "end_users", [sa.text(f"CAST({column} AS TEXT)")])


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="end_users")
