"""The usage writer's statements through the driver's executemany (tally.usage.bulk): the
rows they leave are those SQLAlchemy's own execution leaves, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text

from tally.db import utcnow
from tally.models import EndUser, RequestLog
from tally.usage.bulk import execute_many, insert_new
from tally.usage.records_sql import statements

SEEN = datetime(2026, 3, 4, 5, 6, 7, 890123)


def stored(db, table: str, order: str) -> list[tuple]:
    """Every row of ``table`` as the database holds it (SQLite: the text itself)."""
    return [tuple(row) for row in db.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]


def test_an_upsert_leaves_the_rows_sqlalchemy_leaves_constant_defaults_included(db):
    sql = statements(db.connection().dialect.name)
    users = [
        {"external_id": f"u-{n}", "first_seen": SEEN, "last_seen": SEEN, "is_demo": n == 1}
        for n in range(3)
    ]
    conn = db.connection()
    conn.execute(sql.upsert_users, users[:1])  # SQLAlchemy's own execution
    execute_many(conn, sql.upsert_users, users[1:])  # the driver's executemany
    db.commit()
    conn = db.connection()
    first, second, third = stored(db, "end_users", "external_id")
    # column for column as SQLAlchemy stored them (datetimes in SQLite's text form,
    # ``verified`` from its Python default): only the id, the name and is_demo differ
    names = [column.name for column in EndUser.__table__.columns]
    differ = {names.index(name) for name in ("id", "external_id", "is_demo")}
    same = [i for i in range(len(names)) if i not in differ]
    assert [third[i] for i in same] == [first[i] for i in same]
    assert [second[i] for i in same] == [first[i] for i in same]
    loaded = db.scalars(select(EndUser).order_by(EndUser.external_id)).all()
    assert [(u.external_id, u.first_seen, u.is_demo, u.verified) for u in loaded] == [
        ("u-0", SEEN, False, False),
        ("u-1", SEEN, True, False),
        ("u-2", SEEN, False, False),
    ]
    later = SEEN.replace(year=2027)
    execute_many(
        db.connection(), sql.upsert_users, [{**users[2], "last_seen": later}]
    )  # the update
    db.commit()
    db.expire_all()
    assert db.scalar(select(EndUser.last_seen).where(EndUser.external_id == "u-2")) == later


def test_the_text_sqlite_stores_is_sqlalchemys(db):
    conn = db.connection()
    if conn.dialect.name != "sqlite":
        pytest.skip("the stored text of a datetime is SQLite's concern")
    sql = statements("sqlite")
    users = [{"external_id": "a", "first_seen": SEEN, "last_seen": SEEN, "is_demo": False}]
    conn.execute(sql.upsert_users, users)
    execute_many(conn, sql.upsert_users, [{**users[0], "external_id": "b"}])
    db.commit()
    a, b = stored(db, "end_users", "external_id")
    names = [column.name for column in EndUser.__table__.columns]
    first_seen = names.index("first_seen")
    assert a[first_seen] == b[first_seen] == "2026-03-04 05:06:07.890123"
    assert [v for i, v in enumerate(a) if names[i] not in ("id", "external_id")] == [
        v for i, v in enumerate(b) if names[i] not in ("id", "external_id")
    ]


def test_only_the_rows_really_inserted_are_named_and_an_error_is_sqlalchemys(db):
    conn = db.connection()
    if conn.dialect.name != "sqlite":
        pytest.skip("insert_new is SQLite's path (PostgreSQL asks xmin)")
    sql = statements("sqlite")

    def row(request_id: str) -> dict:
        return {
            column.name: None for column in RequestLog.__table__.columns if column.name != "id"
        } | {
            "request_id": request_id,
            "created_at": utcnow(),
            "endpoint": "chat.completions",
            "stream": False,
            "status": 200,
            "is_demo": False,
            "refused": False,
            "reconcile_attempts": 0,
        }

    assert insert_new(conn, sql.insert_rows, [row("r1"), row("r2")], "request_id") == {"r1", "r2"}
    again = insert_new(conn, sql.insert_rows, [row("r2"), row("r3")], "request_id")
    assert again == {"r3"}  # r2 was there: skipped, not counted
    # twice in one batch, beside an old row: inserted once, named once
    mixed = insert_new(conn, sql.insert_rows, [row("r5"), row("r1"), row("r5")], "request_id")
    assert mixed == {"r5"}
    assert insert_new(conn, sql.insert_rows, [row("r1"), row("r5")], "request_id") == set()
    db.commit()
    assert db.scalars(select(RequestLog.request_id).order_by(RequestLog.id)).all() == [
        "r1",
        "r2",
        "r3",
        "r5",
    ]
    conn = db.connection()
    broken = sql.insert_rows.table.name
    conn.exec_driver_sql(f"UPDATE {broken} SET status = status WHERE 0")  # opens the txn
    conn.exec_driver_sql(f"ALTER TABLE {broken} RENAME TO {broken}_away")  # undone below
    try:
        with pytest.raises(sa_exc.OperationalError):  # is_unavailable and the spool see it
            insert_new(conn, sql.insert_rows, [row("r4")], "request_id")
    finally:
        db.rollback()


@pytest.mark.parametrize(
    "column_type, values",
    [
        (
            "DATETIME",
            [
                datetime(2026, 1, 2, 3, 4, 5),  # no microseconds: still written
                datetime(999, 1, 2, 3, 4, 5, 7),  # a year below 1000: zero-padded
                datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=3))),
                date(2026, 5, 6),  # a date where a datetime goes: midnight
                SEEN,  # the same one again (the last one's text is kept), then another
                SEEN,
                SEEN.replace(microsecond=0),
                SEEN,
            ],
        ),
        ("DATE", [date(2026, 1, 2), datetime(2026, 1, 2, 3, 4)]),
        ("BOOLEAN", [True, False]),
    ],
)
def test_the_quicker_sqlite_processors_give_sqlalchemys_values(column_type, values):
    """tally.usage.bulk's SQLite processors stand in for SQLAlchemy's: the same value
    for each input (fails if SQLAlchemy changes its text form)."""
    from sqlalchemy import Boolean
    from sqlalchemy.dialects import sqlite

    from tally.usage.bulk import _quicker

    dialect = sqlite.dialect()
    impl = {"DATETIME": sqlite.DATETIME(), "DATE": sqlite.DATE(), "BOOLEAN": Boolean()}[
        column_type
    ].dialect_impl(dialect)
    slow = impl.bind_processor(dialect)
    quick = _quicker(impl, dialect, slow)
    assert quick is not slow
    assert [quick(value) for value in values] == [slow(value) for value in values]
    with pytest.raises(TypeError):
        quick("2026-01-02")
