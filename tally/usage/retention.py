"""Retention: old request rows go, the daily totals that counted them stay.

``flask --app app usage prune --older-than DAYS`` is meant for cron. The totals
(tally.usage.totals) were kept exact as the rows were recorded, so the console's
pages and the figures they show are unchanged by a prune; only the request log (the
per-request detail: support traces, a user's recent requests) loses its old rows, and
the sinks' outbox its events delivered before the same cutoff (kept until then so an
alert is never sent twice in its window).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.models import RequestLog, SinkEvent

BATCH = 10_000  # rows per transaction: a big prune never holds the write lock for long
# The limits rebuild a month's token and budget counters from the log after a restart
# (tally/limits/rebuild.py): keep at least this many days for them to stay exact.
MONTH_DAYS = 32


@dataclass(frozen=True)
class Pruned:
    """What a prune deleted."""

    rows: int
    cutoff: datetime  # rows created before this (UTC) were deleted
    events: int = 0  # sink events delivered before the cutoff, deleted too


def prune_requests(session: Session, older_than_days: int, now: datetime, actor: str) -> Pruned:
    """Delete request rows created more than ``older_than_days`` days before ``now``, a
    batch per transaction; audited once, with the count."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    cutoff = now - timedelta(days=older_than_days)
    deleted = 0
    while True:
        ids = session.scalars(
            select(RequestLog.id).where(RequestLog.created_at < cutoff).limit(BATCH)
        ).all()
        if not ids:
            break
        session.execute(delete(RequestLog).where(RequestLog.id.in_(ids)))
        session.commit()
        deleted += len(ids)
    events = 0
    while True:  # delivered sink events: by their delivered_at index
        ids = session.scalars(
            select(SinkEvent.id).where(SinkEvent.delivered_at < cutoff).limit(BATCH)
        ).all()
        if not ids:
            break
        session.execute(delete(SinkEvent).where(SinkEvent.id.in_(ids)))
        session.commit()
        events += len(ids)
    add_audit(
        session,
        actor,
        "usage.prune",
        target=f"request rows before {cutoff.isoformat(timespec='seconds')}",
        after={"deleted": deleted, "older_than_days": older_than_days, "sink_events": events},
    )
    session.commit()
    return Pruned(deleted, cutoff, events)


def oldest_request(session: Session) -> datetime | None:
    """When the oldest request row left was created."""
    return session.scalar(select(func.min(RequestLog.created_at)))
