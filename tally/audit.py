"""The audit trail: config changes, key, token and operator changes, limits, prices, the
identity provider, identity lookups and erasures, usage pruning — written by every use
case that changes something, read newest first by the console."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.models import AuditEntry

PER_PAGE = 50
# The audit log's kind filter: name -> (action prefix, label). Every action a use case
# writes falls under one kind (tests/test_audit_kinds.py reads them from the code).
KINDS = {
    "config": ("config.", "config changes"),
    "key": ("key.", "API keys"),
    "admin_token": ("admin_token.", "admin API tokens"),
    "operator": ("operator.", "operators"),
    "limits": ("limits.", "limits"),
    "price": ("price.", "prices"),
    "idp": ("idp.", "identity provider"),
    "identity": ("identity.lookup", "identity lookups"),
    "erasure": ("identity.erase", "erasures"),
    "usage": ("usage.", "usage pruning"),
    "sink": ("sink.", "sinks"),
}


def add_audit(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an audit entry to the caller's transaction (the caller commits)."""
    entry = AuditEntry(actor=actor, action=action, target=target, before=before, after=after)
    session.add(entry)
    return entry


@dataclass(frozen=True)
class AuditPage:
    """One page of audit entries."""

    entries: list[AuditEntry]
    page: int
    pages: int
    total: int


def list_audit(
    session: Session, kind: str | None = None, actor: str | None = None, page: int = 1
) -> AuditPage:
    """Audit entries, newest first; ``kind`` one of KINDS (else all), ``actor`` a part of
    the actor's name (any case)."""
    conditions = []
    if kind in KINDS:
        conditions.append(AuditEntry.action.startswith(KINDS[kind][0]))
    if actor and actor.strip():
        conditions.append(
            func.lower(AuditEntry.actor).contains(actor.strip().lower(), autoescape=True)
        )
    total = session.scalar(select(func.count(AuditEntry.id)).where(*conditions)) or 0
    pages = max(1, -(-total // PER_PAGE))
    page = min(max(page, 1), pages)
    entries = list(
        session.scalars(
            select(AuditEntry)
            .where(*conditions)
            .order_by(AuditEntry.id.desc())
            .offset((page - 1) * PER_PAGE)
            .limit(PER_PAGE)
        )
    )
    return AuditPage(entries, page, pages, total)


def recent_audit(session: Session, prefix: str, limit: int) -> list[AuditEntry]:
    """The newest ``limit`` entries whose action starts with ``prefix`` (``"price."``):
    a console page's own recent changes."""
    query = select(AuditEntry).where(AuditEntry.action.startswith(prefix))
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
