"""totals past 32 bits: the totals tables' counts (requests, errors, tokens, refused) are
BIGINT on PostgreSQL, where INTEGER is 32 bits and a busy model's tokens of one day passed
it (every batch after failed). SQLite's INTEGER is 64 bits already: nothing changes there.

On PostgreSQL the ALTER rewrites each totals table under an exclusive lock: seconds for
the few rows a day each holds per user, key and model.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TOTALS = ("daily_totals", "daily_model_totals", "monthly_user_totals")
COUNTS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "refused",
)


def upgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    # fails, and changes nothing, when a total already holds more than 32 bits
    _retype(sa.BigInteger(), sa.Integer())


def _retype(before: sa.types.TypeEngine, after: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TOTALS:
        for column in COUNTS:
            op.alter_column(table, column, type_=after, existing_type=before)
