"""End users and the upstream identifiers they have had: kept up to date as requests are
recorded, found by upstream identifier, internal id, e-mail or display name, and shown
one at a time with identifiers, usage and recent requests.

Tracing a person is sensitive: every search and every profile view by an operator is
written to the audit log (``identity.lookup``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

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
