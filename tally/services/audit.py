"""The audit trail: config changes, key and operator changes, identity lookups."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tally.models import AuditEntry


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
