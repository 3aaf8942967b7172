"""The tracking config's store: the defaults before any revision, the cache the pipeline
peeks into, the audit entry of a save, and how much history the console lists."""

from __future__ import annotations

from sqlalchemy import delete, select

from tally.cache import Cache
from tally.models import AuditEntry, ConfigRevision
from tally.tracking.config import TrackingConfig
from tally.tracking.store import active_config, config_history, save_config


class FixedVersion:
    """A cache version nothing bumps."""

    def read(self) -> int:
        """Always the same."""
        return 7

    def bump(self) -> None:
        """Not expected here."""
        raise AssertionError("nothing changes here")


def test_before_any_revision_the_config_is_the_products_defaults(db):
    db.execute(delete(ConfigRevision))
    assert active_config(db) == TrackingConfig()
    db.rollback()


def test_the_config_is_cached_where_the_pipeline_peeks_at_it(db):
    """tally/proxy/pipeline.py reads the cached config back with ``peek("config")`` (a
    Redis deployment checks its version in the admission's round trip)."""
    cache = Cache(FixedVersion())
    config = active_config(db, cache)
    assert config.revision_id == 1
    assert cache.peek("config") == (config, 7)


def test_a_save_is_audited_naming_the_revision(db):
    revision = save_config(db, TrackingConfig(prefix="acme"), "ops@example.com", "rename")
    entry = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert (entry.actor, entry.action, entry.target) == (
        "ops@example.com",
        "config.update",
        f"revision {revision.id}",
    )
    assert (entry.before["prefix"], entry.after["prefix"]) == ("tally", "acme")


def test_the_history_lists_the_newest_fifty_newest_first(db):
    for n in range(51):
        save_config(db, TrackingConfig(hash_length=8 + n % 50), "test")
    ids = [revision.id for revision in config_history(db)]
    assert ids == list(range(52, 2, -1))
    assert [revision.id for revision in config_history(db, limit=2)] == [52, 51]
