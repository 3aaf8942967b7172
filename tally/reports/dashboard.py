"""The dashboard's totals: figures read from the daily totals (tally.usage.totals) per day,
per model and per end user, which the usage report (tally.reports.usage_report) and an
end user's page (tally.reports.identity) read too; the bar chart the dashboard and the
usage report draw; and the dashboard itself.

Every figure is read from the daily totals, never from the request log: a page costs the
same with a million rows as with ten. A day is a UTC calendar day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.errors import InvalidInput
from tally.models import DailyModelTotal, DailyTotal, EndUser
from tally.reports import ranking

DEFAULT_RANGE_DAYS = 30
TOP_USERS = 10
METRICS = ("requests", "tokens", "cost")


class ReportError(InvalidInput):
    """A report asked for with values that make no sense (bad date, reversed range)."""


@dataclass(frozen=True)
class Totals:
    """Requests, tokens, cost and errors over some rows, and the calls Tally refused
    (none of which is a request: tally.proxy.refusals)."""

    requests: int = 0
    tokens: int = 0
    cost: float = 0.0
    errors: int = 0
    refused: int = 0


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


def _aggregates(table):
    """requests, tokens, cost, errors, refused of the totals rows selected from ``table``."""
    return (
        func.coalesce(func.sum(table.requests), 0),
        func.coalesce(func.sum(table.total_tokens), 0),
        func.coalesce(func.sum(table.cost), 0.0),
        func.coalesce(func.sum(table.errors), 0),
        func.coalesce(func.sum(table.refused), 0),
    )


def _totals(values) -> Totals:
    requests, tokens, cost, errors, refused = values
    return Totals(
        int(requests or 0),
        int(tokens or 0),
        float(cost or 0.0),
        int(errors or 0),
        int(refused or 0),
    )


def _source(user_id: int | None, key_id: int | None = None):
    """The totals table to read and its filter: per user (and key), or all users folded
    (of one API key when ``key_id``)."""
    if user_id is None:
        if key_id is None:
            return DailyModelTotal, ()
        return DailyModelTotal, (DailyModelTotal.api_key_id == key_id,)
    where = (DailyTotal.user_id == user_id,)
    if key_id is not None:
        where += (DailyTotal.api_key_id == key_id,)
    return DailyTotal, where


def totals_between(
    session: Session,
    start: date,
    end: date,
    user_id: int | None = None,
    key_id: int | None = None,
) -> Totals:
    """Totals of the days ``start``..``end`` (inclusive), of one end user and one API key
    when given."""
    table, where = _source(user_id, key_id)
    row = session.execute(
        select(*_aggregates(table)).where(table.day >= start, table.day <= end, *where)
    ).one()
    return _totals(row)


def dashboard(session: Session, now: datetime) -> Dashboard:
    """Today's and the last 30 days' totals, the top users of those 30 days, a daily chart."""
    today = now.date()
    start = today - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    days = per_day(session, start, today)
    return Dashboard(
        today=days[-1].totals,
        month=sum_rows(days),
        top_users=top_users(session, start, today, TOP_USERS),
        chart=bar_chart(days, "requests"),
    )


def per_day(
    session: Session,
    start: date,
    end: date,
    user_id: int | None = None,
    key_id: int | None = None,
) -> list[Row]:
    """One row per UTC day from ``start`` to ``end``, days without traffic included (of
    one end user and one API key when given)."""
    table, where = _source(user_id, key_id)
    found = {
        _day_key(row[0]): _totals(row[1:])
        for row in session.execute(
            select(table.day, *_aggregates(table))
            .where(table.day >= start, table.day <= end, *where)
            .group_by(table.day)
        )
    }
    count = (end - start).days + 1
    keys = [(start + timedelta(days=n)).isoformat() for n in range(count)]
    return [Row(key, found.get(key, Totals())) for key in keys]


def per_model(
    session: Session,
    start: date,
    end: date,
    user_id: int | None = None,
    key_id: int | None = None,
) -> list[Row]:
    """Models by cost, highest first, over the days ``start``..``end`` (of one user, of
    one API key)."""
    table, where = _source(user_id, key_id)
    aggregates = _aggregates(table)
    stmt = (
        select(table.model, *aggregates)
        .where(table.day >= start, table.day <= end, *where)
        .group_by(table.model)
        .order_by(aggregates[2].desc(), aggregates[0].desc(), table.model)
    )
    return [Row(row.model or "(unknown)", _totals(row[1:])) for row in session.execute(stmt)]


def sum_rows(rows: list[Row]) -> Totals:
    """The totals of ``rows`` added up."""
    return Totals(
        requests=sum(r.totals.requests for r in rows),
        tokens=sum(r.totals.tokens for r in rows),
        cost=sum(r.totals.cost for r in rows),
        errors=sum(r.totals.errors for r in rows),
        refused=sum(r.totals.refused for r in rows),
    )


def _day_key(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


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


def top_users(
    session: Session,
    start: date,
    end: date,
    limit: int | None,
    *,
    user_id: int | None = None,
    key_id: int | None = None,
) -> list[Row]:
    """End users of ``start``..``end`` by cost, then requests, highest first (anonymous
    traffic as one row): the top ``limit``, or all of them when None; their traffic
    through the API key ``key_id`` alone when given; the user ``user_id`` alone when
    given."""
    ranked = ranking.top_users(session, start, end, limit, key_id=key_id, only=user_id)
    ids = [user_id for user_id, _sums in ranked if user_id]
    people = {}
    if ids:
        people = {
            row.id: row
            for row in session.execute(
                select(EndUser.id, EndUser.external_id, EndUser.display_name).where(
                    EndUser.id.in_(ids)
                )
            )
        }
    rows = []
    for user_id, sums in ranked:
        person = people.get(user_id)
        key = person.external_id if person else "(anonymous)"
        label = person.display_name if person else None
        rows.append(Row(key, _totals(sums), label=label, user_id=person.id if person else None))
    return rows
