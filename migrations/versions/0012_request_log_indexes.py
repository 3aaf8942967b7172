"""the request log's filters: an index per filter of the console's ``/requests`` (key,
model, endpoint, and a partial one over the error answers), each ending in
(created_at, id) so a page of 50, newest first, is read off the index at any depth

Building them reads the table once each: seconds at a million rows, during which
PostgreSQL holds off writes to ``request_log`` (the usage writer spools, nothing is lost).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ERRORS = sa.text("status >= 400")
BY_COLUMN = ("api_key_id", "model", "endpoint")


def upgrade() -> None:
    for column in BY_COLUMN:
        op.create_index(
            f"ix_request_log_{column}_created", "request_log", [column, "created_at", "id"]
        )
    op.create_index(
        "ix_request_log_errors_created",
        "request_log",
        ["created_at", "id"],
        sqlite_where=ERRORS,
        postgresql_where=ERRORS,
    )


def downgrade() -> None:
    op.drop_index("ix_request_log_errors_created", table_name="request_log")
    for column in BY_COLUMN:
        op.drop_index(f"ix_request_log_{column}_created", table_name="request_log")
