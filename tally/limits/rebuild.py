"""Rebuilding counters from the request log, for counters the storage does not hold:
after the instance (or Redis) restarted, or when the policies changed (a limit set
again counts its whole window, what was sent while it was off included). A rebuild
replaces what the counter held.

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
from tally.limits.demand import peak_entries
from tally.limits.engine import settle
from tally.limits.policy import Policies
from tally.models import EndUser, RequestLog


def seed_counters(
    sessions: sessionmaker,
    storage: Storage,
    checks: list[Check],
    markers,
    policies: Policies,
    now: float,
    seed_window=None,
) -> None:
    """Fill the counters whose markers this caller claimed from the request log.
    ``seed_window(key, stamps, expiry)``: what puts a window's hits back at their times
    on a storage that cannot itself (the Redis script's)."""
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
            storage.clear(check.key)
            if check.kind == "window":
                stamps = session.scalars(
                    select(RequestLog.created_at)
                    .where(*where)
                    .order_by(RequestLog.created_at.desc())
                    .limit(check.limit)
                ).all()
                _seed_window(storage, check, [_epoch(s) for s in stamps], seed_window)
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


def seed_peaks(sessions: sessionmaker, storage: Storage, model: str, now: float) -> None:
    """Raise ``model``'s peaks (tally.limits.demand) to the largest completion and cost
    of one of its calls in the log today and yesterday."""
    day = int(now // 86400) * 86400
    with sessions() as session:
        for start in (day - 86400, day):
            largest = session.execute(
                select(func.max(RequestLog.completion_tokens), func.max(RequestLog.cost)).where(
                    RequestLog.model == model,
                    RequestLog.created_at >= _naive(start),
                    RequestLog.created_at < _naive(start + 86400),
                )
            ).one()
            completion, cost = int(largest[0] or 0), round(float(largest[1] or 0.0) * NANO)
            if completion or cost:
                at = start + 43200  # the peaks of that day
                entries = peak_entries(model, completion, cost, at)
                expiry = entries[0][1] - int(now - at)
                settle(storage, {"peaks": [[k, max(expiry, 1), v] for k, _e, v in entries]})


def _rows_of(session, subject: str) -> list | None:
    kind, _, name = subject.partition(":")
    if kind == "user":
        user_id = session.scalar(select(EndUser.id).where(EndUser.external_id == name))
        return None if user_id is None else [RequestLog.user_id == user_id]
    if kind == "anon":
        return [RequestLog.user_id.is_(None), RequestLog.api_key_id == int(name)]
    return [RequestLog.api_key_id == int(name)]


def _seed_window(storage: Storage, check: Check, stamps: list[float], seed_window) -> None:
    if not stamps:
        return
    seed = getattr(storage, "seed_entries", None)
    if seed is not None:
        seed(check.key, stamps, check.expiry)
    elif seed_window is not None:  # Redis, through the script that knows limits' layout
        seed_window(check.key, stamps, check.expiry)
    else:
        # A storage that takes no timestamps (a Redis Cluster, a limits release the
        # script was not checked against): the hits count from now, so a user may wait
        # up to one window longer than exact after a rebuild (never less).
        storage.acquire_entry(check.key, check.limit, check.expiry, amount=len(stamps))


def _naive(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _epoch(moment: datetime) -> float:
    return calendar.timegm(moment.timetuple()) + moment.microsecond / 1e6
