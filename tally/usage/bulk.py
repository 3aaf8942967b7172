"""The usage writer's batch statements run as the driver's own ``executemany``.

``conn.execute(statement, rows)`` builds each row's parameters through SQLAlchemy's
execution machinery (every bind looked up, converted and checked, per row): for the
request log's batches that was as much CPU as the database's own work (bench numbers in
docs/benchmarks.md). Here a statement is compiled once per dialect and set of columns,
and each row becomes the driver's parameters directly, every value converted by the
bind processor SQLAlchemy would have used (SQLite's text datetimes, for one), then the
batch goes through ``Connection.exec_driver_sql``: the same SQL, the same values, the
same error wrapping (an outage is still an ``OperationalError``), in the same
transaction.

A statement this cannot run exactly as SQLAlchemy would (a Python-side default that is
not a constant, an expanding or escaped parameter) goes through ``conn.execute``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import types
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Dialect


class _Plan:
    """A compiled statement, and how a row's dict becomes its driver parameters."""

    __slots__ = ("sql", "names", "processors", "constants", "positional", "_values")

    def __init__(self, sql, names, processors, constants, positional):
        self.sql: str = sql
        self.names: tuple[str, ...] = names
        self.processors: tuple[tuple[int, str, Callable], ...] = processors
        self.constants: dict[str, Any] = constants
        self.positional: bool = positional
        # the row's values in the statement's order, taken in C (one call per row)
        self._values = operator.itemgetter(*names) if len(names) > 1 else _one(names)

    def parameters(self, row: dict[str, Any]) -> tuple | dict:
        """The driver's parameters for ``row``."""
        if self.constants:
            row = {**self.constants, **row}
        values = self._values(row)
        if self.processors:
            values = list(values)
            for index, _name, process in self.processors:
                value = values[index]
                if value is not None:
                    values[index] = process(value)
            values = tuple(values)
        return values if self.positional else dict(zip(self.names, values, strict=True))


def _one(names: tuple[str, ...]) -> Callable[[dict], tuple]:
    """For a statement of one parameter (or none): the row's value as a 1-tuple."""
    if not names:
        return lambda row: ()
    name = names[0]
    return lambda row: (row[name],)


def execute_many(conn: Connection, statement, rows: list[dict[str, Any]]) -> None:
    """``conn.execute(statement, rows)`` for a statement whose result is not read: every
    row's parameters made once, by the compiled plan (all rows name the same keys)."""
    if not rows:
        return
    plan = _plan(statement, conn.dialect, tuple(rows[0]))
    if plan is None:
        conn.execute(statement, rows)
        return
    conn.exec_driver_sql(plan.sql, [plan.parameters(row) for row in rows])


def insert_new(conn: Connection, statement, rows: list[dict[str, Any]], key: str) -> set[str]:
    """Run ``statement`` (an ``INSERT … ON CONFLICT DO NOTHING``) for each row, on SQLite;
    the ``key`` of the rows it inserted (SQLite says, per statement, whether it changed a
    row). ``executemany`` cannot return rows, and SQLAlchemy's ``RETURNING`` batches
    cost what this module saves."""
    plan = _plan(statement, conn.dialect, tuple(rows[0])) if rows else None
    if plan is None:
        return set(conn.execute(statement.returning(statement.table.c[key]), rows).scalars())
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.driver_connection.cursor()
    inserted: set[str] = set()
    try:
        for row in rows:
            cursor.execute(plan.sql, plan.parameters(row))
            if cursor.rowcount == 1:
                inserted.add(row[key])
    except dbapi.Error as exc:  # as SQLAlchemy raises it: an outage is OperationalError
        raise sa_exc.DBAPIError.instance(
            plan.sql, None, exc, dbapi.Error, hide_parameters=True, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()
    return inserted


def select_in(conn: Connection, head: str, values: list) -> list[tuple]:
    """The rows of ``{head} IN (…values)``, through the driver: SQLAlchemy's expanding
    ``IN`` renders its placeholders anew on every execution (per batch, two lookups of
    as many names as the batch has users), here they are made once per count."""
    if not values:
        return []
    sql = _in_list(head, len(values), conn.dialect.paramstyle)
    return list(conn.exec_driver_sql(sql, tuple(values)))


@functools.lru_cache(maxsize=128)  # one string per batch size seen lately
def _in_list(head: str, count: int, paramstyle: str) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    return f"{head} IN ({', '.join([mark] * count)})"


@functools.lru_cache(maxsize=256)
def _plan(statement, dialect: Dialect, keys: tuple[str, ...]) -> _Plan | None:
    """``statement`` compiled for ``dialect`` with the columns ``keys``, or None when it
    needs more than plain parameters."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if compiled.escaped_bind_names or compiled.post_compile_params or compiled.returning:
        return None
    constants = {}
    for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
        default = column.default
        if default is None or not default.is_scalar:
            return None  # a default computed per row (a callable): SQLAlchemy's to run
        constants[column.key] = default.arg
    names = tuple(compiled.positiontup if compiled.positional else compiled.binds)
    processors = []
    for index, name in enumerate(names):
        bind = compiled.binds[name]
        if bind.value is not None and name not in keys and name not in constants:
            return None  # a literal bound in the statement itself
        impl = bind.type.dialect_impl(dialect)
        process = _quicker(impl, dialect, impl.bind_processor(dialect))
        if process is not None:
            processors.append((index, name, process))
    return _Plan(compiled.string, names, tuple(processors), constants, compiled.positional)


# SQLAlchemy's own text form of SQLite datetimes and dates (tests/usage/test_bulk.py holds
# the quicker processors below to the processors they stand in for)
_SQLITE_DATETIME = sqlite.DATETIME()._storage_format
_SQLITE_DATE = sqlite.DATE()._storage_format


def _quicker(impl, dialect: Dialect, process: Callable | None) -> Callable | None:
    """``process``, or what gives the same values for less: on SQLite, datetimes and
    dates in C (``isoformat``: SQLAlchemy builds a dict and formats it, per value, five
    a row), and booleans as they are (sqlite3 stores ``True`` as 1, as SQLAlchemy's
    processor makes it)."""
    if process is None or dialect.name != "sqlite":
        return process
    if isinstance(impl, sqlite.DATETIME) and impl._storage_format == _SQLITE_DATETIME:
        return functools.partial(_sqlite_datetime, process)
    if isinstance(impl, sqlite.DATE) and impl._storage_format == _SQLITE_DATE:
        return functools.partial(_sqlite_date, process)
    if isinstance(impl, types.Boolean):
        return _sqlite_bool
    return process


_last_datetime: tuple[Any, str] = (None, "")  # the last one converted, and its text


def _sqlite_datetime(slow: Callable, value: Any) -> Any:
    global _last_datetime
    last = _last_datetime  # one read: another thread may replace the pair, not tear it
    if last[0] is value:  # a row's first and last seen, its creation: one call's "now"
        return last[1]
    if type(value) is datetime:
        text = (value if value.tzinfo is None else value.replace(tzinfo=None)).isoformat(
            " ", "microseconds"
        )
        _last_datetime = (value, text)
        return text
    return slow(value)


def _sqlite_date(slow: Callable, value: Any) -> Any:
    return value.isoformat() if type(value) is date else slow(value)


def _sqlite_bool(value: Any) -> Any:
    if type(value) is bool:
        return value  # an int to sqlite3: 1 or 0
    raise TypeError(f"Not a boolean value: {value!r}")
