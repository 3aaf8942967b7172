"""The schema is made by alembic only, and the migrations match the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

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
