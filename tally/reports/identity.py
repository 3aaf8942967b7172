"""One end user's page: their identifiers, usage by model over a range of days (the last
30 by default) and recent requests (a view by an operator is audited)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tally.audit import add_audit
from tally.end_users.directory import shared_counts
from tally.models import EndUser, RequestLog, UpstreamIdentifier
from tally.reports.dashboard import (
    DEFAULT_RANGE_DAYS,
    Row,
    Totals,
    per_model,
    totals_between,
)

RECENT_REQUESTS = 25


@dataclass(frozen=True)
class IdentityDetail:
    """Everything the console shows about one end user."""

    user: EndUser
    identifiers: list[UpstreamIdentifier]
    shared: dict[str, int]  # identifier -> users it was sent for, those with several
    month: Totals  # over start..end (the last 30 days by default)
    models: list[Row]
    recent: list[RequestLog]
    start: date
    end: date


def identity_detail(
    session: Session,
    user_id: int,
    now: datetime,
    actor: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> IdentityDetail | None:
    """The end user ``user_id`` with their identifiers, usage over the UTC days
    ``start``..``end`` (the last 30 by default) and recent requests, or None. A view by
    ``actor`` is recorded in the audit log."""
    user = session.get(EndUser, user_id)
    if user is None:
        return None
    identifiers = list(
        session.scalars(
            select(UpstreamIdentifier)
            .options(selectinload(UpstreamIdentifier.revision))
            .where(UpstreamIdentifier.user_id == user_id)
            .order_by(UpstreamIdentifier.last_seen.desc())
        )
    )
    # the range (the last 30 UTC days), from the daily totals; the recent requests off
    # the log's (user_id, created_at, id) index, newest first
    end = end or now.date()
    start = start or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    recent = list(
        session.scalars(
            select(RequestLog)
            .options(selectinload(RequestLog.identifier))
            .where(RequestLog.user_id == user_id)
            .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
            .limit(RECENT_REQUESTS)
        )
    )
    detail = IdentityDetail(
        user=user,
        identifiers=identifiers,
        shared=shared_counts(session, [item.identifier for item in identifiers]),
        month=totals_between(session, start, end, user_id),
        models=per_model(session, start, end, user_id),
        recent=recent,
        start=start,
        end=end,
    )
    if actor:
        add_audit(
            session,
            actor,
            "identity.lookup",
            target=user.external_id,
            after={"viewed": user.external_id},
        )
        session.commit()
    return detail
