"""The schema is made by alembic only, and the migrations match the models."""

from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from tally import schema
from tally.db import Base, make_engine
from tally.models import ConfigRevision
from tests.helpers.database import empty_database


# SQLite's reflection skips expression indexes (the breakdowns' profile indexes, 0007);
# PostgreSQL's compares them.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_upgrade_head_on_an_empty_database_matches_the_models(tmp_path):
    with empty_database(tmp_path) as url:
        engine = make_engine(url)
        try:
            schema.upgrade(engine)
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, Base.metadata) == []
                revision = conn.execute(select(ConfigRevision)).one()
            assert (revision.id, revision.hash_mode, revision.prefix) == (1, "hmac-sha256", "tally")
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


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_refusals_migration_keeps_old_rows_as_calls_and_its_downgrade_drops_refusals(tmp_path):
    """0009: rows logged before it were calls that reached the upstream (refused false,
    the totals' refused 0); going back drops the refusal rows, which the code before it
    would count against limits."""
    with empty_database(tmp_path) as url:
        engine = make_engine(url)
        try:
            schema.upgrade(engine, "0008")
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
            schema.downgrade(engine, "0008")
            with engine.connect() as conn:
                ids = conn.execute(text("SELECT request_id FROM request_log")).scalars().all()
            assert ids == ["old"]
        finally:
            engine.dispose()
