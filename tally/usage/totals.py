"""Daily totals: the request log added up as rows are inserted, in the same transaction.

``add_to_totals`` takes the request rows a batch actually inserted (a replayed row that
the insert skipped must not be passed, or it would be counted twice) and adds them to
three tables (tally.models): ``daily_totals`` (day x user x key x model x endpoint),
``daily_model_totals`` (day x key x model x endpoint) and ``monthly_user_totals``
(month x user). Each is one ``INSERT … ON CONFLICT … DO UPDATE SET x = x + excluded.x``
``executemany`` per batch, on SQLite and PostgreSQL alike.

A refused call's row (``refused``: Tally refused it before the upstream) adds 1 to
``refused`` and nothing else: ``requests``, ``errors``, tokens and cost count the calls
that reached (or tried to reach) the upstream, which exports and the admin API bill.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from tally.models import DailyModelTotal, DailyTotal, MonthlyUserTotal
from tally.usage.bulk import execute_many

SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost",
    "refused",
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
    day, user_id, api_key_id, model, endpoint = _daily_key(row)
    return {
        "day": day,
        "month": day.replace(day=1),
        "user_id": user_id,
        "api_key_id": api_key_id,
        "model": model,
        "endpoint": endpoint,
    }


def _daily_key(row: dict[str, Any]) -> tuple[date, int, int, str, str]:
    """The ``daily_totals`` key of a row (as ``group_key``, for the hot loop)."""
    return (
        row["created_at"].date(),
        row.get("user_id") or 0,
        row.get("api_key_id") or 0,
        row.get("model") or "",
        row["endpoint"],
    )


REFUSAL = (0, 0, 0, 0, 0, 0, 0.0, 1)  # a refused call: no request, no tokens, no cost


def row_sums(row: dict[str, Any]) -> tuple:
    """What one request row adds to its groups, in ``SUMS`` order."""
    if row.get("refused"):
        return REFUSAL
    return (
        1,
        1 if row["status"] >= 400 else 0,
        row.get("prompt_tokens") or 0,
        row.get("completion_tokens") or 0,
        row.get("cached_tokens") or 0,
        row.get("total_tokens") or 0,
        row.get("cost") or 0.0,
        0,
    )


def delta_sums(row: dict[str, Any]) -> tuple:
    """What a change to an already counted row adds (its figures are the differences):
    no request, no error, no refusal."""
    return (0, 0, *row_sums(row | {"status": 0, "refused": False})[2:-1], 0)


def add_to_totals(conn: Connection, rows: Iterable[dict[str, Any]], requests: int = 1) -> None:
    """Add the request ``rows`` just inserted (the dicts given to the insert) to every
    totals table, in the caller's transaction. ``requests=0``: the rows are changes to
    rows already counted (their token and cost differences; tally.usage.reconcile).

    Rows are added up in Python first (per ``daily_totals`` key, then those groups per
    coarser key), so a batch updates each total once; groups are written in key order,
    so two writers upserting the same totals on PostgreSQL take their row locks in one
    order and cannot deadlock.
    """
    sums_of = row_sums if requests else delta_sums
    daily: dict[tuple, list] = {}
    for row in rows:
        acc = daily.get(key := _daily_key(row))
        if acc is None:
            daily[key] = list(sums_of(row))
        else:
            for n, value in enumerate(sums_of(row)):
                acc[n] += value
    if not daily:
        return
    by_model: dict[tuple, list] = {}
    by_month: dict[tuple, list] = {}
    for (day, user_id, api_key_id, model, endpoint), sums in daily.items():
        _add(by_model, (day, api_key_id, model, endpoint), sums)
        _add(by_month, (day.replace(day=1), user_id), sums)
    for table, groups in zip(TABLES, (daily, by_model, by_month), strict=True):
        names = TABLES[table]
        params = [
            dict(zip(names, key, strict=True)) | dict(zip(SUMS, groups[key], strict=True))
            for key in sorted(groups)
        ]
        execute_many(conn, _upsert(conn.dialect.name, table), params)


def _add(groups: dict[tuple, list], key: tuple, sums: list) -> None:
    acc = groups.get(key)
    if acc is None:
        groups[key] = list(sums)
    else:
        for n, value in enumerate(sums):
            acc[n] += value


@functools.cache
def _upsert(dialect: str, table: Table):
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(TABLES[table]),
        set_={name: table.c[name] + stmt.excluded[name] for name in SUMS},
    )
