"""The engines tally.db makes: SQLite's pool hands out the connection used last (the
usage writer's page cache survives its helper threads' turns), and an in-memory
database still gets an engine."""

from __future__ import annotations

from sqlalchemy import text

from tally.db import make_engine


def test_a_sqlite_file_pool_hands_out_the_connection_returned_last(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    try:
        first, second = engine.connect(), engine.connect()
        first_dbapi = first.connection.dbapi_connection
        second_dbapi = second.connection.dbapi_connection
        second.close()
        first.close()  # returned last
        with engine.connect() as again:
            assert again.connection.dbapi_connection is first_dbapi
        with engine.connect() as conn, engine.connect() as other:
            assert conn.connection.dbapi_connection is first_dbapi
            assert other.connection.dbapi_connection is second_dbapi
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_database_gets_an_engine():
    for url in ("sqlite://", "sqlite:///:memory:"):
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()
