"""Key and config caches: served from memory, never stale after a change anywhere."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select, update

from tally.cache import Cache
from tally.end_users.claims import EndUserClaim
from tally.keys.api_keys import authenticate, revoke_api_key
from tally.models import ApiKey
from tally.tracking.store import active_config
from tally.usage.call import CallRecord, Outcome
from tally.versions import FileVersion
from tests.helpers.rows import configure


class Counter:
    def __init__(self):
        self.value = 0

    def read(self):
        return self.value

    def bump(self):
        self.value += 1


def test_an_entry_is_served_until_the_version_moves():
    version, loads = Counter(), []
    cache = Cache(version)
    load = lambda: loads.append(1) or len(loads)  # noqa: E731
    assert [cache.get("k", load), cache.get("k", load)] == [1, 1]
    version.bump()
    assert cache.get("k", load) == 2


def test_an_entry_expires_after_max_age_even_without_a_bump():
    now = [0.0]
    cache = Cache(Counter(), max_age=1.0, clock=lambda: now[0])
    loads = []
    load = lambda: loads.append(1) or len(loads)  # noqa: E731
    cache.get("k", load)
    now[0] = 0.9
    assert cache.get("k", load) == 1
    now[0] = 1.1
    assert cache.get("k", load) == 2


def test_misses_are_not_cached_and_an_unreadable_version_bypasses_the_cache():
    class Down(Counter):
        def read(self):
            return None

    cache, loads = Cache(Counter()), []
    assert cache.get("k", lambda: None) is None
    assert cache.get("k", lambda: 7) == 7
    down = Cache(Down())
    load = lambda: loads.append(1) or len(loads)  # noqa: E731
    assert [down.get("k", load), down.get("k", load)] == [1, 2]


def test_the_file_counter_is_shared_by_every_mapping_of_it(tmp_path):
    first, second = FileVersion(tmp_path / "v"), FileVersion(tmp_path / "v")
    assert first.read() == second.read() == 0
    first.bump()
    second.bump()
    assert first.read() == second.read() == 2


def _queries(engine):
    seen = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_key_and_config_lookups_do_not_query_the_database_twice(app, make_key):
    runtime = app.extensions["tally"]
    raw = make_key("web")
    cache = runtime.cache
    with runtime.sessions() as session:
        first = authenticate(session, raw, cache), active_config(session, cache)
    seen = _queries(runtime.engine)
    with runtime.sessions() as session:
        assert (authenticate(session, raw, cache), active_config(session, cache)) == first
    assert seen == []


@pytest.fixture
def two_apps(make_app, tmp_path):
    """Two apps (two 'workers') on one database and one instance folder."""
    shared = str(tmp_path / "shared-instance")
    return make_app(INSTANCE_PATH=shared), make_app(INSTANCE_PATH=shared)


def test_a_key_revoked_in_one_process_is_refused_by_the_other_at_once(two_apps):
    a, b = two_apps
    with a.extensions["tally"].sessions() as session:
        from tally.keys.api_keys import create_api_key

        _, raw = create_api_key(session, "shared", "test")
    cache = b.extensions["tally"].cache
    with b.extensions["tally"].sessions() as session:
        assert authenticate(session, raw, cache) is not None  # now cached in b
    with a.extensions["tally"].sessions() as session:
        revoke_api_key(session, "shared", "test")
    with b.extensions["tally"].sessions() as session:
        assert authenticate(session, raw, cache) is None


def test_a_config_saved_in_one_process_is_active_in_the_other_at_once(two_apps):
    a, b = two_apps
    cache = b.extensions["tally"].cache
    with b.extensions["tally"].sessions() as session:
        assert active_config(session, cache).prefix == "tally"
    revision = configure(a, prefix="acme")
    with b.extensions["tally"].sessions() as session:
        config = active_config(session, cache)
    assert (config.prefix, config.revision_id) == ("acme", revision)


def test_recording_calls_does_not_invalidate_but_a_bulk_update_of_keys_does(app, make_key):
    """Every request touches its key's ``last_used_at`` (usage.record_calls): that must not
    bump the version, or every request would empty every cache. A bulk ORM update of the
    keys table is a change whatever it sets."""
    runtime = app.extensions["tally"]
    version, cache = runtime.cache.version, runtime.cache
    raw = make_key("web")
    with runtime.sessions() as session:
        key = authenticate(session, raw, cache)
    before = version.read()
    call = CallRecord("r1", key.id, EndUserClaim("ada", "user"), "tally_ada", None, "m", False)
    runtime.usage.submit(call, Outcome())
    with runtime.sessions() as session:
        assert session.get(ApiKey, key.id).last_used_at is not None
        assert version.read() == before
        session.execute(update(ApiKey).values(revoked_at=ApiKey.created_at))
        session.commit()
    assert version.read() == before + 1
    with runtime.sessions() as session:
        assert authenticate(session, raw, cache) is None


def test_a_unit_of_work_change_counts_unless_it_only_touches_last_used(app, make_key):
    runtime = app.extensions["tally"]
    version = runtime.cache.version
    make_key("web")
    before = version.read()
    with runtime.sessions() as session:
        key = session.scalars(select(ApiKey)).one()
        key.last_used_at = key.created_at
        session.commit()
        assert version.read() == before
        key.name = "renamed"
        session.commit()
    assert version.read() == before + 1
