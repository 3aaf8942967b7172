"""Databases for the tests: an empty one (a SQLite file, or a new PostgreSQL database next
to TALLY_TEST_DATABASE_URL), and emptying one between tests."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.engine import make_url

from tally.db import Base
from tally.models import ConfigRevision


@contextmanager
def empty_database(directory):
    """An empty database: a new SQLite file in ``directory``, or a new PostgreSQL database
    next to TALLY_TEST_DATABASE_URL (dropped afterwards)."""
    base = os.environ.get("TALLY_TEST_DATABASE_URL")
    if not base:
        yield "sqlite:///" + str(directory / f"tally-{uuid.uuid4().hex[:8]}.db")
        return
    name = f"tally_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reset_database(engine) -> None:
    """Empty every table, keeping the default config revision 1 as migrated."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name == "config_revisions":
                conn.execute(delete(table).where(table.c.id > 1))
            else:
                conn.execute(delete(table))
        conn.execute(
            update(ConfigRevision.__table__)
            .where(ConfigRevision.id == 1)
            .values(
                enabled=True,
                prefix="tally",
                hash_mode="hmac-sha256",
                hash_length=16,
                dialect="openrouter",
                cache_key=False,
                forward_profile=False,
                require_identity=False,
            )
        )
        if conn.dialect.name == "postgresql":  # ids start over, as they do on SQLite
            for table in Base.metadata.sorted_tables:
                if "id" not in table.c:  # the totals tables are keyed by their groups
                    continue
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                    )
                )
