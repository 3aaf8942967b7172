"""Per end user: latency and time-to-first-token percentiles, and the share of prompt
tokens the provider served from its cache (whether sticky per-user routing pays off).

Percentiles read that user's newest request rows of the range off the request log's
(user_id, created_at, id) index, at most :data:`MAX_ROWS` of them, and interpolate as
PostgreSQL's ``percentile_cont`` does, in Python (the same on SQLite). The cache-hit
share reads the daily totals only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.models import DailyTotal, RequestLog

MAX_ROWS = 10_000  # newest successful rows read for a user's percentiles
QUANTILES = (0.50, 0.95, 0.99)


@dataclass(frozen=True)
class Percentiles:
    """p50, p95 and p99 in milliseconds (None: no row carries the figure)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    count: int = 0  # rows the figures come from


@dataclass(frozen=True)
class CacheShare:
    """Prompt tokens, the cached part of them, and the share (None without prompts)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def share(self) -> float | None:
        """cached_tokens / prompt_tokens."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


@dataclass(frozen=True)
class UserPerformance:
    """One end user's response times and prompt-cache use over ``start``..``end``."""

    start: date
    end: date
    latency: Percentiles
    ttft: Percentiles
    rows: int  # successful rows read
    capped: bool  # the range holds more than MAX_ROWS of them: the newest were read
    cache: CacheShare


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``sorted_values`` by linear interpolation between the two
    nearest ranks (PostgreSQL's ``percentile_cont``, numpy's default)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def percentiles(values: list[float]) -> Percentiles:
    """p50, p95, p99 of ``values`` (in any order)."""
    if not values:
        return Percentiles()
    ordered = sorted(values)
    p50, p95, p99 = (percentile(ordered, q) for q in QUANTILES)
    return Percentiles(p50, p95, p99, len(ordered))


def user_performance(
    session: Session, user_id: int, start: date, end: date, max_rows: int | None = None
) -> UserPerformance:
    """Latency and TTFT percentiles of the user's successful requests of the UTC days
    ``start``..``end`` (the newest ``max_rows`` when there are more), and the share of
    their prompt tokens served from the provider's cache."""
    max_rows = max_rows or MAX_ROWS
    begin = datetime.combine(start, time.min)
    stop = datetime.combine(end + timedelta(days=1), time.min)
    rows = session.execute(
        select(RequestLog.latency_ms, RequestLog.ttft_ms)
        .where(
            RequestLog.user_id == user_id,
            RequestLog.created_at >= begin,
            RequestLog.created_at < stop,
            RequestLog.status < 400,
        )
        .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
        .limit(max_rows + 1)
    ).all()
    ok = rows[:max_rows]
    return UserPerformance(
        start=start,
        end=end,
        latency=percentiles([r.latency_ms for r in ok if r.latency_ms is not None]),
        ttft=percentiles([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        rows=len(ok),
        capped=len(rows) > max_rows,
        cache=cache_shares(session, start, end, [user_id]).get(user_id, CacheShare()),
    )


def cache_shares(
    session: Session, start: date, end: date, user_ids: Sequence[int]
) -> dict[int, CacheShare]:
    """Prompt and cached tokens of each of ``user_ids`` over ``start``..``end``, from the
    daily totals (the (user_id, day) index: a few rows per user and day)."""
    if not user_ids:
        return {}
    t = DailyTotal
    stmt = (
        select(t.user_id, func.sum(t.prompt_tokens), func.sum(t.cached_tokens))
        .where(t.user_id.in_(sorted(set(user_ids))), t.day >= start, t.day <= end)
        .group_by(t.user_id)
    )
    return {
        user_id: CacheShare(int(prompt or 0), int(cached or 0))
        for user_id, prompt, cached in session.execute(stmt)
    }
