"""Usage aggregates for the console: the dashboard, the usage report, its chart and CSV.

All times are naive UTC (as stored); a day is a UTC calendar day.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tally.errors import DomainError
from tally.models import EndUser, RequestLog

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
TOP_USERS = 10
REPORT_USERS = 25
METRICS = ("requests", "tokens", "cost")


class ReportError(DomainError):
    """A report asked for with values that make no sense (bad date, reversed range)."""


@dataclass(frozen=True)
class Totals:
    """Requests, tokens, cost and errors over some rows."""

    requests: int = 0
    tokens: int = 0
    cost: float = 0.0
    errors: int = 0


@dataclass(frozen=True)
class Row:
    """Totals for one group: a day, an end user or a model."""

    key: str
    totals: Totals
    label: str | None = None  # the display name, for users
    user_id: int | None = None


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    label: str
    value: float


@dataclass(frozen=True)
class Chart:
    """A bar chart laid out for an inline SVG of ``width`` × ``height``."""

    width: int
    height: int
    bars: list[Bar]
    max_value: float
    metric: str
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (x, label) on the axis


@dataclass(frozen=True)
class Dashboard:
    """What the console's front page shows."""

    today: Totals
    month: Totals
    top_users: list[Row]
    chart: Chart


@dataclass(frozen=True)
class UsageReport:
    """Usage over ``start``..``end`` (inclusive days): per day, per user and per model."""

    start: date
    end: date
    totals: Totals
    days: list[Row]
    users: list[Row]
    models: list[Row]


def _aggregates():
    return (
        func.count(RequestLog.id),
        func.coalesce(func.sum(RequestLog.total_tokens), 0),
        func.coalesce(func.sum(RequestLog.cost), 0.0),
        func.coalesce(func.sum(case((RequestLog.status >= 400, 1), else_=0)), 0),
    )


def _totals(values) -> Totals:
    requests, tokens, cost, errors = values
    return Totals(int(requests or 0), int(tokens or 0), float(cost or 0.0), int(errors or 0))


def totals_between(session: Session, start: datetime, end: datetime, *where) -> Totals:
    """Totals of the requests made in [start, end) (and matching ``where``)."""
    row = session.execute(
        select(*_aggregates()).where(
            RequestLog.created_at >= start, RequestLog.created_at < end, *where
        )
    ).one()
    return _totals(row)


def dashboard(session: Session, now: datetime) -> Dashboard:
    """Today's and the last 30 days' totals, the top users of those 30 days, a daily chart."""
    today = now.date()
    start = today - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    since, until = _bounds(start, today)
    days = per_day(session, start, today)
    return Dashboard(
        today=totals_between(session, *_bounds(today, today)),
        month=totals_between(session, since, until),
        top_users=per_user(session, since, until, TOP_USERS),
        chart=bar_chart(days, "requests"),
    )


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
    session: Session, start: date, end: date, user_limit: int | None = REPORT_USERS
) -> UsageReport:
    """Usage per day (every day of the range, zeros included), per user (the top
    ``user_limit``, or all when None) and per model."""
    since, until = _bounds(start, end)
    return UsageReport(
        start=start,
        end=end,
        totals=totals_between(session, since, until),
        days=per_day(session, start, end),
        users=per_user(session, since, until, user_limit),
        models=per_model(session, since, until),
    )


def per_day(session: Session, start: date, end: date) -> list[Row]:
    """One row per UTC day from ``start`` to ``end``, days without traffic included."""
    since, until = _bounds(start, end)
    day = func.date(RequestLog.created_at)
    found = {
        str(row[0])[:10]: _totals(row[1:])
        for row in session.execute(
            select(day, *_aggregates())
            .where(RequestLog.created_at >= since, RequestLog.created_at < until)
            .group_by(day)
        )
    }
    count = (end - start).days + 1
    keys = [(start + timedelta(days=n)).isoformat() for n in range(count)]
    return [Row(key, found.get(key, Totals())) for key in keys]


def per_user(session: Session, since: datetime, until: datetime, limit: int | None) -> list[Row]:
    """End users by cost, then requests, highest first (anonymous traffic as one row)."""
    stmt = (
        select(RequestLog.user_id, EndUser.external_id, EndUser.display_name, *_aggregates())
        .outerjoin(EndUser, EndUser.id == RequestLog.user_id)
        .where(RequestLog.created_at >= since, RequestLog.created_at < until)
        .group_by(RequestLog.user_id, EndUser.external_id, EndUser.display_name)
        .order_by(func.coalesce(func.sum(RequestLog.cost), 0.0).desc(), func.count().desc())
    )
    if limit:
        stmt = stmt.limit(limit)
    return [
        Row(
            row.external_id if row.user_id is not None else "(anonymous)",
            _totals(row[3:]),
            label=row.display_name,
            user_id=row.user_id,
        )
        for row in session.execute(stmt)
    ]


def per_model(session: Session, since: datetime, until: datetime, *where) -> list[Row]:
    """Models by cost, highest first (of the requests matching ``where``)."""
    stmt = (
        select(RequestLog.model, *_aggregates())
        .where(RequestLog.created_at >= since, RequestLog.created_at < until, *where)
        .group_by(RequestLog.model)
        .order_by(func.coalesce(func.sum(RequestLog.cost), 0.0).desc(), func.count().desc())
    )
    return [Row(row.model or "(unknown)", _totals(row[1:])) for row in session.execute(stmt)]


def bar_chart(rows: list[Row], metric: str, width: int = 720, height: int = 160) -> Chart:
    """Lay out one bar per row for ``metric`` (requests, tokens or cost)."""
    if metric not in METRICS:
        raise ReportError(f"metric must be one of {', '.join(METRICS)}")
    values = [float(getattr(row.totals, metric)) for row in rows]
    top = max(values, default=0.0) or 1.0
    slot = width / max(len(rows), 1)
    gap = min(slot * 0.2, 4)
    bars = []
    for n, (row, value) in enumerate(zip(rows, values, strict=True)):
        bar_height = round(value / top * (height - 4), 2)
        bars.append(
            Bar(
                x=round(n * slot + gap / 2, 2),
                y=round(height - bar_height, 2),
                width=round(max(slot - gap, 1), 2),
                height=bar_height,
                label=row.key,
                value=value,
            )
        )
    step = max(1, len(rows) // 6)
    ticks = [(round(n * slot + slot / 2, 2), rows[n].key[5:]) for n in range(0, len(rows), step)]
    return Chart(width, height, bars, max(values, default=0.0), metric, ticks)


def usage_csv(report: UsageReport, by: str) -> str:
    """The report's rows ``by`` day, user or model as CSV text."""
    groups = {"day": report.days, "user": report.users, "model": report.models}
    if by not in groups:
        raise ReportError("by must be one of day, user, model")
    out = io.StringIO()
    writer = csv.writer(out)
    header = [by] + (["display_name"] if by == "user" else [])
    writer.writerow(header + ["requests", "tokens", "cost_usd", "errors"])
    for row in groups[by]:
        cells = [row.key] + ([row.label or ""] if by == "user" else [])
        totals = row.totals
        writer.writerow(
            [_csv_safe(c) for c in cells]
            + [totals.requests, totals.tokens, f"{totals.cost:.6f}", totals.errors]
        )
    return out.getvalue()


def _csv_safe(text: str) -> str:
    """Text from API clients can start with a formula character: make spreadsheets show
    it as text instead of running it."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time.min), datetime.combine(end + timedelta(days=1), time.min)
