"""The top end users of a day range by cost, found without adding up every user's days.

Adding up ``daily_totals`` per user over a month reads a row per user and day: with
100,000 users, hundreds of thousands of rows for one dashboard. Instead, the threshold
algorithm (Fagin et al.): ``monthly_user_totals`` holds each user's cost per calendar
month, indexed by cost; read the top ``depth`` users of every month the range touches,
add up those candidates' exact range totals from ``daily_totals``, and stop once the
last of the top ``limit`` costs more than any user not read could: the sum, over the
months, of the last cost read (a user's range cost is at most their months' costs).
Real traffic is skewed, so a few dozen rows per month settle it; when costs are flat
(all zero, say) the depth grows until the months are read through, or the candidates
are many and every user of the range is added up instead.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Integer, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from tally.models import DailyTotal, MonthlyUserTotal

# (user_id, (requests, tokens, cost, errors, refused)); user_id 0: anonymous traffic
Ranked = list[tuple[int, tuple[int, int, float, int, int]]]
FIRST_DEPTH = 4  # rows per month first read, times the limit
MAX_CANDIDATES = 5000  # beyond this, adding up every user of the range is cheaper
COST_DIGITS = 12  # a month's cost less some days': rounded past its float noise


# what a ranking orders by: the index of the figure in a row's sums
BY = {"cost": 2, "requests": 0}


def top_users(
    session: Session,
    start: date,
    end: date,
    limit: int | None,
    by: str = "cost",
    key_id: int | None = None,
    first_depth: float = FIRST_DEPTH,
    only: int | None = None,
) -> Ranked:
    """The users of ``start``..``end`` by cost, then requests (``by="requests"``: by
    requests, then cost), highest first: the top ``limit`` (every user when None). With
    ``key_id``, their traffic through that API key alone (a user's monthly totals still
    bound it from above: the same algorithm holds). ``first_depth``: rows per month first
    read, times ``limit`` (a long list, such as a later page of the users table, is
    settled by fewer than 4 times its length; each row read costs its user's days).
    ``only``: that user alone (their row, if they have traffic)."""
    if only is not None:
        return _rank(_range_totals(session, start, end, {only}, key_id), limit, by)
    if limit is None:
        return _rank(_range_totals(session, start, end, None, key_id), None, by)
    months = _months(start, end)
    column = getattr(MonthlyUserTotal, by)
    depth = max(1, int(limit * first_depth))
    while True:
        candidates: set[int] = set()
        bound, exhausted = 0.0, True
        for month in months:
            figures = session.execute(
                select(MonthlyUserTotal.user_id, column)
                .where(MonthlyUserTotal.month == month)
                .order_by(column.desc())
                .limit(depth)
            ).all()
            candidates.update(user_id for user_id, _figure in figures)
            if len(figures) == depth:  # users not read may still reach the last one
                exhausted = False
                bound += figures[-1][1]
        if not exhausted and len(candidates) > MAX_CANDIDATES:
            return _rank(_range_totals(session, start, end, None, key_id), limit, by)
        ranked = _rank(_range_totals(session, start, end, candidates, key_id), limit, by)
        if exhausted or (len(ranked) == limit and ranked[-1][1][BY[by]] > bound):
            return ranked
        depth *= 4


def _range_totals(
    session: Session, start: date, end: date, user_ids: set[int] | None, key_id: int | None
) -> Ranked:
    """Each user's sums over ``start``..``end`` (of ``user_ids``; through ``key_id``)."""
    if user_ids is not None and not user_ids:
        return []
    if user_ids is not None and key_id is None:
        return _by_months(session, start, end, sorted(user_ids))
    return _day_sums(session, [DailyTotal.day >= start, DailyTotal.day <= end], user_ids, key_id)


def _day_sums(session: Session, where: list, user_ids, key_id: int | None) -> Ranked:
    table = DailyTotal
    stmt = (
        select(
            table.user_id,
            func.sum(table.requests),
            func.sum(table.total_tokens),
            func.sum(table.cost),
            func.sum(table.errors),
            func.sum(table.refused),
        )
        .where(*where)
        .group_by(table.user_id)
    )
    if key_id is not None:
        stmt = stmt.where(table.api_key_id == key_id)
    if user_ids is not None:
        stmt = stmt.where(among(session, table.user_id, sorted(user_ids)))
    return [
        (user_id, (int(req or 0), int(tok or 0), float(cost or 0.0), int(err or 0), int(ref or 0)))
        for user_id, req, tok, cost, err, ref in session.execute(stmt)
    ]


def _by_months(session: Session, start: date, end: date, user_ids: list[int]) -> Ranked:
    """The candidates' range sums as their months' totals less the days of those months
    outside the range: a month's row per user, and the days before ``start`` in its
    month (after ``end``, usually none: ``end`` is today), where adding up the range's
    own days read a row per user, day, key, model and endpoint of the whole range."""
    m = MonthlyUserTotal
    months = _months(start, end)
    sums = {
        user_id: [int(req), int(tok), float(cost), int(err), int(ref)]
        for user_id, req, tok, cost, err, ref in session.execute(
            select(
                m.user_id,
                func.sum(m.requests),
                func.sum(m.total_tokens),
                func.sum(m.cost),
                func.sum(m.errors),
                func.sum(m.refused),
            )
            .where(m.month.in_(months), among(session, m.user_id, user_ids))
            .group_by(m.user_id)
        )
    }
    outside = [
        [DailyTotal.day >= months[0], DailyTotal.day < start],
        [DailyTotal.day > end, DailyTotal.day < _next_month(months[-1])],
    ]
    for where in outside:
        for user_id, figures in _day_sums(session, where, user_ids, None):
            held = sums.get(user_id)
            if held is not None:
                for n, figure in enumerate(figures):
                    held[n] -= figure
    ranked = []
    for user_id, (req, tok, cost, err, ref) in sums.items():
        if req or ref:  # some of their calls fall in the range
            ranked.append((user_id, (req, tok, round(cost, COST_DIGITS), err, ref)))
    return ranked


def among(session: Session, column, ids) -> object:
    """``column IN ids``; on PostgreSQL ``column = ANY(:ids)``, one array parameter: an
    IN of a few thousand parameters took longer to plan (50 ms) than to run."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(Integer)))
    return column.in_(list(ids))


def _rank(rows: Ranked, limit: int | None, by: str = "cost") -> Ranked:
    if by == "requests":
        rows.sort(key=lambda row: (-row[1][0], -row[1][2], row[0]))
    else:
        rows.sort(key=lambda row: (-row[1][2], -row[1][0], row[0]))
    return rows if limit is None else rows[:limit]


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _months(start: date, end: date) -> list[date]:
    """The first day of every calendar month that ``start``..``end`` touches."""
    months, month = [], start.replace(day=1)
    while month <= end:
        months.append(month)
        month = _next_month(month)
    return months
