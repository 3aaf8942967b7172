"""Daily totals: the request log added up as rows are inserted, in the same transaction.

``add_to_totals`` takes the request rows a batch actually inserted (a replayed row that
the insert skipped must not be passed, or it would be counted twice) and adds them to
three tables (tally.models): ``daily_totals`` (day x user x key x model x endpoint),
``daily_model_totals`` (day x key x model x endpoint) and ``monthly_user_totals``
(month x user). Each is one ``INSERT … ON CONFLICT … DO UPDATE SET x = x + excluded.x``
``executemany`` per batch, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from tally.models import DailyModelTotal, DailyTotal, MonthlyUserTotal

SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost",
)
# table -> its key columns, in primary-key order
TABLES: dict[Table, tuple[str, ...]] = {
    DailyTotal.__table__: ("day", "user_id", "api_key_id", "model", "endpoint"),
    DailyModelTotal.__table__: ("day", "api_key_id", "model", "endpoint"),
    MonthlyUserTotal.__table__: ("month", "user_id"),
}


def group_key(row: dict[str, Any]) -> dict[str, Any]:
    """The totals' key columns for one request row. Absent ids and models become the
    sentinels 0 and '' (a unique key never conflicts on NULL); days are UTC days."""
    day: date = row["created_at"].date()
    return {
        "day": day,
        "month": day.replace(day=1),
        "user_id": row.get("user_id") or 0,
        "api_key_id": row.get("api_key_id") or 0,
        "model": row.get("model") or "",
        "endpoint": row["endpoint"],
    }


def row_sums(row: dict[str, Any]) -> tuple:
    """What one request row adds to its groups, in ``SUMS`` order."""
    return (
        1,
        1 if row["status"] >= 400 else 0,
        row.get("prompt_tokens") or 0,
        row.get("completion_tokens") or 0,
        row.get("cached_tokens") or 0,
        row.get("total_tokens") or 0,
        row.get("cost") or 0.0,
    )


def add_to_totals(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Add the request ``rows`` just inserted (the dicts given to the insert) to every
    totals table, in the caller's transaction.

    Groups are added up in Python first, so a batch updates each total once, and
    written in key order, so two writers upserting the same totals on PostgreSQL take
    their row locks in one order and cannot deadlock.
    """
    grouped: dict[Table, dict[tuple, list]] = {table: {} for table in TABLES}
    for row in rows:
        key, sums = group_key(row), row_sums(row)
        for table, names in TABLES.items():
            acc = grouped[table].setdefault(tuple(key[n] for n in names), [0] * len(SUMS))
            for n, value in enumerate(sums):
                acc[n] += value
    for table, names in TABLES.items():
        groups = grouped[table]
        if groups:
            params = [
                dict(zip(names, key, strict=True)) | dict(zip(SUMS, groups[key], strict=True))
                for key in sorted(groups)
            ]
            conn.execute(_upsert(conn.dialect.name, table), params)


@functools.cache
def _upsert(dialect: str, table: Table):
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(TABLES[table]),
        set_={name: table.c[name] + stmt.excluded[name] for name in SUMS},
    )
