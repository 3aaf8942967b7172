"""Finding end users: by an upstream identifier (exact or prefix), an internal id (exact
or prefix), or part of an e-mail or display name; a search by an operator is audited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.end_users.directory import shared_note, trace_users
from tally.models import EndUser, UpstreamIdentifier

PER_PAGE = 20
MAX_QUERY_LENGTH = 255
# Matches counted exactly up to here; past it the page says "10,000+ matches" and its
# rows are found by walking the users most recently seen first (dense matches: soon).
COUNT_CAP = 10_000
WALK_CHUNK, MAX_WALK_CHUNK = 500, 8000  # users read at a time to find such a page


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
    total: int  # COUNT_CAP when capped
    # every user the query was sent for as an upstream identifier, first sent first:
    # several when the identifier is shared (a collision), ``shared`` then says so
    traced: list[Match]
    shared: str | None = None
    capped: bool = False  # more than ``total`` matches

    @property
    def exact(self) -> Match | None:
        """The first user whose upstream identifier is exactly the query."""
        return self.traced[0] if self.traced else None


def search_identities(
    session: Session, query: str, page: int = 1, actor: str | None = None
) -> SearchPage:
    """End users matching ``query``: an upstream identifier (exact or prefix), an internal
    id (exact or prefix), or part of an e-mail or display name (any case). Empty query:
    the most recently seen users. A search by ``actor`` is recorded in the audit log."""
    query = query.strip()[:MAX_QUERY_LENGTH]
    capped = False
    if query:
        found = _matching_ids(session, query)
        capped = found is None
        total = COUNT_CAP if capped else len(found)
        pages = max(1, -(-total // PER_PAGE))
        page = min(max(page, 1), pages)
        if capped:
            shown = _walked_ids(session, query, (page - 1) * PER_PAGE)
        else:
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
    mappings = trace_users(session, query) if query else []
    traced = [Match(found.user, [found.identifier]) for found in mappings]
    if actor and query:
        add_audit(
            session,
            actor,
            "identity.lookup",
            target=query,
            after={"query": query, "results": total, "page": page} | _capped(capped),
        )
        session.commit()
    return SearchPage(query, matches, page, pages, total, traced, shared_note(mappings), capped)


def _capped(capped: bool) -> dict:
    """``{"capped": True}`` in the audit entry of a search past ``COUNT_CAP`` matches."""
    return {"capped": True} if capped else {}


def _matching_ids(session: Session, query: str) -> list[int] | None:
    """The ids of every end user matching ``query``, most recently seen first; their
    number is the count. None when more than ``COUNT_CAP`` users match (each way to
    match reads at most ``COUNT_CAP + 1`` of them: a query matching every user, such
    as the identifiers' prefix, costs the same at 100,000 users as at 10,001).

    Each way to match is its own statement, so each can use its index (the id and
    identifier ranges; PostgreSQL's trigram indexes for e-mail and name): an OR of them,
    one holding a subquery, made PostgreSQL read every user, and SQLite, sorting by the
    ``last_seen`` index, read every user's row in that order, one random read each. Each
    reads ids alone; the matches (10,000 at most) are then sorted by ``last_seen``.
    """
    found: set[int] = set()
    for where, joined in _ways(session, query):
        # an identifier's user id is in its (identifier, user_id) index: no join
        column = UpstreamIdentifier.user_id if joined else EndUser.id
        stmt = select(column).where(where)
        if joined:  # a user with several identifiers counts once
            stmt = stmt.distinct()
        found.update(session.scalars(stmt.limit(COUNT_CAP + 1)))
        if len(found) > COUNT_CAP:
            return None
    if not found:
        return []
    ordered = select(EndUser.id).where(EndUser.id.in_(sorted(found)))
    return list(session.scalars(ordered.order_by(EndUser.last_seen.desc(), EndUser.id.desc())))


def _ways(session: Session, query: str) -> list[tuple]:
    """Each way to match ``query`` (a condition on end users, and whether it needs their
    identifiers joined); each can use its index: the id and identifier ranges,
    PostgreSQL's trigram indexes for e-mail and name."""
    dialect = session.get_bind().dialect.name
    return [  # the ranges first: one past the cap spares the others
        (_prefix(EndUser.external_id, query), False),
        (_prefix(UpstreamIdentifier.identifier, query), True),
        (
            or_(
                _contains(dialect, EndUser.email, query),
                _contains(dialect, EndUser.display_name, query),
            ),
            False,
        ),
    ]


def _walked_ids(session: Session, query: str, offset: int) -> list[int]:
    """A page of a query matching more than ``COUNT_CAP`` users: users read most
    recently seen first (the ``last_seen`` index), each tested against every way to
    match, until the page is full (matches that dense fill one soon).

    SQLite: one statement, each user's identifiers looked up by index as it is read.
    PostgreSQL hashed every identifier of the prefix for that statement before reading
    a user (140 ms at 100,000): there users are read a chunk at a time, and each way
    to match is asked about that chunk's ids."""
    if session.get_bind().dialect.name == "sqlite":
        conditions = []
        for where, joined in _ways(session, query):
            if joined:
                where = exists().where(UpstreamIdentifier.user_id == EndUser.id, where)
            conditions.append(where)
        stmt = (
            select(EndUser.id)
            .where(or_(*conditions))
            .order_by(EndUser.last_seen.desc(), EndUser.id.desc())
            .offset(offset)
            .limit(PER_PAGE)
        )
        return list(session.scalars(stmt))
    wanted, found = offset + PER_PAGE, []
    chunk, after = WALK_CHUNK, None
    while len(found) < wanted:
        stmt = select(EndUser.id, EndUser.last_seen).order_by(
            EndUser.last_seen.desc(), EndUser.id.desc()
        )
        if after is not None:
            seen, last_id = after
            stmt = stmt.where(
                or_(EndUser.last_seen < seen, and_(EndUser.last_seen == seen, EndUser.id < last_id))
            )
        rows = session.execute(stmt.limit(chunk)).all()
        if not rows:
            break
        ids = [row.id for row in rows]
        hits: set[int] = set()
        for where, joined in _ways(session, query):
            column = UpstreamIdentifier.user_id if joined else EndUser.id
            hits.update(session.scalars(select(column).where(column.in_(ids), where)))
        found += [user_id for user_id in ids if user_id in hits]
        after = (rows[-1].last_seen, rows[-1].id)
        chunk = min(chunk * 2, MAX_WALK_CHUNK)
    return found[offset:wanted]


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
