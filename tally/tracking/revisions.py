"""Tracking-config revisions as the console shows them: previews, history with what each
revision changed, and rollback (a new revision copying an old one)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.errors import InvalidInput
from tally.models import ConfigRevision
from tally.tracking.collisions import collision_warning
from tally.tracking.config import ConfigFieldError, TrackingConfig
from tally.tracking.identifiers import derive_identifier
from tally.tracking.store import config_history, config_of, save_config


class RevisionError(InvalidInput):
    """A rollback to a revision that does not exist."""


@dataclass(frozen=True)
class Preview:
    """What an internal id becomes upstream under a config (None: nothing is sent)."""

    identifier: str | None
    note: str | None = None
    warning: str | None = None  # what the config means for ids of other lengths
    collision: str | None = None  # the chance two current users share an identifier
    profile: str | None = None  # forward_profile is on but does nothing in this config


@dataclass(frozen=True)
class HistoryEntry:
    """One revision and the fields it changed from the revision before it."""

    revision: ConfigRevision
    config: TrackingConfig
    changes: dict[str, tuple[str, str]]  # field -> (before, after)


def preview(config: TrackingConfig, internal_id: str, hash_key: bytes, users: int = 0) -> Preview:
    """The upstream identifier ``internal_id`` would get under ``config``, and, with
    ``users`` end users known, a warning when two of them likely share one."""
    if not config.enabled:
        return Preview(None, "tracking is off: no identifier is sent")
    identifier = derive_identifier(config, internal_id, hash_key)
    limit = config.max_identifier_length
    note = None
    if len(identifier) > limit:
        note = (
            f"longer than the {limit} characters the {config.dialect} dialect allows: "
            "requests would be refused"
        )
    return Preview(
        identifier,
        note,
        config.length_warning(),
        collision_warning(config, users),
        config.profile_note,
    )


def history(session: Session, limit: int = 50) -> list[HistoryEntry]:
    """The newest ``limit`` revisions, newest first, each with its changes."""
    revisions = config_history(session, limit + 1)
    entries = []
    for n, revision in enumerate(revisions[:limit]):
        config = config_of(revision)
        before = config_of(revisions[n + 1]).as_fields() if n + 1 < len(revisions) else {}
        after = config.as_fields()
        changes = {
            name: (before.get(name, ""), value)
            for name, value in after.items()
            if before and before[name] != value
        }
        entries.append(HistoryEntry(revision, config, changes))
    return entries


def rollback_config(session: Session, revision_id: int, actor: str) -> ConfigRevision:
    """Make revision ``revision_id``'s config active again, as a new revision."""
    old = session.scalars(select(ConfigRevision).where(ConfigRevision.id == revision_id)).first()
    if old is None:
        raise RevisionError(f"no config revision {revision_id}")
    config = config_of(old)
    try:
        config.check()  # made before a rule it breaks existed
    except ConfigFieldError as exc:
        raise RevisionError(f"revision {revision_id} cannot be made active: {exc}") from None
    return save_config(session, config, actor, comment=f"rollback to revision {revision_id}")
