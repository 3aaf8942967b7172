"""STAND-IN for the breakdowns service another helper writes (issue 10): only the
signature the admin API calls, reading ``daily_totals`` grouped by user, model, day,
endpoint or key. Dropped at merge in favour of the real module."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from tally.errors import DomainError
from tally.models import ApiKey, DailyTotal, EndUser


def grouped_rows(
    session: Session,
    start: date,
    end: date,
    group_by: str,
    *,
    after: Any = None,
    limit: int | None = None,
) -> Iterator[dict]:
    """One dict per group of ``start``..``end``: the group's key columns, then the sums;
    ordered by the group key, those after ``after`` only, at most ``limit``."""
    t = DailyTotal
    columns = {
        "user": [EndUser.external_id.label("internal_id"), EndUser.display_name],
        "model": [t.model.label("model")],
        "endpoint": [t.endpoint.label("endpoint")],
        "day": [t.day.label("day")],
        "key": [func.coalesce(ApiKey.name, literal("")).label("key")],
    }.get(group_by)
    if columns is None:
        raise DomainError(f"the stand-in cannot group by {group_by!r}")
    stmt = (
        select(
            *columns,
            func.sum(t.requests).label("requests"),
            func.sum(t.prompt_tokens).label("prompt_tokens"),
            func.sum(t.completion_tokens).label("completion_tokens"),
            func.sum(t.cached_tokens).label("cached_tokens"),
            func.sum(t.cost).label("cost_usd"),
        )
        .outerjoin(EndUser, EndUser.id == t.user_id)
        .outerjoin(ApiKey, ApiKey.id == t.api_key_id)
        .where(t.day >= start, t.day <= end)
        .group_by(*columns)
        .order_by(columns[0])
    )
    if after is not None:
        cursor = date.fromisoformat(after) if group_by == "day" else after
        stmt = stmt.where(columns[0] > cursor)
    if limit is not None:
        stmt = stmt.limit(limit)
    for row in session.execute(stmt).mappings():
        out = dict(row)
        if group_by == "day":
            out["day"] = out["day"].isoformat()
        out["cost_usd"] = float(out["cost_usd"])
        yield out
