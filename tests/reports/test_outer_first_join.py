"""``OuterFirstJoin`` (tally/reports/breakdown_users.py): the per-user breakdowns' join is
a ``CROSS JOIN`` on SQLite, so its planner walks the users first, and a plain join on
PostgreSQL. These fail when SQLAlchemy compiles joins differently or leaves the checked
range."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import date

import pytest
import sqlalchemy
from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite

from tally.models import DailyTotal, EndUser, MonthlyUserTotal
from tally.reports import breakdown_users
from tally.reports.breakdown_users import (
    OuterFirstJoin,
    cross_join_supported,
    profile_rows,
    user_rows,
)

JAN, JAN_15, JAN_31 = date(2025, 1, 1), date(2025, 1, 15), date(2025, 1, 31)


def from_clause(dialect, table=DailyTotal) -> str:
    """The FROM clause of a per-user sum over ``table``, compiled for ``dialect``."""
    join = OuterFirstJoin(EndUser.__table__, table.__table__, EndUser.id == table.user_id)
    sql = str(select(EndUser.external_id).select_from(join).compile(dialect=dialect))
    return sql.split("\nFROM ", 1)[1]


@contextmanager
def statements(session):
    """The SQL ``session`` sends while the block runs."""
    sent: list[str] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", keep)


@pytest.mark.parametrize(
    ("dialect", "keyword"), [(sqlite.dialect(), "CROSS JOIN"), (postgresql.dialect(), "JOIN")]
)
@pytest.mark.parametrize("table", [DailyTotal, MonthlyUserTotal])
def test_the_join_compiles_per_dialect(dialect, keyword, table):
    name = table.__tablename__
    assert (
        from_clause(dialect, table)
        == f"end_users {keyword} {name} ON end_users.id = {name}.user_id"
    )


def test_the_breakdowns_send_it_and_sqlite_walks_the_users_first(db):
    """On the test database (SQLite, or PostgreSQL in the PostgreSQL run)."""
    is_sqlite = db.get_bind().dialect.name == "sqlite"
    with statements(db) as sent:
        list(user_rows(db, JAN, JAN_15, None, None, None))  # days, every user
        list(user_rows(db, JAN, JAN_31, None, None, None))  # a whole month
        profile_rows(db, JAN, JAN_15, "tag", "tag", None)
        profile_rows(db, JAN, JAN_31, "metadata", "plan", None)
    joins = [sql for sql in sent if " JOIN " in sql]
    assert len(joins) == 4
    for sql, table in zip(joins, ["daily_totals", "monthly_user_totals"] * 2, strict=True):
        keyword = "CROSS JOIN" if is_sqlite else "JOIN"
        assert f"\nFROM end_users {keyword} {table} ON end_users.id = {table}.user_id" in sql
    if not is_sqlite:
        return
    for sql in joins:
        plan = db.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql, _dummies(sql))
        first = plan.fetchall()[0][3]
        assert first.startswith(("SCAN end_users", "SEARCH end_users")), first


def _dummies(sql: str) -> tuple:
    """Parameters for a statement's placeholders (a plan does not depend on them)."""
    return (0,) * sql.count("?")


def test_outside_the_checked_range_the_join_stays_plain(monkeypatch):
    monkeypatch.setattr(breakdown_users, "cross_join_supported", lambda: False)
    assert from_clause(sqlite.dialect()).startswith("end_users JOIN daily_totals ON ")


def test_the_installed_sqlalchemy_is_one_the_join_was_checked_against():
    assert cross_join_supported(), (
        f"check tally/reports/breakdown_users.py against SQLAlchemy {sqlalchemy.__version__}"
    )


@pytest.mark.parametrize("version", ["1.4.54", "2.2.0", "3.0.1"])
def test_an_unchecked_sqlalchemy_is_said_once(caplog, version):
    with caplog.at_level(logging.WARNING):
        assert cross_join_supported(version) is False
        assert cross_join_supported(version) is False
    [record] = caplog.records
    assert f"SQLAlchemy {version} is outside" in record.getMessage()
    assert "tally.reports.breakdown_users" in record.getMessage()
