"""What the ``flask --app app …`` commands share. They parse, call a use case and print; a
bad command, field or value, and anything Tally refuses or cannot do (a
:class:`TallyError`), ends with a one-line message and exit status 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click
from flask import current_app
from sqlalchemy.orm import Session

from tally.errors import TallyError
from tally.runtime.process import Runtime

CLI_ACTOR = "cli"  # who the audit log says made a change from the command line


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit with status 2."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(2)


def runtime() -> Runtime:
    """The app's runtime (engine, sessions, settings, limits)."""
    return current_app.extensions["tally"]


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session for one command. The one place the CLI answers a :class:`TallyError`:
    nothing of the refused use case is kept, and its message is the one line (exit 2)."""
    with runtime().sessions() as session:
        try:
            yield session
        except TallyError as exc:
            session.rollback()
            fail(str(exc))


def parse_assignments(assignments: tuple[str, ...], known: tuple[str, ...]) -> dict[str, str]:
    """``FIELD=VALUE`` arguments as a dict; a malformed one or an unknown field fails."""
    fields: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"expected FIELD=VALUE, got {item!r}")
        if name not in known:
            fail(f"unknown field {name!r}; fields are {', '.join(known)}")
        fields[name] = value
    return fields
