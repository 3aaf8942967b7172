"""the request log's filters: an index per filter of the console's ``/requests`` (key,
model, endpoint) and partial ones over the error answers and the refusals (alone and per
user), each ending in (created_at, id) so a page of 50, newest first, is read off the
index at any depth

Building them reads the table once each: seconds at a million rows, during which
PostgreSQL holds off writes to ``request_log`` (the usage writer spools, nothing is lost).
The partial indexes hold only the few rows their condition matches: an ok call's insert
never touches them.

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

BY_COLUMN = ("api_key_id", "model", "endpoint")
# as tally/models/usage.py's REQUEST_LOG_PARTIAL has them (a migration never imports the models)
PARTIAL = {
    "errors": {
        "sqlite": "status >= 400 AND refused = 0",
        "postgresql": "status >= 400 AND refused = false",
    },
    "refused": {"sqlite": "refused = 1", "postgresql": "refused = true"},
}
SCOPES = (("", []), ("user_", ["user_id"]))


def upgrade() -> None:
    for column in BY_COLUMN:
        op.create_index(
            f"ix_request_log_{column}_created", "request_log", [column, "created_at", "id"]
        )
    for kind, where in PARTIAL.items():
        for scope, columns in SCOPES:
            op.create_index(
                f"ix_request_log_{scope}{kind}_created",
                "request_log",
                [*columns, "created_at", "id"],
                sqlite_where=sa.text(where["sqlite"]),
                postgresql_where=sa.text(where["postgresql"]),
            )


def downgrade() -> None:
    for kind in PARTIAL:
        for scope, _columns in SCOPES:
            op.drop_index(f"ix_request_log_{scope}{kind}_created", table_name="request_log")
    for column in BY_COLUMN:
        op.drop_index(f"ix_request_log_{column}_created", table_name="request_log")
