"""Rebuilding counters from the request log, for counters the storage does not hold:
after the instance (or Redis) restarted, or when a limit was just set.

Without this a restart would silently hand everyone a fresh 24 h quota and month's
budget. The request log is the truth: every call that reached the upstream has a row
(written at most a few hundred ms after its answer ended, so calls in that gap are
missed). Only rows after the subject's last ``limits reset`` count, and never a refusal's
row (``refused``: a call Tally refused costs no quota).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from limits.storage import Storage
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from tally.limits.checks import NANO, Check
from tally.limits.policy import Policies
from tally.models import EndUser, RequestLog


def seed_counters(
    sessions: sessionmaker,
    storage: Storage,
    checks: list[Check],
    markers,
    policies: Policies,
    now: float,
) -> None:
    """Fill the counters whose markers this caller claimed from the request log."""
    wanted = set(markers)
    with sessions() as session:
        for check in checks:
            if check.marker not in wanted:
                continue
            since = max(check.start(now), policies.resets.get(check.subject, 0.0))
            where = _rows_of(session, check.subject)
            if where is None:
                continue
            where = [*where, RequestLog.created_at >= _naive(since), RequestLog.refused.is_(False)]
            if check.kind == "window":
                stamps = session.scalars(
                    select(RequestLog.created_at)
                    .where(*where)
                    .order_by(RequestLog.created_at.desc())
                    .limit(check.limit)
                ).all()
                _seed_window(storage, check, [_epoch(s) for s in stamps])
                continue
            if check.unit == "usd":
                total = session.scalar(
                    select(func.coalesce(func.sum(RequestLog.cost), 0.0)).where(*where)
                )
                amount = round(float(total) * NANO)
            else:
                tokens = func.coalesce(RequestLog.prompt_tokens, 0) + func.coalesce(
                    RequestLog.completion_tokens, 0
                )
                amount = int(
                    session.scalar(select(func.coalesce(func.sum(tokens), 0)).where(*where))
                )
            if amount:
                storage.incr(check.key, check.ttl(now), amount)


def _rows_of(session, subject: str) -> list | None:
    kind, _, name = subject.partition(":")
    if kind == "user":
        user_id = session.scalar(select(EndUser.id).where(EndUser.external_id == name))
        return None if user_id is None else [RequestLog.user_id == user_id]
    if kind == "anon":
        return [RequestLog.user_id.is_(None), RequestLog.api_key_id == int(name)]
    return [RequestLog.api_key_id == int(name)]


def _seed_window(storage: Storage, check: Check, stamps: list[float]) -> None:
    if not stamps:
        return
    seed = getattr(storage, "seed_entries", None)
    if seed is not None:
        seed(check.key, stamps, check.expiry)
    else:
        # Redis and friends take no timestamps: the hits count from now, so a user may
        # wait up to one window longer than exact after a restart (never less).
        storage.acquire_entry(check.key, check.limit, check.expiry, amount=len(stamps))


def _naive(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _epoch(moment: datetime) -> float:
    return calendar.timegm(moment.timetuple()) + moment.microsecond / 1e6
