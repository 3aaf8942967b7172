"""End users and the upstream identifiers they have had: kept up to date as requests are
recorded, found by upstream identifier, internal id, e-mail or display name, and shown
one at a time with identifiers, usage and recent requests.

Tracing a person is sensitive: every search and every profile view by an operator is
written to the audit log (``identity.lookup``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, union
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from tally.audit import add_audit
from tally.db import utcnow
from tally.models import EndUser, RequestLog, UpstreamIdentifier
from tally.reports.dashboard import (
    DEFAULT_RANGE_DAYS,
    Row,
    Totals,
    per_model,
    totals_between,
)

PER_PAGE = 20
MAX_QUERY_LENGTH = 255
RECENT_REQUESTS = 25

# identity field -> EndUser column
PROFILE_COLUMNS = {
    "display_name": "display_name",
    "email": "email",
    "metadata": "profile_metadata",
    "tags": "tags",
    "logo_url": "logo_url",
    "verified": "verified",  # set by a verified end-user token, never cleared
}


def upsert_end_user(
    session: Session,
    external_id: str,
    profile: dict[str, Any] | None = None,
    now: datetime | None = None,
    is_demo: bool = False,
) -> int:
    """Create the end user on first sight, else touch ``last_seen`` and update the profile
    fields the request carried. Safe under concurrent first requests. Returns its id."""
    now = now or utcnow()
    fields = {PROFILE_COLUMNS[k]: v for k, v in (profile or {}).items() if k in PROFILE_COLUMNS}
    stmt = _insert(session, EndUser).values(
        external_id=external_id, first_seen=now, last_seen=now, is_demo=is_demo, **fields
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[EndUser.external_id], set_={"last_seen": now, **fields}
    ).returning(EndUser.id)
    return session.execute(stmt).scalar_one()


def upsert_identifier(
    session: Session,
    identifier: str,
    user_id: int,
    revision_id: int | None,
    now: datetime | None = None,
) -> int:
    """Record that ``identifier`` was sent for ``user_id``. The first mapping is kept for
    good, so an identifier from old router logs resolves to whom it meant then."""
    now = now or utcnow()
    stmt = _insert(session, UpstreamIdentifier).values(
        identifier=identifier,
        user_id=user_id,
        revision_id=revision_id,
        first_seen=now,
        last_seen=now,
        request_count=1,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[UpstreamIdentifier.identifier],
        set_={"last_seen": now, "request_count": UpstreamIdentifier.request_count + 1},
    ).returning(UpstreamIdentifier.id)
    return session.execute(stmt).scalar_one()


def trace_identifier(session: Session, identifier: str) -> UpstreamIdentifier | None:
    """The stored identifier (with its user and revision), or None if never sent."""
    return session.scalars(
        select(UpstreamIdentifier).where(UpstreamIdentifier.identifier == identifier.strip())
    ).first()


def _insert(session: Session, model):
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model)


@dataclass(frozen=True)
class Match:
    """One end user found, with the identifiers of theirs the query matched."""

    user: EndUser
    identifiers: list[str]


@dataclass(frozen=True)
class SearchPage:
    """One page of search results."""

    query: str
    matches: list[Match]
    page: int
    pages: int
    total: int
    exact: Match | None  # the user whose upstream identifier is exactly the query


@dataclass(frozen=True)
class IdentityDetail:
    """Everything the console shows about one end user."""

    user: EndUser
    identifiers: list[UpstreamIdentifier]
    month: Totals
    models: list[Row]
    recent: list[RequestLog]


def search_identities(
    session: Session, query: str, page: int = 1, actor: str | None = None
) -> SearchPage:
    """End users matching ``query``: an upstream identifier (exact or prefix), an internal
    id (exact or prefix), or part of an e-mail or display name (any case). Empty query:
    the most recently seen users. A search by ``actor`` is recorded in the audit log."""
    query = query.strip()[:MAX_QUERY_LENGTH]
    if query:
        found = _matching_ids(session, query)
        total = len(found)
        pages = max(1, -(-total // PER_PAGE))
        page = min(max(page, 1), pages)
        shown = found[(page - 1) * PER_PAGE : page * PER_PAGE]
        by_id = {u.id: u for u in session.scalars(select(EndUser).where(EndUser.id.in_(shown)))}
        users = [by_id[user_id] for user_id in shown]
    else:
        total = session.scalar(select(func.count(EndUser.id))) or 0
        pages = max(1, -(-total // PER_PAGE))
        page = min(max(page, 1), pages)
        listing = select(EndUser).order_by(EndUser.last_seen.desc(), EndUser.id.desc())
        users = list(session.scalars(listing.offset((page - 1) * PER_PAGE).limit(PER_PAGE)))
    hits = _identifier_hits(session, query, [u.id for u in users]) if query else {}
    matches = [Match(user, hits.get(user.id, [])) for user in users]
    traced = trace_identifier(session, query) if query else None
    exact = Match(traced.user, [traced.identifier]) if traced else None
    if actor and query:
        add_audit(
            session,
            actor,
            "identity.lookup",
            target=query,
            after={"query": query, "results": total, "page": page},
        )
        session.commit()
    return SearchPage(query, matches, page, pages, total, exact)


def identity_detail(
    session: Session, user_id: int, now: datetime, actor: str | None = None
) -> IdentityDetail | None:
    """The end user ``user_id`` with their identifiers, 30-day usage and recent requests,
    or None. A view by ``actor`` is recorded in the audit log."""
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
    # the last 30 UTC days, from the daily totals; the recent requests off the log's
    # (user_id, created_at, id) index, newest first
    start = now.date() - timedelta(days=DEFAULT_RANGE_DAYS - 1)
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
        month=totals_between(session, start, now.date(), user_id),
        models=per_model(session, start, now.date(), user_id),
        recent=recent,
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


def _matching_ids(session: Session, query: str) -> list[int]:
    """The ids of every end user matching ``query``, most recently seen first; their
    number is the count.

    Each way to match is its own branch of a UNION, so each can use its index (the id
    and identifier ranges; PostgreSQL's trigram indexes for e-mail and name): an OR of
    them, one holding a subquery, made PostgreSQL read every user, and SQLite, sorting
    by the ``last_seen`` index, read every user's row in that order, one random read
    each. Each branch brings ``last_seen`` along, so the matches are sorted as found.
    """
    dialect = session.get_bind().dialect.name
    found = (EndUser.id.label("id"), EndUser.last_seen.label("last_seen"))
    matches = union(
        select(*found).where(_prefix(EndUser.external_id, query)),
        select(*found).where(
            or_(
                _contains(dialect, EndUser.email, query),
                _contains(dialect, EndUser.display_name, query),
            )
        ),
        select(*found)
        .join(UpstreamIdentifier, UpstreamIdentifier.user_id == EndUser.id)
        .where(_prefix(UpstreamIdentifier.identifier, query)),
    ).subquery()
    stmt = select(matches.c.id).order_by(matches.c.last_seen.desc(), matches.c.id.desc())
    return list(session.scalars(stmt))


def _prefix(column, query: str):
    """``column`` starts with ``query`` (case-sensitive, as ids are): a range on the
    column's unique index (an SQL LIKE cannot use it on SQLite, where LIKE ignores case),
    with the LIKE kept to stay exact whatever the collation."""
    return and_(
        column >= query,
        column < query + "\U0010ffff",
        column.startswith(query, autoescape=True),
    )


def _contains(dialect: str, column, query: str):
    """``column`` contains ``query``, any case. SQLite's LIKE already ignores ASCII case
    and its lower() folds nothing more, so lower() there only tripled the scan's cost."""
    if dialect == "sqlite":
        return column.contains(query, autoescape=True)
    return func.lower(column).contains(query.lower(), autoescape=True)


def _identifier_hits(session: Session, query: str, user_ids: list[int]) -> dict[int, list[str]]:
    hits: dict[int, list[str]] = {}
    if not user_ids:
        return hits
    rows = session.execute(
        select(UpstreamIdentifier.user_id, UpstreamIdentifier.identifier)
        .where(
            UpstreamIdentifier.user_id.in_(user_ids),
            UpstreamIdentifier.identifier.startswith(query, autoescape=True),
        )
        .order_by(UpstreamIdentifier.identifier)
    )
    for user_id, identifier in rows:
        hits.setdefault(user_id, []).append(identifier)
    return hits
