"""The test run's database: migrated to head once per session (SQLite, or PostgreSQL
when TALLY_TEST_DATABASE_URL is set); each app fixture empties it after its test."""

from __future__ import annotations

import pytest

from tally import schema
from tally.db import make_engine
from tests.helpers.database import empty_database


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A fresh database migrated to head, for this test run."""
    with empty_database(tmp_path_factory.mktemp("db")) as url:
        engine = make_engine(url)
        schema.upgrade(engine)
        engine.dispose()
        yield url
