"""Database engine and sessions (SQLAlchemy 2.x, no Flask extension).

SQLite runs in WAL mode with a busy timeout so several gunicorn workers can share
one file, which holds personal data: Tally creates it 0600 (SQLite gives its -wal and
-shm files the database file's mode) and takes others' access away from one an earlier
version created 0644. PostgreSQL gets a pre-pinged connection pool and a connect timeout. Errors
never carry SQL parameters (``hide_parameters``): those hold internal user ids, and
error messages end up in logs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

log = logging.getLogger(__name__)

# Named constraints: alembic can then alter them the same way on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every Tally model."""

    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    """The current time in UTC, naive: every timestamp column stores naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str, pool_size: int | None = None) -> Engine:
    """Create the engine for ``url`` with the settings each backend needs (``pool_size``
    overrides the default: 20 connections on SQLite, 10 plus 20 overflow on PostgreSQL)."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        # A file's pool hands out the connection used last: a connection's page cache
        # is dropped whenever another connection has written since its last use, so
        # with the pool's default round robin, a writer's next batch re-read every page
        # it touched (the usage writer process, whose helper threads take a second
        # connection now and then). An in-memory database has one connection per thread.
        in_memory = make_url(url).database in (None, "", ":memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size or 20,
            **({} if in_memory else {"pool_use_lifo": True}),
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size or 10,
        max_overflow=20,
        hide_parameters=True,
        connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
    )


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached or used right now (down,
    restarting, cut off, locked past the busy timeout), rather than that the statement
    is wrong: the first is retried later, the second never would succeed."""
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated or isinstance(
            error, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(error, sa_exc.DisconnectionError | sa_exc.TimeoutError | ConnectionError)


# What no text column can hold on every backend: PostgreSQL refuses NUL in text (and in
# jsonb), and a lone surrogate (what JSON's "\ud800" escape decodes to; a pair decodes to
# one character) has no UTF-8 encoding, so no driver can send it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT = "must not contain NUL characters (\\u0000) or lone surrogates (\\ud800-\\udfff)"


def storable(text: str) -> bool:
    """Whether ``text`` can be stored in a text or JSON column on every backend (see
    ``UNSTORABLE_TEXT``: what to tell whoever sent text that cannot)."""
    return _UNSTORABLE.search(text) is None


@contextmanager
def session_from(source: Session | sessionmaker) -> Iterator[Session]:
    """``source`` when it is a session; else a session of that factory, closed after.
    Lookups served from a cache take a factory: a request whose answer is cached then
    opens no session at all."""
    if isinstance(source, Session):
        yield source
        return
    with source() as session:
        yield session


def make_session_factory(engine: Engine) -> sessionmaker:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite database file of ``url`` readable by its owner only (an empty
    file is an empty database), before SQLite would create it 0644; an existing one, and
    its -wal and -shm files, lose any access by others (the group's is kept: a backup may
    run as the group)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except OSError:  # no such folder, not writable: SQLite says so itself
        return
    for path in (database, database + "-wal", database + "-shm"):
        try:
            mode = os.stat(path).st_mode
            if mode & 0o007:
                os.chmod(path, mode & 0o770)
        except OSError:  # absent, or not ours to change
            continue


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def run_native(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on a native thread when gevent has patched threading (the
    calling greenlet waits; the event loop goes on serving requests), else right here."""
    if "gevent" in sys.modules:
        from gevent import get_hub, monkey

        if monkey.is_module_patched("threading"):
            return get_hub().threadpool.apply(function, args)
    return function(*args)


class Periodic:
    """A pass over the database repeated on a daemon thread until :meth:`stop`: the
    reconciler of estimated costs and the sinks' delivery loop are each one.

    A subclass gives :meth:`run_pass` (run on a native thread, :func:`run_native`: under
    gevent the database and HTTP calls leave the event loop) and may give
    :meth:`after_pass`, which sees its result and says how long to wait before the next
    (``interval`` unless it says otherwise). A pass that raises (the database is down)
    is logged once per outage, as one line, and tried again after ``interval``: what
    it had to do waits in the database, nothing is lost.
    """

    what = "background pass"  # for the log line of a failure

    def __init__(self, name: str, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._failing = False

    def run_pass(self) -> Any:
        """One pass; its result goes to :meth:`after_pass`."""
        raise NotImplementedError

    def after_pass(self, result: Any) -> float | None:
        """Seconds until the next pass (None: ``interval``)."""
        return None

    def start(self):
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current pass (waiting up to ``timeout`` seconds for it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                result = run_native(self.run_pass)
            except Exception as exc:
                if not self._failing:
                    log.warning("%s failed (%s); will retry", self.what, type(exc).__name__)
                self._failing = True
                continue
            self._failing = False
            after = self.after_pass(result)
            if after is not None:
                wait = after
