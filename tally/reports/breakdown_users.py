"""The breakdowns per end user, per tag and per metadata value (tally.reports.breakdowns),
and what every breakdown query shares: the sums, the figures of a row, byte order.

Per user, the rows come from walking ``end_users`` in ``external_id`` order (its unique
index) and looking each user's totals up by index — whole calendar months in
``monthly_user_totals`` (a row per user and month), any other range in ``daily_totals``
(``ix_daily_totals_user_day``). Rows come out in cursor order as they are found, with no
sort of the whole set: a page of ``limit`` rows after a cursor reads those users alone,
and a full export streams from its first row.

:class:`OuterFirstJoin` leans on how SQLAlchemy compiles a join (the text its SQLite form
rewrites), so the rewrite applies only on the releases in :data:`SQLALCHEMY_CHECKED`
(checked once per process, the first time it compiles; outside them the join stays a
plain one, the same rows in SQLite's own plan, and one log line says so).
tests/reports/test_outer_first_join.py checks the SQL and SQLite's plan for it.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import sqlalchemy
from sqlalchemy import ColumnElement, Select, Text, cast, func, null, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Join

from tally.limits.policy import metadata_value
from tally.models import DailyTotal, EndUser, MonthlyUserTotal

log = logging.getLogger(__name__)
# [first, past-the-end) SQLAlchemy (major, minor) whose ``visit_join`` writes an inner join
# as "<left> JOIN <right> ON …" (2.0.30 to 2.1.9 checked): pyproject.toml's range.
SQLALCHEMY_CHECKED = ((2, 0), (2, 2))
SUMS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")
COST_DIGITS = 6
CHUNK = 1000  # rows fetched at a time (PostgreSQL: from a server-side cursor)


def figures(sums) -> dict[str, Any]:
    """A row's figures from its sums in ``SUMS`` order (cost rounded: cents stay exact)."""
    requests, prompt, completion, cached, cost = sums
    return {
        "requests": int(requests or 0),
        "prompt_tokens": int(prompt or 0),
        "completion_tokens": int(completion or 0),
        "cached_tokens": int(cached or 0),
        "cost_usd": round(float(cost or 0.0), COST_DIGITS) + 0.0,  # + 0.0: never -0.0
    }


def sums_of(columns) -> list[ColumnElement]:
    """``sum()`` of each of ``SUMS`` among ``columns``, labelled by its name."""
    return [func.coalesce(func.sum(columns[name]), 0).label(name) for name in SUMS]


def has_requests(table) -> ColumnElement:
    """A group's HAVING: some request of it reached the upstream. A group of refused
    calls alone (the totals' ``refused``) bills nothing and is no row of a breakdown."""
    return func.sum(table.requests) > 0


def ordered(session: Session, expr: ColumnElement) -> ColumnElement:
    """``expr`` compared and sorted in byte order on every database (PostgreSQL's default
    collation would sort differently from SQLite and from the cursor's idea of order)."""
    if session.get_bind().dialect.name == "postgresql":
        return expr.collate("C")
    return expr


class OuterFirstJoin(Join):
    """An inner join whose left table SQLite must loop over first (``CROSS JOIN``): the
    planner would otherwise scan the totals by day and sort every user to find a page."""

    inherit_cache = True


@compiles(OuterFirstJoin, "sqlite")
def _cross_join(join: OuterFirstJoin, compiler, **kw) -> str:
    plain = compiler.visit_join(join, **kw)
    if not cross_join_supported():
        return plain
    # the left side is a plain table: the first " JOIN " is this join's own keyword
    return plain.replace(" JOIN ", " CROSS JOIN ", 1)


@functools.cache
def cross_join_supported(version: str = sqlalchemy.__version__) -> bool:
    """True when ``version`` (default: the installed SQLAlchemy's) is in
    :data:`SQLALCHEMY_CHECKED`; else False, said in one log line (once: cached)."""
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    if SQLALCHEMY_CHECKED[0] <= (int(major), int(minor)) < SQLALCHEMY_CHECKED[1]:
        return True
    log.warning(
        "SQLAlchemy %s is outside %s.%s-%s.%s, the releases tally.reports.breakdown_users was "
        "checked against: SQLite plans the per-user breakdowns' join itself (the same rows, "
        "maybe slower: it may read the totals first and sort every user)",
        version,
        *SQLALCHEMY_CHECKED[0],
        *SQLALCHEMY_CHECKED[1],
    )
    return False


def months_in(start: date, end: date) -> tuple[list[date], bool]:
    """The first days of the calendar months ``start``..``end`` touches, and whether the
    range is made of whole months only."""
    months, whole = [], True
    day = start
    while day <= end:
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        whole = whole and day == first and end >= following - timedelta(days=1)
        months.append(first)
        day = following
    return months, whole


def _source(start: date, end: date, key_id: int | None, user_id: int | None = None):
    """The totals table to read per user and the rows of the range in it (of one API
    key, of one user)."""
    months, whole = months_in(start, end)
    if whole and key_id is None:
        table = MonthlyUserTotal
        where = [table.month.in_(months)]
    else:
        table = DailyTotal
        where = [table.day >= start, table.day <= end]
        if key_id is not None:
            where.append(table.api_key_id == key_id)
    if user_id is not None:
        where.append(table.user_id == user_id)
    return table, where


def user_rows(
    session: Session,
    start: date,
    end: date,
    key_id: int | None,
    after: str | None,
    limit: int | None,
    user_id: int | None = None,
) -> Iterator[dict]:
    """Anonymous traffic first (``internal_id`` null, cursor ""), then each end user with
    totals in the range, in ``internal_id`` byte order (``user_id``: that user alone)."""
    table, where = _source(start, end, key_id, user_id)
    if after is None and limit != 0 and user_id is None:
        anonymous = session.execute(
            select(*sums_of(table.__table__.c)).where(*where, table.user_id == 0)
        ).one()
        if anonymous.requests:
            yield {"internal_id": None, "display_name": None} | figures(anonymous)
            limit = None if limit is None else limit - 1
    if limit == 0:
        return
    stmt = _users_statement(session, table, where, after, paged=limit is not None)
    if user_id is not None:  # that user's row alone, not every user walked to find it
        stmt = stmt.where(EndUser.id == user_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    # Core on the connection: rows read as they are used (the ORM would buffer them all)
    for row in session.connection().execute(stmt.execution_options(yield_per=CHUNK)):
        yield {"internal_id": row[0], "display_name": row[1]} | figures(row[2:])


def _users_statement(
    session: Session, table, where: list, after: str | None, paged: bool
) -> Select:
    is_pg = session.get_bind().dialect.name == "postgresql"
    if is_pg and paged:
        return _users_page_pg(table, where, after)
    # SQLite follows the external_id index only when grouping by that column (it allows
    # the bare display_name); PostgreSQL adds every user up by hash, then sorts (faster
    # than a LATERAL sum per user when every user is wanted)
    stmt = (
        select(EndUser.external_id, EndUser.display_name, *sums_of(table.__table__.c))
        .select_from(
            OuterFirstJoin(EndUser.__table__, table.__table__, EndUser.id == table.user_id)
        )
        .where(*where)
        .group_by(EndUser.id if is_pg else EndUser.external_id)
        .having(has_requests(table))
        .order_by(EndUser.external_id)
    )
    return stmt.where(EndUser.external_id > after) if after else stmt


def _users_page_pg(table, where: list, after: str | None) -> Select:
    """PostgreSQL, a page: each user in the order of the unique index on ``external_id``
    with a LATERAL sum of their totals, so the page stops after its rows. Users come in
    the database's collation there (not byte order: the one grouping that differs)."""
    totals = table.__table__
    per_user = (
        select(*sums_of(totals.c)).where(*where, totals.c.user_id == EndUser.id).lateral("per_user")
    )
    internal_id = EndUser.external_id
    stmt = (
        select(EndUser.external_id, EndUser.display_name, *[per_user.c[n] for n in SUMS])
        .select_from(EndUser)
        .join(per_user, true())
        .where(per_user.c.requests > 0)  # a user of refused calls alone is no row
        .order_by(internal_id)
    )
    return stmt.where(internal_id > after) if after else stmt


def profile_rows(
    session: Session,
    start: date,
    end: date,
    kind: str,
    name: str,
    key_id: int | None,
    user_id: int | None = None,
) -> list[dict]:
    """tag (``name`` "tag") or metadata (``name`` the key): the totals added up per
    distinct stored profile (tag list or metadata as JSON text: few distinct ones,
    whatever the number of users), then per value here, where JSON reads the same on
    every database. Key null (first): no tag, no such key, anonymous traffic.

    The users are walked in the order of their profile's index (migration 0007, on
    ``CAST(… AS TEXT)``, the expression grouped by), each user's totals looked up by
    index: SQLite groups them as they come instead of sorting 100,000 users. With
    ``user_id``: that user's totals alone."""
    table, where = _source(start, end, key_id, user_id)
    column = EndUser.tags if kind == "tag" else EndUser.profile_metadata
    profile = cast(column, Text)
    stmt = (
        select(profile, *sums_of(table.__table__.c))
        .select_from(
            OuterFirstJoin(EndUser.__table__, table.__table__, EndUser.id == table.user_id)
        )
        .where(*where)
        .group_by(profile)
    )
    anonymous = select(null(), *sums_of(table.__table__.c)).where(*where, table.user_id == 0)
    groups: dict[str | None, list] = {}
    for stmt_rows in (session.execute(anonymous), session.execute(stmt)):
        for row in stmt_rows:
            stored = json.loads(row[0]) if row[0] else None
            for value in _values(kind, name, stored) if any(row[1:]) else ():
                acc = groups.setdefault(value, [0, 0, 0, 0, 0.0])
                for n, figure in enumerate(row[1:]):
                    acc[n] += figure or 0
    found = sorted(groups.items(), key=lambda item: (item[0] is not None, item[0] or ""))
    return [{name: value} | figures(acc) for value, acc in found]


def _values(kind: str, name: str, profile: Any) -> list[str | None]:
    """The groups one user's totals count in: each distinct tag, or the metadata value."""
    if kind == "metadata":
        return [metadata_value(profile, name) if profile else None]
    tags = sorted({t for t in profile or () if isinstance(t, str)})
    return tags or [None]
