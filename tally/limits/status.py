"""What the console shows about limits: one user's quota left and spend against budget,
and who is limited now or near a limit (top users by the fraction of a limit used).

Reads the counters without counting (a plan that does not hit) for the candidates:
the users with a policy of their own, and those with the most requests, tokens and
cost today and yesterday (a superset of the last 24 hours) and this month, found in
the daily and monthly totals (never the request log: a day holds tens of thousands of
rows at a million a month).
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
from tally.models import DailyTotal, EndUser, MonthlyUserTotal

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

    @property
    def state(self) -> str:
        """In a few words: ``ok``, ``near: 85 % of messages`` (past :data:`NEAR` of a
        limit), ``limited: daily_budget`` (used up), ``no limit`` (none applies) or
        ``unknown`` (the storage could not be read)."""
        if not self.available:
            return "unknown"
        if not self.uses:
            return "no limit"
        top = max(self.uses, key=lambda use: use.fraction)  # the first of the tightest
        if top.fraction >= 1.0:
            return f"limited: {top.field}"
        if top.fraction >= NEAR:
            return f"near: {int(top.fraction * 100)} % of {top.field}"
        return "ok"


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
    """The candidates (:func:`candidates`) and the users with a policy of their own who
    use some of a limit, by the largest fraction used, highest first."""
    ids = candidates(session, now)
    policies = load_policies(limits.sessions, limits.cache)
    named = [s.removeprefix("user:") for s in policies.by_scope if s.startswith("user:")]
    users = session.execute(
        select(EndUser.id, EndUser.external_id, EndUser.profile_metadata).where(
            EndUser.id.in_(ids) | EndUser.external_id.in_(named)
        )
    ).all()
    found = [user_limits(limits, ext, meta, uid) for uid, ext, meta in users]
    found = [u for u in found if u.uses and u.fraction > 0]
    return sorted(found, key=lambda u: (-u.fraction, u.external_id))


def candidates(session: Session, now: datetime) -> set[int]:
    """The ids of the users most likely near a limit: the top ``CANDIDATES`` by requests
    today and yesterday (``messages``, ``rpm``), by tokens and by cost today (the daily
    limits), by cost and by requests this month (the monthly ones: the indexes of
    ``monthly_user_totals``)."""
    today = now.date()
    yesterday = today - timedelta(days=1)
    t = DailyTotal
    # grouped by user_id + 0: SQLite would otherwise walk every user's days in the
    # (user_id, day) index to group them, not the two days' rows by the key's day
    user = (t.user_id + 0).label("user")
    ids: set[int] = set()
    for figure, since in (
        (func.sum(t.requests), yesterday),
        (func.sum(t.prompt_tokens + t.completion_tokens), today),
        (func.sum(t.cost), today),
    ):
        ids.update(
            session.scalars(
                select(user)
                .where(t.day >= since, t.user_id != 0)
                .group_by(user)
                .having(figure > 0)
                .order_by(figure.desc())
                .limit(CANDIDATES)
            )
        )
    m = MonthlyUserTotal
    month = today.replace(day=1)
    for column in (m.cost, m.requests):
        ids.update(
            session.scalars(
                select(m.user_id)
                .where(m.month == month, m.user_id != 0)
                .order_by(column.desc())
                .limit(CANDIDATES)
            )
        )
    return ids
