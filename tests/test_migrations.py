"""The schema is made by alembic only, and the migrations match the models."""

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, insert, inspect, select, text, update

from tally import schema
from tally.db import Base, make_engine
from tally.models import ConfigRevision, EndUser, RequestLog, UpstreamIdentifier
from tests.helpers.database import empty_database


# SQLite's reflection skips expression indexes (the breakdowns' profile indexes, 0007);
# PostgreSQL's compares them.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_upgrade_head_on_an_empty_database_matches_the_models(tmp_path):
    with empty_database(tmp_path) as url:
        engine = make_engine(url)
        try:
            before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
            schema.upgrade(engine)
            after = datetime.now(UTC).replace(tzinfo=None)
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, Base.metadata) == []
                revision = conn.execute(select(ConfigRevision)).one()
            assert (revision.id, revision.hash_mode, revision.prefix) == (1, "hmac-sha256", "tally")
            # the defaults are dated when the upgrade made them, not on a fixed day
            assert before <= revision.created_at <= after
            schema.downgrade(engine, "base")
            assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
            schema.upgrade(engine)
            assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()


def test_db_upgrade_command_builds_the_schema(tmp_path, make_app):
    with empty_database(tmp_path) as url:
        app = make_app(TALLY_DATABASE_URL=url)
        result = app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "Database upgraded to head." in result.output
        tables = set(inspect(app.extensions["tally"].engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        app.extensions["tally"].engine.dispose()


# --- 0009: one identifier, several users -------------------------------------------------

T = [datetime(2026, 11, 1, 9, 0, n) for n in range(6)]


def _legacy_collision(conn) -> None:
    """What 0008's upsert left after a collision: user 2's requests under user 1's
    identifier row (its count holding theirs too); user 3 apart. Revision 3 (a dialect
    change: same identifiers) came between user 1's first request and user 2's."""
    revisions, users = ConfigRevision.__table__, EndUser.__table__
    idents, log = UpstreamIdentifier.__table__, RequestLog.__table__
    config = {"enabled": True, "prefix": "tally", "hash_mode": "sha256", "hash_length": 8}
    config |= {"dialect": "openrouter", "forward_profile": False, "require_identity": False}
    conn.execute(delete(revisions).where(revisions.c.id > 1))
    conn.execute(update(revisions).values(created_at=datetime(2026, 1, 1)))
    conn.execute(
        insert(revisions),
        [
            {"id": 2, "created_at": T[0], "created_by": "t", **config},
            {"id": 3, "created_at": T[1] + timedelta(seconds=0.5), "created_by": "t", **config},
        ],
    )
    conn.execute(
        insert(users),
        [
            {"id": n, "external_id": f"u{n}", "first_seen": T[0], "last_seen": T[5]}
            for n in (1, 2, 3)
        ],
    )
    shared = {"identifier": "tally_ab4ef502", "user_id": 1, "revision_id": 2}
    conn.execute(
        insert(idents),
        [
            # ids 1 and 2 (from the sequence: the migration adds a row after them)
            {**shared, "first_seen": T[1], "last_seen": T[5], "request_count": 5},
            {"identifier": "tally_c", "user_id": 3, "revision_id": 2}
            | {"first_seen": T[2], "last_seen": T[2], "request_count": 1},
        ],
    )
    calls = [(1, 1, T[1]), (2, 1, T[2]), (2, 1, T[3]), (1, 1, T[4]), (2, 1, T[5]), (3, 2, T[2])]
    conn.execute(
        insert(log),
        [
            {"request_id": f"r{n}", "user_id": user, "identifier_id": ident, "created_at": when}
            | {"status": 200, "endpoint": "chat.completions", "stream": False, "is_demo": False}
            for n, (user, ident, when) in enumerate(calls)
        ],
    )


def _identifier_rows(conn):
    idents = UpstreamIdentifier.__table__
    columns = (idents.c.id, idents.c.identifier, idents.c.user_id, idents.c.revision_id)
    more = (idents.c.first_seen, idents.c.last_seen, idents.c.request_count)
    return [tuple(r) for r in conn.execute(select(*columns, *more).order_by(idents.c.id))]


def _log_identifiers(conn):
    log = RequestLog.__table__
    return conn.execute(select(log.c.identifier_id).order_by(log.c.request_id)).scalars().all()


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_0009_gives_each_user_of_a_shared_identifier_a_row(tmp_path):
    with empty_database(tmp_path) as url:
        engine = make_engine(url)
        try:
            schema.upgrade(engine, "0008")
            with engine.begin() as conn:
                _legacy_collision(conn)
            schema.upgrade(engine)
            with engine.connect() as conn:
                assert _identifier_rows(conn) == [
                    (1, "tally_ab4ef502", 1, 2, T[1], T[5], 2),
                    (2, "tally_c", 3, 2, T[2], T[2], 1),
                    # user 2's own row: from their requests; the revision active at the first
                    (3, "tally_ab4ef502", 2, 3, T[2], T[5], 3),
                ]
                assert _log_identifiers(conn) == [1, 3, 3, 1, 3, 2]
                if conn.dialect.name == "sqlite":  # turned off for the batch copy, back on
                    assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            schema.downgrade(engine, "0008")  # folded back into the oldest row
            with engine.connect() as conn:
                assert _identifier_rows(conn) == [
                    (1, "tally_ab4ef502", 1, 2, T[1], T[5], 5),
                    (2, "tally_c", 3, 2, T[2], T[2], 1),
                ]
                assert _log_identifiers(conn) == [1, 1, 1, 1, 1, 2]
            schema.upgrade(engine)
            with engine.connect() as conn:
                assert len(_identifier_rows(conn)) == 3
        finally:
            engine.dispose()


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_refusals_migration_keeps_old_rows_as_calls_and_its_downgrade_drops_refusals(tmp_path):
    """0010: rows logged before it were calls that reached the upstream (refused false,
    the totals' refused 0); going back drops the refusal rows, which the code before it
    would count against limits."""
    with empty_database(tmp_path) as url:
        engine = make_engine(url)
        try:
            schema.upgrade(engine, "0009")
            row = {"created_at": datetime(2026, 11, 2), "endpoint": "chat.completions"}
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO request_log (request_id, created_at, endpoint, stream, "
                        "status, is_demo) VALUES ('old', :created_at, :endpoint, false, 200, "
                        "false)"
                    ),
                    row,
                )
                conn.execute(
                    text(
                        "INSERT INTO daily_totals (day, user_id, api_key_id, model, endpoint, "
                        "requests, errors, prompt_tokens, completion_tokens, cached_tokens, "
                        "total_tokens, cost) VALUES ('2026-11-02', 0, 0, '', :endpoint, "
                        "1, 0, 0, 0, 0, 0, 0.0)"
                    ),
                    row,
                )
            schema.upgrade(engine)
            with engine.begin() as conn:
                assert conn.execute(text("SELECT refused FROM request_log")).scalar_one() in (
                    False,
                    0,
                )
                assert conn.execute(text("SELECT refused FROM daily_totals")).scalar_one() == 0
                conn.execute(
                    text(
                        "INSERT INTO request_log (request_id, created_at, endpoint, stream, "
                        "status, is_demo, refused) VALUES ('no', :created_at, :endpoint, "
                        "false, 429, false, true)"
                    ),
                    row,
                )
            schema.downgrade(engine, "0009")
            with engine.connect() as conn:
                ids = conn.execute(text("SELECT request_id FROM request_log")).scalars().all()
            assert ids == ["old"]
        finally:
            engine.dispose()
