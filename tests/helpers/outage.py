"""A database outage for one test: the app's sessions open on a database that cannot be
reached, while its engine, caches and everything else stay as they were."""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from tally.db import make_engine, make_session_factory


def unreachable_database(monkeypatch, app) -> None:
    """Until the test ends, every session of ``app`` is bound to a database that cannot
    be reached (``sessionmaker.kw``, restored by ``monkeypatch``)."""
    sessions = app.extensions["tally"].sessions
    monkeypatch.setattr(sessions, "kw", {**sessions.kw, "bind": _unreachable_engine(app)})


def unreachable_sessions(app) -> sessionmaker:
    """A session factory on a database that cannot be reached (to hand to one part of
    ``app``, such as its limits, while the rest keeps the real one)."""
    return make_session_factory(_unreachable_engine(app))


def _unreachable_engine(app):
    """An engine on a port nothing listens on (or a SQLite file that cannot exist)."""
    url = app.config["TALLY"].database_url
    if url.startswith("sqlite"):
        return make_engine("sqlite:////nonexistent-dir/tally.db")
    return make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
