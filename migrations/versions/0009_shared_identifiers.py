"""shared identifiers: one upstream identifier may map to several end users (a hash
collision at a short hash_length); unique on (identifier, user_id) instead of identifier

Until now the second user whose id hashed to an identifier already recorded had their
requests counted under the first user's row (the upsert kept the first mapping). Those
requests are moved to a row of their own: the request rows that name another user than
their identifier's get an identifier row for that user (first and last seen, count from
those rows; the config revision active at the first of them, which produced it), and
the first user's count loses them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 09:00:00
"""

import contextlib
import warnings

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD_KEY = "uq_upstream_identifiers_identifier"
NEW_KEY = "uq_upstream_identifiers_identifier_user_id"

idents = sa.table(
    "upstream_identifiers",
    sa.column("id", sa.Integer),
    sa.column("identifier", sa.String),
    sa.column("user_id", sa.Integer),
    sa.column("revision_id", sa.Integer),
    sa.column("first_seen", sa.DateTime),
    sa.column("last_seen", sa.DateTime),
    sa.column("request_count", sa.Integer),
)
log = sa.table(
    "request_log",
    sa.column("identifier_id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("created_at", sa.DateTime),
)
revisions = sa.table(
    "config_revisions", sa.column("id", sa.Integer), sa.column("created_at", sa.DateTime)
)


def upgrade() -> None:
    with _quiet_reflection(), op.batch_alter_table("upstream_identifiers") as batch_op:
        batch_op.drop_constraint(OLD_KEY, type_="unique")
        batch_op.create_unique_constraint(NEW_KEY, ["identifier", "user_id"])
    _split_shared_rows(op.get_bind())


def downgrade() -> None:
    _merge_shared_rows(op.get_bind())
    with _quiet_reflection(), op.batch_alter_table("upstream_identifiers") as batch_op:
        batch_op.drop_constraint(NEW_KEY, type_="unique")
        batch_op.create_unique_constraint(OLD_KEY, ["identifier"])


@contextlib.contextmanager
def _quiet_reflection():
    """SQLite's batch copy reflects the tables upstream_identifiers refers to; SQLAlchemy
    cannot reflect end_users' expression indexes (0007) and says so. They are not copied
    (end_users is not rebuilt): nothing is lost."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        yield


def _split_shared_rows(conn) -> None:
    """Give each user whose requests were recorded under another user's identifier row
    a row of their own, and move those requests to it. Collisions are rare: one scan of
    the log finds them, then a few statements each."""
    stray = (
        sa.select(
            idents.c.id,
            idents.c.identifier,
            idents.c.revision_id,
            log.c.user_id,
            sa.func.min(log.c.created_at).label("first"),
            sa.func.max(log.c.created_at).label("last"),
            sa.func.count().label("n"),
        )
        .select_from(log.join(idents, log.c.identifier_id == idents.c.id))
        .where(log.c.user_id.is_not(None), log.c.user_id != idents.c.user_id)
        .group_by(idents.c.id, idents.c.identifier, idents.c.revision_id, log.c.user_id)
        .order_by(idents.c.id, log.c.user_id)
    )
    for row in conn.execute(stray).all():
        produced_by = conn.scalar(
            sa.select(revisions.c.id)
            .where(revisions.c.created_at <= row.first)
            .order_by(revisions.c.created_at.desc(), revisions.c.id.desc())
            .limit(1)
        )
        new_id = conn.execute(
            sa.insert(idents)
            .values(
                identifier=row.identifier,
                user_id=row.user_id,
                revision_id=produced_by or row.revision_id,
                first_seen=row.first,
                last_seen=row.last,
                request_count=row.n,
            )
            .returning(idents.c.id)
        ).scalar_one()
        conn.execute(
            sa.update(log)
            .where(log.c.identifier_id == row.id, log.c.user_id == row.user_id)
            .values(identifier_id=new_id)
        )
        remaining = idents.c.request_count - row.n
        conn.execute(
            sa.update(idents)
            .where(idents.c.id == row.id)
            .values(request_count=sa.case((remaining < 0, 0), else_=remaining))
        )


def _merge_shared_rows(conn) -> None:
    """Fold every identifier's rows into its oldest one (the old schema holds one row
    per identifier): its requests, count and first and last seen."""
    shared = (
        sa.select(idents.c.identifier).group_by(idents.c.identifier).having(sa.func.count() > 1)
    )
    for identifier in conn.scalars(shared).all():
        rows = conn.execute(
            sa.select(idents).where(idents.c.identifier == identifier).order_by(idents.c.id)
        ).all()
        keep, others = rows[0], rows[1:]
        other_ids = [other.id for other in others]
        conn.execute(
            sa.update(log).where(log.c.identifier_id.in_(other_ids)).values(identifier_id=keep.id)
        )
        conn.execute(
            sa.update(idents)
            .where(idents.c.id == keep.id)
            .values(
                request_count=sum(r.request_count for r in rows),
                first_seen=min(r.first_seen for r in rows),
                last_seen=max(r.last_seen for r in rows),
            )
        )
        conn.execute(sa.delete(idents).where(idents.c.id.in_(other_ids)))
