"""Alembic environment. Runs on the engine Tally hands over (``flask --app app db upgrade``),
or, under the plain ``alembic`` command, on TALLY_DATABASE_URL / the default SQLite file."""

from __future__ import annotations

from alembic import context

from tally.db import make_engine
from tally.models import Base

config = context.config
target_metadata = Base.metadata


def _engine():
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from pathlib import Path

    from tally.settings import load_settings

    instance = Path(__file__).resolve().parent.parent / "instance"
    return make_engine(load_settings(str(instance)).database_url)


def run_migrations_online() -> None:
    """Run the migrations inside one transaction per migration."""
    engine = _engine()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)


def _sqlite_foreign_keys(connection, on: bool) -> None:
    """SQLite's batch migrations copy a table, drop it and rename the copy; with foreign
    keys on, dropping a table other rows refer to (upstream_identifiers, 0009) fails.
    Alembic's advice: turn them off around the migrations. The pragma is ignored inside
    a transaction, hence the commits; the connection goes back to the pool with them on."""
    connection.commit()
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()


def _check_foreign_keys(connection) -> None:
    """What the migrations left must hold as if foreign keys had been on."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migrations broke foreign keys: {broken[:5]}")


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run them on a database.")
run_migrations_online()
