"""Limit alerts (PRODUCT.md, "Usage events out"): when a user's or a key's use crosses 80 %
and 100 % of one of its limits in the current window, one ``tally.limit.threshold`` event
goes to the alert sinks, once per scope, limit, threshold and window (its event id is
made of those: the outbox's unique key drops a second one).

Checked off the request path: by the usage writer, after it commits a batch, for the
users and keys of that batch, reading the counters without counting (as the console's
limits page does). With no alert sink it costs one cached check per batch.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from tally.limits.admission import run_seeded
from tally.limits.checks import NANO, Check, build_checks
from tally.limits.gates import admission_plan
from tally.limits.policy import applicable
from tally.limits.policy_store import load_policies
from tally.limits.runtime import LimitsRuntime
from tally.models import ApiKey, EndUser
from tally.sinks.events import ALERT_EVENTS
from tally.sinks.outbox import enqueue_alert, sinks_for

log = logging.getLogger(__name__)
THRESHOLDS = (80, 100)


def window_end(check: Check, now: float) -> datetime:
    """The end of the window ``check`` counts in now: a calendar period's end, or for a
    rolling window the end of the fixed slice of its length that holds ``now`` (so a
    rolling limit alerts at most once per its length)."""
    rolling = check.kind == "window"
    end = (int(now // check.expiry) + 1) * check.expiry if rolling else check.reset
    return datetime.fromtimestamp(int(end), UTC).replace(tzinfo=None)


def _amount(check: Check, amount: float) -> float | int:
    return round(amount / NANO, 6) if check.unit == "usd" else int(amount)


def threshold_alerts(limits: LimitsRuntime, sessions: sessionmaker, calls) -> int:
    """Queue the alerts the users and keys of ``calls`` (a written batch: (call, outcome,
    ended) each) have crossed; returns how many events. Never raises (logged)."""
    try:
        engine = sessions.kw["bind"]
        if not sinks_for(engine, ALERT_EVENTS):
            return 0
        return _alerts(limits, sessions, calls)
    except Exception:
        log.exception("limit alerts could not be checked")
        return 0


def _alerts(limits: LimitsRuntime, sessions: sessionmaker, calls) -> int:
    who = {
        (call.claim.external_id if call.claim is not None else None, call.api_key_id)
        for call, outcome, _ended in calls
        if not outcome.refused
    }
    policies = load_policies(sessions, limits.cache)
    queued = 0
    with sessions() as session:
        for external_id, key_id in sorted(who, key=lambda w: (w[0] or "", w[1] or 0)):
            metadata = None
            if external_id is not None:
                metadata = session.scalar(
                    select(EndUser.profile_metadata).where(EndUser.external_id == external_id)
                )
            key_name = ""
            if key_id is not None:
                key_name = session.scalar(select(ApiKey.name).where(ApiKey.id == key_id)) or ""
            scope = applicable(policies, external_id, metadata, key_id or 0, key_name)
            now = limits.clock()
            checks = build_checks(scope, key_id or 0, now, policies.stamp)
            if not checks:
                continue
            plan = {**admission_plan(policies, checks, now), "hit": False}
            result = run_seeded(limits, plan, checks, policies)
            for check, (_reset, remaining) in zip(checks, result["stats"], strict=True):
                subject = check.subject
                if subject.startswith("anon:"):
                    continue
                if subject.startswith("key:"):
                    subject = f"key:{key_name}"
                used = max(0.0, check.limit - remaining)
                for threshold in THRESHOLDS:
                    if check.limit and used * 100 >= check.limit * threshold:
                        queued += _queue(session, check, subject, threshold, used, now)
        session.commit()
    return queued


def _queue(session, check: Check, subject: str, threshold: int, used: float, now: float) -> int:
    end = window_end(check, now)
    key = f"{subject}\n{check.field}\n{threshold}\n{end.isoformat()}"
    event_id = "limit-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    data = {
        "scope": subject,
        "limit": check.field,
        "threshold": threshold,
        "used": _amount(check, used),
        "limit_value": _amount(check, check.limit),
        "window_end": end.isoformat(timespec="seconds") + "Z",
    }
    return enqueue_alert(session.connection(), event_id, data)
