"""Usage broken down by one dimension over a range of UTC days: the rows of the console's
breakdown and chargeback tables, of ``usage export`` and of ``GET /admin/api/usage``.

Every figure comes from the totals tables (tally.usage.totals), never from the request
log. ``group_by`` is one of ``user``, ``model``, ``endpoint``, ``day``, ``tag``, ``key``
or ``metadata:KEY`` (``KEY`` an identity metadata key, e.g. ``metadata:plan``).

A row is a dict: the group's key columns, then ``requests``, ``prompt_tokens``,
``completion_tokens``, ``cached_tokens`` and ``cost_usd`` (USD, rounded to 6 decimals,
so cents are exact). Key columns per grouping (``columns``):

- ``user``: ``internal_id``, ``display_name``; anonymous traffic is one row with
  ``internal_id`` null (totals kept under a user id whose ``end_users`` row is gone are
  in no user row: the tag and metadata breakdowns count them under null);
- ``model`` (null: the upstream named none), ``endpoint``, ``day`` (``YYYY-MM-DD``),
  ``key`` (the API key's name; null: no key);
- ``tag``: a user's totals count once under each of their tags, so tag rows can add up
  to more than the whole; users without tags and anonymous traffic are the row with
  ``tag`` null;
- ``metadata:KEY``: the column is named ``KEY`` itself (``plan``), holding the user's
  value for it (a string; null: no such key, or anonymous).

Rows come ordered by their key, null first, then by byte order (users on PostgreSQL:
in the database's collation, the order of the unique index a page walks). Paging: ``after`` is
the cursor of the last row already read (``row_cursor``): the row's key value as a
string (``internal_id``, the model, the ISO day, ...), the empty string for the row
whose key is null. ``after=None`` starts from the beginning; mind ``after=""``: it means
"after the null row", so a caller must pass an empty ``after`` through, not drop it
(a client that did would get the first page again). ``limit`` caps the rows returned;
a page of exactly ``limit`` rows may have more after it (``json_chunks`` then writes
``"next"``: the cursor of its last row).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import Session

from tally.errors import InvalidInput
from tally.models import ApiKey, DailyModelTotal, DailyTotal, EndUser
from tally.reports.breakdown_users import (
    SUMS,
    figures,
    has_requests,
    ordered,
    profile_rows,
    sums_of,
    user_rows,
)

GROUPS = ("user", "model", "endpoint", "day", "tag", "key", "metadata:KEY")
FIGURES = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd")
KEY_COLUMNS = {
    "user": ("internal_id", "display_name"),
    "model": ("model",),
    "endpoint": ("endpoint",),
    "day": ("day",),
    "tag": ("tag",),
    "key": ("key",),
}
_METADATA_KEY = re.compile(r"[A-Za-z0-9._-]{1,64}")


class BreakdownError(InvalidInput):
    """A breakdown asked for by a grouping, cursor or API key that does not exist."""


@dataclass(frozen=True)
class Grouping:
    """A parsed ``group_by``: its kind and, for ``metadata:KEY``, the key."""

    kind: str
    metadata_key: str | None = None

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The group's key columns, in export order."""
        if self.metadata_key is not None:
            return (self.metadata_key,)
        return KEY_COLUMNS[self.kind]


def parse_group_by(group_by: str) -> Grouping:
    """``group_by`` checked; a BreakdownError naming the valid values otherwise."""
    if group_by in KEY_COLUMNS:
        return Grouping(group_by)
    kind, sep, key = (group_by or "").partition(":")
    if kind == "metadata" and sep:
        if not _METADATA_KEY.fullmatch(key):
            raise BreakdownError(
                f"metadata:KEY needs a key of 1-64 of [A-Za-z0-9._-], got {key!r}", "group_by"
            )
        if key in FIGURES or key in ("internal_id", "display_name"):
            raise BreakdownError(f"metadata key {key!r} clashes with a column name", "group_by")
        return Grouping("metadata", key)
    raise BreakdownError(
        f"group_by must be one of {', '.join(GROUPS)}, got {group_by!r}", "group_by"
    )


def columns(group_by: str) -> tuple[str, ...]:
    """Every column of ``group_by``'s rows, in order: the key columns, then the figures."""
    return parse_group_by(group_by).key_columns + FIGURES


def row_cursor(group_by: str, row: dict[str, Any]) -> str:
    """The cursor of ``row`` (pass it as ``after`` for the rows that follow it)."""
    grouping = parse_group_by(group_by)
    value = row[grouping.key_columns[0]]
    return "" if value is None else str(value)


def grouped_rows(
    session: Session,
    start: date,
    end: date,
    group_by: str,
    *,
    after: str | None = None,
    limit: int | None = None,
    key: str | None = None,
    user: str | None = None,
) -> Iterator[dict]:
    """The rows of ``group_by`` over the days ``start``..``end`` (inclusive), ordered by
    their key, those after the cursor ``after``, at most ``limit``; of the API key named
    ``key`` alone and of the end user whose internal id is ``user`` alone when given.
    Groups with no traffic in the range are absent, and so are groups whose calls were
    all refused (no request reached the upstream).

    Arguments are checked now (a BreakdownError before any row is read); the rows are
    read as the iterator is consumed, so an export streams them."""
    grouping = parse_group_by(group_by)
    if start > end:
        raise BreakdownError("the range must start on or before its end")
    if limit is not None and limit < 0:
        raise BreakdownError("limit must be 0 or more")
    key_id, user_id = filter_ids(session, key, user)
    if grouping.kind == "day" and after not in (None, ""):
        try:
            date.fromisoformat(after)
        except ValueError:
            raise BreakdownError(f"after must be a day written YYYY-MM-DD, got {after!r}") from None
    if grouping.kind in ("tag", "metadata"):
        name = grouping.key_columns[0]
        rows = profile_rows(session, start, end, grouping.kind, name, key_id, user_id)
        return _page(rows, after, limit)
    if grouping.kind == "user":
        return user_rows(session, start, end, key_id, after, limit, user_id)
    stmt = _by_column(session, start, end, grouping.kind, key_id, after, user_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return _rows(session, stmt, grouping)


def filter_ids(
    session: Session, key: str | None, user: str | None
) -> tuple[int | None, int | None]:
    """The ids of the API key named ``key`` and of the end user whose internal id is
    ``user`` (None for a filter not given); a BreakdownError for one that is unknown."""
    key_id = user_id = None
    if key is not None:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == key))
        if key_id is None:
            raise BreakdownError(f"no API key is named {key!r}", "key")
    if user is not None:
        user_id = session.scalar(select(EndUser.id).where(EndUser.external_id == user))
        if user_id is None:
            raise BreakdownError(f"no end user has the internal id {user!r}", "user")
    return key_id, user_id


def _rows(session: Session, stmt: Select, grouping: Grouping) -> Iterator[dict]:
    names = grouping.key_columns
    for row in session.connection().execute(stmt):
        values = list(row)
        keys = values[: len(names)]
        if grouping.kind == "day":
            keys[0] = _iso(keys[0])
        elif grouping.kind == "model":
            keys[0] = keys[0] or None
        yield dict(zip(names, keys, strict=True)) | figures(values[len(names) :])


def _iso(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


def _by_column(
    session: Session,
    start: date,
    end: date,
    kind: str,
    key_id: int | None,
    after: str | None,
    user_id: int | None = None,
) -> Select:
    """model, endpoint, day or key: from the per-model daily totals (one user's: from
    the daily totals, by their (user_id, day) index)."""
    table = DailyModelTotal if user_id is None else DailyTotal
    where = [table.day >= start, table.day <= end]
    if key_id is not None:
        where.append(table.api_key_id == key_id)
    if user_id is not None:
        where.append(table.user_id == user_id)
    if kind == "key":
        sums = select(table.api_key_id, *sums_of(table.__table__.c)).where(*where)
        inner = sums.group_by(table.api_key_id).having(has_requests(table)).subquery()
        name = ordered(session, func.coalesce(ApiKey.name, literal("")))
        stmt = (
            select(ApiKey.name, *[inner.c[n] for n in SUMS])
            .select_from(inner)
            .outerjoin(ApiKey, ApiKey.id == inner.c.api_key_id)
            .order_by(name)
        )
        return stmt.where(name > after) if after is not None else stmt
    column = getattr(table, kind)
    stmt = select(column, *sums_of(table.__table__.c)).where(*where).group_by(column)
    stmt = stmt.having(has_requests(table))
    if kind == "day":
        if after:  # no day is null: after "" is every day
            stmt = stmt.where(column > date.fromisoformat(after))
        return stmt.order_by(column)
    if after is not None:
        stmt = stmt.where(ordered(session, column) > after)
    return stmt.order_by(ordered(session, column))


def _page(rows: list[dict], after: str | None, limit: int | None) -> Iterator[dict]:
    name = next(iter(rows[0])) if rows else None
    if after is not None:
        rows = [r for r in rows if r[name] is not None and r[name].encode() > after.encode()]
    return iter(rows if limit is None else rows[:limit])
