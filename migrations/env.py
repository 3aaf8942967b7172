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
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run them on a database.")
run_migrations_online()
