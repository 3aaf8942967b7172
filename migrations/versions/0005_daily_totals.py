"""daily totals: the request log added up per day x user x key x model x endpoint, per day
x key x model x endpoint and per month x user, kept in the transaction that inserts the
rows; the recent-requests index ends with the id (its order's tie-break); on PostgreSQL,
trigram indexes for the identity search (pg_trgm)

The totals of rows already in the log are added up here once, so an upgraded database
starts exact.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost",
)


def _sums() -> list[sa.Column]:
    columns = [sa.Column(name, sa.Integer(), nullable=False) for name in SUMS[:-1]]
    return columns + [sa.Column("cost", sa.Float(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "daily_totals",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        *_sums(),
        sa.PrimaryKeyConstraint(
            "day", "user_id", "api_key_id", "model", "endpoint", name=op.f("pk_daily_totals")
        ),
    )
    op.create_index("ix_daily_totals_user_day", "daily_totals", ["user_id", "day"])
    op.create_table(
        "daily_model_totals",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        *_sums(),
        sa.PrimaryKeyConstraint(
            "day", "api_key_id", "model", "endpoint", name=op.f("pk_daily_model_totals")
        ),
    )
    op.create_table(
        "monthly_user_totals",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        *_sums(),
        sa.PrimaryKeyConstraint("month", "user_id", name=op.f("pk_monthly_user_totals")),
    )
    op.create_index("ix_monthly_user_totals_month_cost", "monthly_user_totals", ["month", "cost"])
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.drop_index("ix_request_log_user_created")
        batch_op.create_index("ix_request_log_user_created", ["user_id", "created_at", "id"])
    _backfill()
    if op.get_bind().dialect.name == "postgresql":
        _trigram_indexes()


def _trigram_indexes() -> None:
    """The identity search's contains-matches on e-mail and name, by trigram index."""
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in ("email", "display_name"):
        op.execute(
            f"CREATE INDEX ix_end_users_{column}_trgm ON end_users "
            f"USING gin (lower({column}) gin_trgm_ops)"
        )


def _backfill() -> None:
    """Add up the rows already logged, with the same rules as tally.usage.totals."""
    is_pg = op.get_bind().dialect.name == "postgresql"
    day = "CAST(created_at AS DATE)" if is_pg else "date(created_at)"
    month = (
        "CAST(date_trunc('month', created_at) AS DATE)"
        if is_pg
        else ("date(created_at, 'start of month')")
    )
    sums = (
        "count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
        "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
        "coalesce(sum(cached_tokens), 0), coalesce(sum(total_tokens), 0), "
        "coalesce(sum(cost), 0.0)"
    )
    names = ", ".join(SUMS)
    op.execute(
        f"INSERT INTO daily_totals (day, user_id, api_key_id, model, endpoint, {names}) "
        f"SELECT {day}, coalesce(user_id, 0), coalesce(api_key_id, 0), coalesce(model, ''), "
        f"endpoint, {sums} FROM request_log GROUP BY 1, 2, 3, 4, 5"
    )
    op.execute(
        f"INSERT INTO daily_model_totals (day, api_key_id, model, endpoint, {names}) "
        f"SELECT {day}, coalesce(api_key_id, 0), coalesce(model, ''), endpoint, {sums} "
        "FROM request_log GROUP BY 1, 2, 3, 4"
    )
    op.execute(
        f"INSERT INTO monthly_user_totals (month, user_id, {names}) "
        f"SELECT {month}, coalesce(user_id, 0), {sums} FROM request_log GROUP BY 1, 2"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # pg_trgm stays: others may use it
        for column in ("email", "display_name"):
            op.execute(f"DROP INDEX ix_end_users_{column}_trgm")
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.drop_index("ix_request_log_user_created")
        batch_op.create_index("ix_request_log_user_created", ["user_id", "created_at"])
    op.drop_table("monthly_user_totals")
    op.drop_index("ix_daily_totals_user_day", table_name="daily_totals")
    op.drop_table("daily_totals")
    op.drop_table("daily_model_totals")
