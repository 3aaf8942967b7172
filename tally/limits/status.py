"""What the console shows about limits: one user's quota left and spend against budget,
and who is limited now or near a limit (top users by the fraction of a limit used).

Reads the counters without counting (a plan that does not hit) and the request log
for the candidates: the users with the most requests in the last 24 hours and the
most cost today.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.limits.admission import run_seeded
from tally.limits.checks import Check, build_checks
from tally.limits.gates import admission_plan
from tally.limits.policy import applicable
from tally.limits.policy_store import load_policies
from tally.limits.runtime import LimitsRuntime
from tally.models import EndUser, RequestLog

CANDIDATES = 50  # users looked at for the "limited and near" list, per criterion
NEAR = 0.8  # a user past this fraction of a limit is "near"


@dataclass(frozen=True)
class LimitUse:
    """One limit of one user: how much of it is used, in the limit's unit (dollars for
    budgets, a whole number of requests or tokens for the rest)."""

    field: str
    scope: str
    limit: float | int
    used: float | int
    remaining: float | int
    fraction: float
    reset: datetime


@dataclass(frozen=True)
class UserLimits:
    """A user's tier and every limit that applies to them, by field order."""

    external_id: str
    user_id: int | None
    tier: str
    uses: list[LimitUse]
    available: bool = True  # False when the limit storage could not be read

    @property
    def fraction(self) -> float:
        """The largest fraction of any limit used."""
        return max((u.fraction for u in self.uses), default=0.0)

    @property
    def limited(self) -> bool:
        """True when some limit is used up."""
        return self.fraction >= 1.0


def user_limits(limits: LimitsRuntime, external_id: str, metadata, user_id=None) -> UserLimits:
    """The limits of ``external_id`` as the API would apply them to a request of theirs
    (key policies aside: they belong to the key, not the user)."""
    policies = load_policies(limits.sessions, limits.cache)
    scope = applicable(policies, external_id, metadata, 0, "")
    scope = type(scope)(scope.subject, scope.subject_limits, scope.tier, None, None)
    now = limits.clock()
    checks = build_checks(scope, 0, now, policies.stamp)
    if not checks:
        return UserLimits(external_id, user_id, scope.tier, [])
    # A reset made since the user's last request is applied, and counters not rebuilt
    # since the storage started (a restart) are rebuilt from the request log, as their
    # next request would: the page shows their use, not an empty counter.
    plan = {**admission_plan(policies, checks, now), "hit": False}
    try:
        result = run_seeded(limits, plan, checks, policies)
    except Exception:  # the storage is down: say so, do not fail the page
        return UserLimits(external_id, user_id, scope.tier, [], available=False)
    uses = [_use(check, stats) for check, stats in zip(checks, result["stats"], strict=True)]
    return UserLimits(external_id, user_id, scope.tier, uses)


def _use(check: Check, stats: list[float]) -> LimitUse:
    reset, remaining = stats
    used = max(0, check.limit - remaining)
    fraction = used / check.limit if check.limit else 1.0
    return LimitUse(
        check.field,
        check.subject,
        check.amount(check.limit),
        check.amount(used),
        check.amount(remaining),
        min(fraction, 1.0),
        datetime.fromtimestamp(int(reset + 1), UTC).replace(tzinfo=None),
    )


def busiest_users(session: Session, limits: LimitsRuntime, now: datetime) -> list[UserLimits]:
    """Candidates by requests in the last 24 h and by cost today, most used first."""
    since, today = now - timedelta(hours=24), now.replace(hour=0, minute=0, second=0)
    by_requests = (
        select(RequestLog.user_id)
        .where(RequestLog.created_at >= since, RequestLog.user_id.is_not(None))
        .group_by(RequestLog.user_id)
        .order_by(func.count().desc())
        .limit(CANDIDATES)
    )
    by_cost = (
        select(RequestLog.user_id)
        .where(RequestLog.created_at >= today, RequestLog.user_id.is_not(None))
        .group_by(RequestLog.user_id)
        .order_by(func.coalesce(func.sum(RequestLog.cost), 0).desc())
        .limit(CANDIDATES)
    )
    ids = set(session.scalars(by_requests)) | set(session.scalars(by_cost))
    users = session.execute(
        select(EndUser.id, EndUser.external_id, EndUser.profile_metadata).where(EndUser.id.in_(ids))
    ).all()
    found = [user_limits(limits, ext, meta, uid) for uid, ext, meta in users]
    found = [u for u in found if u.uses and u.fraction > 0]
    return sorted(found, key=lambda u: (-u.fraction, u.external_id))
