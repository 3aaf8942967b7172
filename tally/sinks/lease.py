"""One delivery loop at a time on a SQLite database.

On PostgreSQL the loops of several processes or instances run side by side: each claims
its events with ``FOR UPDATE SKIP LOCKED`` (tally.sinks.delivery), so no two take the
same rows. SQLite has no row locks: two loops (the writer process and a worker writing
its own rows, several workers with inline writes, a CLI beside them) would read the same
due events, and both send them, or fail on the database lock. So a pass on SQLite first
takes an exclusive lock on a file next to the database (``<database>.sinks-lock``,
``flock``): the loop that holds it delivers, the others skip their pass. The kernel
drops the lock with the process that held it: a loop killed mid-pass leaves no lease to
wait out (its claimed events wait their claim, tally.sinks.delivery.LEASE).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

SUFFIX = ".sinks-lock"


def lock_path(engine: Engine) -> str | None:
    """The lock file of ``engine``'s database: None unless it is a SQLite file (an
    in-memory database lives in one process, PostgreSQL needs none)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database) + SUFFIX


@contextmanager
def turn(engine: Engine) -> Iterator[bool]:
    """Whether this pass may deliver: True while it holds the database's lock (always
    True where none is needed), False when another loop holds it now."""
    path = lock_path(engine)
    if path is None:
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # closing the file below releases the lock
    finally:
        os.close(fd)
