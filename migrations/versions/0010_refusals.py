"""refusals: a request row marks a call Tally refused once its key was accepted (a 400 or
429 of its own, never sent upstream), and the totals count refusals apart from requests

Rows already logged were all calls that reached (or tried to reach) the upstream:
``refused`` is false for them and the totals' ``refused`` 0, so nothing is backfilled.
Adding a column with a constant default rewrites no table (SQLite, PostgreSQL >= 11).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TOTALS = ("daily_totals", "daily_model_totals", "monthly_user_totals")


def upgrade() -> None:
    # plain ADD COLUMN on both databases (a batch would reflect, and on SQLite copy, tables)
    op.add_column(
        "request_log",
        sa.Column("refused", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    for table in TOTALS:
        op.add_column(table, sa.Column("refused", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # the code before this revision would take a refusal row for a call that reached the
    # upstream (and count it in rebuilt limits): refusals go; the totals never held them
    op.execute(sa.text("DELETE FROM request_log WHERE refused = :yes").bindparams(yes=True))
    for table in TOTALS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("refused")
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.drop_column("refused")
