"""The admin API's usage export: the query (``from``, ``to``, ``group_by``, ``limit``,
``after``) checked, and one page of grouped rows (tally.reports.breakdowns) with the
cursor of the next page. Errors are the API's (OpenAI's shape, 400)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from tally.errors import InvalidInput
from tally.reports.breakdowns import BreakdownError, grouped_rows, parse_group_by, row_cursor

DEFAULT_DAYS = 30  # from/to left out: the last 30 UTC days, today included
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000


@dataclass(frozen=True)
class UsageQuery:
    """What one call of ``GET /admin/api/usage`` asks for."""

    start: date
    end: date
    group_by: str
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # "" is a cursor too: after the rows whose key is null
    key: str | None = None  # only this API key's traffic (a tenant's chargeback)

    def params(self, after: str) -> dict[str, str]:
        """The query string of the page that follows the row whose key is ``after``."""
        params = {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "group_by": self.group_by,
            "limit": str(self.limit),
            "after": after,
        }
        return {**params, "key": self.key} if self.key else params


@dataclass(frozen=True)
class UsagePage:
    """Rows of one page; ``next_after`` is the cursor of the next one (None: the last)."""

    rows: list[dict]
    next_after: str | None


def parse_usage_query(args: Mapping[str, str], today: date) -> UsageQuery:
    """The query of ``args`` (the URL's parameters), or InvalidInput naming the one
    at fault."""
    end = _day(args, "to") or today
    start = _day(args, "from") or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput("'from' must be on or before 'to'.", field="from")
    group_by = args.get("group_by", "")
    try:
        parse_group_by(group_by)
    except BreakdownError as exc:
        raise InvalidInput(str(exc), field="group_by") from None
    limit = _limit(args.get("limit"))
    return UsageQuery(start, end, group_by, limit, args.get("after"), args.get("key") or None)


def usage_page(session: Session, query: UsageQuery) -> UsagePage:
    """The rows of ``query``'s page: at most ``limit``, after its cursor. One row more is
    read to know whether another page follows; a page's cursor is its last row's
    (tally.reports.breakdowns.row_cursor)."""
    try:
        rows = list(
            grouped_rows(
                session,
                query.start,
                query.end,
                query.group_by,
                after=query.after,
                limit=query.limit + 1,
                key=query.key,
            )
        )
    except (InvalidInput, ValueError) as exc:  # a cursor or a grouping it cannot take
        raise InvalidInput(str(exc)) from None
    if len(rows) <= query.limit:
        return UsagePage(rows, None)
    rows = rows[: query.limit]
    return UsagePage(rows, row_cursor(query.group_by, rows[-1]))


def _day(args: Mapping[str, str], name: str) -> date | None:
    value = args.get(name)
    if not value:
        return None
    try:
        return date.fromisoformat(value) if len(value) == 10 else _bad_day(name)
    except ValueError:
        return _bad_day(name)


def _bad_day(name: str):
    raise InvalidInput(f"'{name}' must be a date written YYYY-MM-DD.", field=name)


def _limit(value: str | None) -> int:
    if not value:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidInput(f"'limit' must be a whole number from 1 to {MAX_LIMIT}.", field="limit")
    return int(value)
