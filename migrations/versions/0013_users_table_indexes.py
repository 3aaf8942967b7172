"""users table indexes: the top users of a range by requests (as they are found by cost),
and the totals of one API key over a range of days

``/identities`` sorts every user by their requests over the last 30 days with the same
threshold algorithm that finds the top users by cost (tally.reports.ranking): it reads
each month's users in the order of their requests. ``/usage?key=NAME`` adds up the key's
totals per user and per day: its rows in ``daily_totals`` found by key, not by reading
every row of the range.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 07:00:00
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_monthly_user_totals_month_requests", "monthly_user_totals", ["month", "requests"]
    )
    op.create_index("ix_daily_totals_key_day", "daily_totals", ["api_key_id", "day"])


def downgrade() -> None:
    op.drop_index("ix_daily_totals_key_day", table_name="daily_totals")
    op.drop_index("ix_monthly_user_totals_month_requests", table_name="monthly_user_totals")
