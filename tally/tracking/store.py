"""The tracking config's store: every change a new revision, the newest active, read
through the runtime's versioned cache on the request path."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.audit import add_audit
from tally.cache import Cache
from tally.db import session_from
from tally.models import ConfigRevision
from tally.tracking.config import FIELDS, TrackingConfig


def active_config(session: Session | sessionmaker, cache: Cache | None = None) -> TrackingConfig:
    """The active tracking config (PRODUCT.md's defaults before any revision exists),
    read in ``session`` (given a factory: in a session of its own, opened only when the
    cache cannot answer).

    Served from ``cache`` (the runtime's, tally.cache) when given: a new revision bumps
    the cache version, so every instance uses it from the next request. Without it, read
    from the session (as a transaction that is about to change the config must).
    """
    if cache is None:
        return _load_active_config(session)
    return cache.get("config", lambda: _load_active_config(session))


def _load_active_config(source: Session | sessionmaker) -> TrackingConfig:
    with session_from(source) as session:
        revision = session.scalars(
            select(ConfigRevision).order_by(ConfigRevision.id.desc()).limit(1)
        ).first()
        return config_of(revision) if revision else TrackingConfig()


def config_of(revision: ConfigRevision) -> TrackingConfig:
    """The TrackingConfig a stored revision holds."""
    return TrackingConfig(
        **{name: getattr(revision, name) for name in FIELDS}, revision_id=revision.id
    )


def save_config(
    session: Session, config: TrackingConfig, actor: str, comment: str | None = None
) -> ConfigRevision:
    """Store ``config`` as the new active revision, with an audit entry before → after."""
    before = active_config(session)
    revision = ConfigRevision(
        **{name: getattr(config, name) for name in FIELDS},
        created_by=actor,
        comment=comment,
    )
    session.add(revision)
    session.flush()
    add_audit(
        session,
        actor,
        "config.update",
        target=f"revision {revision.id}",
        before=before.as_fields(),
        after=config.as_fields(),
    )
    session.commit()
    return revision


def config_history(session: Session, limit: int = 50) -> list[ConfigRevision]:
    """The newest ``limit`` revisions, newest first."""
    return list(
        session.scalars(select(ConfigRevision).order_by(ConfigRevision.id.desc()).limit(limit))
    )
