"""The users table (``/identities`` without a query): every end user with their requests
and cost over the last 30 UTC days, last seen, tier and limit state, sortable by each.

Each sort finds the page's users without adding up every user's days (100,000 users
are some million rows of ``daily_totals`` a month):

- ``requests``, ``cost``: the top users by that figure, found by the threshold
  algorithm of tally.reports.ranking (each month's users in the order of the
  ``monthly_user_totals`` index); users without traffic in the 30 days come after them,
  most recently seen first;
- ``last_seen``, ``user`` (the internal id): off ``end_users``' own indexes;
- ``tier``: the tier of each distinct stored metadata (few, whatever the number of
  users: the index of migration 0007), then an ORDER BY on which of them a user holds;
- ``limit``: the limits' own candidates (tally.limits.status.busiest_users: the users
  with the most requests in 24 hours and the most cost today) by the largest fraction
  of a limit used, then everyone else, most recently seen first.

Then only the page's users are read: their figures from ``daily_totals`` by index, and
their limits as their next request would see them (tally.limits.status.user_limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Text, cast, exists, func, select, true
from sqlalchemy.orm import Session

from tally.limits.policy import DEFAULT_TIER, Policies, tier_of
from tally.limits.policy_store import load_policies
from tally.limits.runtime import LimitsRuntime
from tally.limits.status import UserLimits, busiest_users, user_limits
from tally.models import DailyTotal, EndUser
from tally.reports import ranking
from tally.reports.dashboard import DEFAULT_RANGE_DAYS

PER_PAGE = 50
# sort -> its order: figures and times highest first, names A to Z
SORTS = {
    "user": "internal id, A to Z",
    "requests": "requests in the last 30 days, most first",
    "cost": "cost in the last 30 days, highest first",
    "last_seen": "last seen, most recent first",
    "tier": "tier, A to Z",
    "limit": "the largest share of a limit used, highest first",
}
DEFAULT_SORT = "last_seen"
FIRST_DEPTH = 1.25  # the ranking's first read per month, times the users wanted
MAX_PROFILES = 2000  # distinct stored metadata the tier sort names in one statement


@dataclass(frozen=True)
class UserRow:
    """One end user of the table."""

    user: EndUser
    requests: int
    cost: float
    limits: UserLimits | None  # None: no limits runtime

    @property
    def tier(self) -> str:
        """The tier's name (``default``, ``pro``)."""
        return self.limits.tier.removeprefix("tier:") if self.limits else "default"


@dataclass(frozen=True)
class UsersPage:
    """One page of the users table."""

    rows: list[UserRow]
    sort: str
    page: int
    pages: int
    total: int
    start: date
    end: date


def users_table(
    session: Session, limits: LimitsRuntime | None, now: datetime, sort: str, page: int = 1
) -> UsersPage:
    """Page ``page`` (``PER_PAGE`` users) of every end user ordered by ``sort`` (one of
    ``SORTS``; ``last_seen`` when it is none of them), with their figures of the last 30
    UTC days and their limits."""
    sort = sort if sort in SORTS else DEFAULT_SORT
    total = session.scalar(select(func.count(EndUser.id))) or 0
    pages = max(1, -(-total // PER_PAGE))
    page = min(max(page, 1), pages)
    offset = (page - 1) * PER_PAGE
    end = now.date()
    start = end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    figures: dict[int, tuple[int, float]] = {}
    known: dict[int, UserLimits] = {}
    if sort in ("requests", "cost"):
        ids, figures = _by_figure(session, start, end, sort, offset)
    elif sort == "limit" and limits is not None:
        ids, known = _by_limit(session, limits, now, offset)
    elif sort == "tier" and limits is not None:
        ids = _by_tier(session, load_policies(limits.sessions, limits.cache), offset)
    else:
        ids = _by_column(session, sort, offset, PER_PAGE)
    users = {u.id: u for u in session.scalars(select(EndUser).where(EndUser.id.in_(ids)))}
    missing = [user_id for user_id in ids if user_id not in figures]
    figures |= _figures(session, start, end, missing)
    rows = []
    for user_id in ids:
        user = users.get(user_id)
        if user is None:  # totals of a user row since deleted
            continue
        found = known.get(user_id)
        if found is None and limits is not None:
            found = user_limits(limits, user.external_id, user.profile_metadata, user.id)
        requests, cost = figures.get(user_id, (0, 0.0))
        rows.append(UserRow(user, requests, cost, found))
    return UsersPage(rows, sort, page, pages, total, start, end)


def _by_column(session: Session, sort: str, offset: int, limit: int, skip=()) -> list[int]:
    """Users by internal id (A to Z) or most recently seen first, but ``skip``."""
    if sort == "user":
        order = (EndUser.external_id,)
    else:
        order = (EndUser.last_seen.desc(), EndUser.id.desc())
    stmt = select(EndUser.id).order_by(*order).offset(offset).limit(limit)
    if skip:
        stmt = stmt.where(EndUser.id.not_in(sorted(skip)))
    return list(session.scalars(stmt))


def _by_figure(
    session: Session, start: date, end: date, by: str, offset: int
) -> tuple[list[int], dict[int, tuple[int, float]]]:
    """A page by requests or cost over ``start``..``end``, highest first (ties: the other
    figure, then the oldest user); users without traffic in the range after them."""
    wanted = offset + PER_PAGE + 1  # + 1: anonymous traffic may rank among them
    ranked = ranking.top_users(session, start, end, wanted, by=by, first_depth=FIRST_DEPTH)
    everyone = len(ranked) < wanted  # the ranking ran out: every user with traffic
    ranked = [(user_id, sums) for user_id, sums in ranked if user_id]
    figures = {user_id: (sums[0], sums[2]) for user_id, sums in ranked}
    ids = [user_id for user_id, _sums in ranked[offset : offset + PER_PAGE]]
    if len(ids) < PER_PAGE and everyone:
        in_range = exists().where(
            DailyTotal.user_id == EndUser.id, DailyTotal.day >= start, DailyTotal.day <= end
        )
        quiet = (
            select(EndUser.id)
            .where(~in_range)
            .order_by(EndUser.last_seen.desc(), EndUser.id.desc())
            .offset(max(0, offset - len(ranked)))
            .limit(PER_PAGE - len(ids))
        )
        ids += list(session.scalars(quiet))
    return ids, figures


def _by_limit(
    session: Session, limits: LimitsRuntime, now: datetime, offset: int
) -> tuple[list[int], dict[int, UserLimits]]:
    """The users nearest to (or past) a limit first, by the fraction used; then the
    rest, most recently seen first."""
    ranked = [u for u in busiest_users(session, limits, now) if u.user_id is not None]
    known = {u.user_id: u for u in ranked}
    ids = [u.user_id for u in ranked[offset : offset + PER_PAGE]]
    if len(ids) < PER_PAGE:
        rest = max(0, offset - len(ranked))
        ids += _by_column(session, "last_seen", rest, PER_PAGE - len(ids), skip=known)
    return ids, known


def _by_tier(session: Session, policies: Policies, offset: int) -> list[int]:
    """Users by tier name (A to Z), most recently seen first within a tier: the page
    read from the tier(s) it falls in (a named tier's users are those whose stored
    metadata is one of its texts, the metadata index; the default tier holds the rest),
    a tier counted only when the page starts past it."""
    if not policies.has_named_tiers():  # everyone is in tier:default
        return _by_column(session, "last_seen", offset, PER_PAGE)
    stored = cast(EndUser.profile_metadata, Text)
    texts = _profiles(session, stored)
    if len(texts) > MAX_PROFILES:  # metadata that differs per user: placed here instead
        return _by_tier_here(session, policies, offset)
    tiers: dict[str, list[str]] = {}
    for text in texts:
        tiers.setdefault(_tier(policies, text), []).append(text)
    named = [text for name, held in tiers.items() if name != DEFAULT_TIER for text in held]
    wheres = {name: stored.in_(held) for name, held in tiers.items() if name != DEFAULT_TIER}
    wheres[DEFAULT_TIER] = stored.is_(None) | stored.not_in(named) if named else true()
    ids: list[int] = []
    for name in sorted(wheres):
        stmt = (
            select(EndUser.id)
            .where(wheres[name])
            .order_by(EndUser.last_seen.desc(), EndUser.id.desc())
            .offset(offset)
            .limit(PER_PAGE - len(ids))
        )
        found = list(session.scalars(stmt))
        if found or offset == 0:
            ids += found
            offset = 0
        else:  # the page starts past this tier: how far past, by its size
            offset -= session.scalar(select(func.count(EndUser.id)).where(wheres[name])) or 0
        if len(ids) >= PER_PAGE:
            break
    return ids


def _profiles(session: Session, stored) -> list[str]:
    """The distinct stored metadata texts (``MAX_PROFILES + 1`` at most), read off their
    index one after the other (a loose index scan: a handful of index probes where
    DISTINCT read every user)."""
    found = select(func.min(stored).label("text")).cte("profiles", recursive=True)
    following = select(func.min(stored)).where(stored > found.c.text).scalar_subquery()
    found = found.union_all(select(following).where(found.c.text.is_not(None)))
    stmt = select(found.c.text).where(found.c.text.is_not(None)).limit(MAX_PROFILES + 1)
    return list(session.scalars(stmt))


def _by_tier_here(session: Session, policies: Policies, offset: int) -> list[int]:
    rows = session.execute(
        select(EndUser.id, cast(EndUser.profile_metadata, Text), EndUser.last_seen)
    ).all()
    rows.sort(key=lambda row: (-row[2].timestamp(), -row[0]))
    rows.sort(key=lambda row: _tier(policies, row[1]) if row[1] else DEFAULT_TIER)
    return [row[0] for row in rows[offset : offset + PER_PAGE]]


def _tier(policies: Policies, text: str) -> str:
    try:
        return tier_of(policies, json.loads(text))
    except ValueError:
        return DEFAULT_TIER


def _figures(
    session: Session, start: date, end: date, user_ids: list[int]
) -> dict[int, tuple[int, float]]:
    """Requests and cost of ``user_ids`` over ``start``..``end`` (by their index)."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(
            DailyTotal.user_id,
            func.coalesce(func.sum(DailyTotal.requests), 0),
            func.coalesce(func.sum(DailyTotal.cost), 0.0),
        )
        .where(
            ranking.among(session, DailyTotal.user_id, user_ids),
            DailyTotal.day >= start,
            DailyTotal.day <= end,
        )
        .group_by(DailyTotal.user_id)
    )
    return {user_id: (int(requests), float(cost)) for user_id, requests, cost in rows}
