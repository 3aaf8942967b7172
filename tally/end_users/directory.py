"""End users and the upstream identifiers they have had: kept up to date as requests are
recorded, found by upstream identifier, internal id, e-mail or display name, and shown
one at a time with identifiers, usage and recent requests.

Tracing a person is sensitive: every search and every profile view by an operator is
written to the audit log (``identity.lookup``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from tally.db import utcnow
from tally.models import EndUser, UpstreamIdentifier

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
    """Record that ``identifier`` was sent for ``user_id``. Each (identifier, user) pair
    has one row, whose first revision is kept for good, so an identifier from old router
    logs resolves to whom it meant then; a second user whose id collides with the first's
    gets a row of their own (see :func:`trace_users`)."""
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
        index_elements=[UpstreamIdentifier.identifier, UpstreamIdentifier.user_id],
        set_={"last_seen": now, "request_count": UpstreamIdentifier.request_count + 1},
    ).returning(UpstreamIdentifier.id)
    return session.execute(stmt).scalar_one()


def trace_users(session: Session, identifier: str) -> list[UpstreamIdentifier]:
    """Every end user ``identifier`` was sent for, one stored row each (with its user and
    revision), first sent first; empty if never sent. More than one row: the identifier
    is shared (:func:`shared_note` says how)."""
    return list(
        session.scalars(
            select(UpstreamIdentifier)
            .options(
                selectinload(UpstreamIdentifier.user), selectinload(UpstreamIdentifier.revision)
            )
            .where(UpstreamIdentifier.identifier == identifier.strip())
            .order_by(UpstreamIdentifier.first_seen, UpstreamIdentifier.id)
        )
    )


def trace_identifier(session: Session, identifier: str) -> UpstreamIdentifier | None:
    """The first end user's stored row of ``identifier`` (with its user and revision),
    or None if never sent. An identifier can be shared: :func:`trace_users` has them all."""
    found = trace_users(session, identifier)
    return found[0] if found else None


def shared_note(mappings: Sequence[UpstreamIdentifier]) -> str | None:
    """``shared by N users (hash collision)`` when several users are behind one
    identifier (None for one): two digests cut to ``hash_length`` that agree, or, in
    ``none`` mode, a prefix and id that spell another's (``a`` + ``b_c``, ``a_b`` + ``c``)."""
    if len(mappings) < 2:
        return None
    plain = any(m.revision is not None and m.revision.hash_mode == "none" for m in mappings)
    kind = "prefix and id collide" if plain else "hash collision"
    return f"shared by {len(mappings)} users ({kind})"


def shared_counts(session: Session, identifiers: Sequence[str]) -> dict[str, int]:
    """How many end users each of ``identifiers`` was sent for, for those with more than
    one (off the (identifier, user) index)."""
    if not identifiers:
        return {}
    rows = session.execute(
        select(UpstreamIdentifier.identifier, func.count())
        .where(UpstreamIdentifier.identifier.in_(list(identifiers)))
        .group_by(UpstreamIdentifier.identifier)
        .having(func.count() > 1)
    )
    return {identifier: n for identifier, n in rows}


def end_user_seen(session: Session, external_id: str) -> bool:
    """True when a request has named the end user ``external_id`` (they have a row)."""
    query = select(EndUser.id).where(EndUser.external_id == external_id).limit(1)
    return session.scalar(query) is not None


def count_end_users(session: Session) -> int:
    """How many end users Tally knows (the number a collision risk is reckoned for)."""
    return session.scalar(select(func.count(EndUser.id))) or 0


def _insert(session: Session, model):
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model)
