"""The usage report (the console's ``/usage``): usage over a range of days, per day, per
end user and per model, of one end user and of one API key when asked, read from the
daily totals through tally.reports.dashboard. Its chart is the dashboard's
(:func:`tally.reports.dashboard.bar_chart`); its exports are tally.reports.exports'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from tally.reports.dashboard import (
    DEFAULT_RANGE_DAYS,
    ReportError,
    Row,
    Totals,
    per_day,
    per_model,
    sum_rows,
    top_users,
)

MAX_RANGE_DAYS = 366
REPORT_USERS = 25


@dataclass(frozen=True)
class UsageReport:
    """Usage over ``start``..``end`` (inclusive days): per day, per user and per model."""

    start: date
    end: date
    totals: Totals
    days: list[Row]
    users: list[Row]
    models: list[Row]


def parse_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """The inclusive day range asked for as ``YYYY-MM-DD`` strings; the last 30 days when
    not given. Raises ReportError for a bad date, a reversed or an overlong range."""
    try:
        end_day = date.fromisoformat(end) if end else today
    except ValueError:
        raise ReportError("end must be a date written YYYY-MM-DD") from None
    try:
        start_day = (
            date.fromisoformat(start) if start else end_day - timedelta(DEFAULT_RANGE_DAYS - 1)
        )
    except ValueError:
        raise ReportError("start must be a date written YYYY-MM-DD") from None
    if start_day > end_day:
        raise ReportError("start must be on or before end")
    if (end_day - start_day).days >= MAX_RANGE_DAYS:
        raise ReportError(f"a report covers at most {MAX_RANGE_DAYS} days")
    return start_day, end_day


def usage_report(
    session: Session,
    start: date,
    end: date,
    user_limit: int | None = REPORT_USERS,
    *,
    user_id: int | None = None,
    key_id: int | None = None,
) -> UsageReport:
    """Usage per day (every day of the range, zeros included), per user (the top
    ``user_limit``, or all when None) and per model; every figure of one end user's
    and of one API key's traffic when ``user_id`` / ``key_id`` are given."""
    days = per_day(session, start, end, user_id, key_id)
    return UsageReport(
        start=start,
        end=end,
        totals=sum_rows(days),
        days=days,
        users=top_users(session, start, end, user_limit, user_id=user_id, key_id=key_id),
        models=per_model(session, start, end, user_id, key_id),
    )
