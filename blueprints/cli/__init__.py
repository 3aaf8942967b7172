"""The ``flask --app app …`` commands (PRODUCT.md's CLI): one module per command group,
``common`` for what they share (the audit actor, the one-line failure, the session that
turns a refused use case into one). :func:`register` adds every group to the app."""

from __future__ import annotations

from flask import Flask

from blueprints.cli import (
    config,
    db,
    dev,
    idp,
    keys,
    limits,
    operators,
    sinks,
    trace,
    usage,
    users,
)

COMMANDS = (
    db.group,
    keys.group,
    operators.group,
    config.group,
    idp.group,
    dev.group,
    limits.group,
    usage.group,
    trace.trace,
    users.group,
    sinks.group,
)


def register(app: Flask) -> None:
    """Add every command group (and ``trace``) to ``app``'s CLI."""
    for command in COMMANDS:
        app.cli.add_command(command)
