"""Erasing an end user (``users erase``, tally.privacy.erasure): nothing personal about
them is left in any column of any table, the totals are whole and still the log's
aggregate, their identifiers no longer trace, and one audit entry says who did it,
naming the user by a keyed hash only."""

from __future__ import annotations

import os
import re
import time

import pytest
from sqlalchemy import select

from tally.end_users.directory import trace_identifier
from tally.end_users.search import search_identities
from tally.errors import InvalidInput
from tally.keys.api_keys import create_api_key, revoke_api_key
from tally.limits.checks import subject_keys
from tally.limits.policy_store import set_policy
from tally.models import ApiKey, AuditEntry, EndUser, LimitPolicy, RequestLog
from tally.privacy.erasure import erase_user, erasure_ref
from tally.privacy.redaction import REDACTED, Needles, redact_entry
from tally.usage.records import record_calls
from tests.helpers.erasure import (
    EMAIL,
    IDENTIFIERS,
    NAME,
    OTHER,
    USER,
    assert_totals_whole,
    build_person,
    find_anywhere,
    personal_values,
    user_call,
)
from tests.helpers.limits import forget_redis_counters
from tests.helpers.settings import HASH_KEY

REF = erasure_ref(HASH_KEY.encode(), USER)
REDIS_URL = os.environ.get("TALLY_TEST_REDIS_URL")


@pytest.fixture
def person(app, db):
    """The user to erase (tests.helpers.erasure)."""
    return build_person(db)


def test_the_cli_erases_everything_personal_and_keeps_the_totals(app, runner, db, person):
    engine = app.extensions["tally"].engine
    assert find_anywhere(engine, personal_values())  # the scan does find them before
    bound_id = db.scalar(select(ApiKey.id).where(ApiKey.name == person.key_name))
    result = runner.invoke(args=["users", "erase", USER])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Erased the end user; the audit log names them as {REF}."
    assert "upstream identifiers deleted: 3" in lines
    assert "request rows anonymised: 7 (tokens and cost kept)" in lines
    assert f"bound API keys revoked: 1 (renamed erased-key-{bound_id})" in lines
    assert "limit overrides and resets removed: 2" in lines
    assert USER not in result.output
    db.expire_all()
    assert find_anywhere(engine, personal_values()) == []
    assert_totals_whole(db, person.totals)


def test_the_erasure_is_audited_by_keyed_hash(runner, db, person):
    runner.invoke(args=["users", "erase", USER])
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "identity.erase")).one()
    assert (entry.actor, entry.target) == ("cli", f"end user {REF}")
    assert entry.after["user_ref"] == REF and entry.after["requests"] == 7
    assert entry.after["placeholder_id"] == person.user_id
    assert len(REF) == 64 and REF not in {i.split("_", 1)[1] for i in IDENTIFIERS}


def test_earlier_audit_entries_are_redacted_and_others_kept(runner, db, person):
    runner.invoke(args=["users", "erase", USER])
    lookups = db.scalars(
        select(AuditEntry).where(AuditEntry.action == "identity.lookup").order_by(AuditEntry.id)
    ).all()
    # the searches that would have found them ("Zelda", an identifier, part of the
    # e-mail, a prefix of the id) and the profile view lose their query; the other stays
    assert [e.target for e in lookups] == [REDACTED] * 4 + ["bystander", REDACTED]
    assert lookups[0].after == {"query": REDACTED, "results": 1, "page": 1}
    assert lookups[-1].after == {"viewed": REDACTED}
    limits = db.scalars(select(AuditEntry).where(AuditEntry.action.startswith("limits."))).all()
    assert {e.target for e in limits} == {f"user:{REDACTED}"}
    assert limits[0].after == {"daily_tokens": 5000}  # the figures stay
    key = db.scalars(select(ApiKey).where(ApiKey.revoked_at.is_not(None))).one()
    created = db.scalars(select(AuditEntry).where(AuditEntry.action == "key.create")).all()
    assert [(e.target, e.after["name"]) for e in created] == [("web", "web"), (key.name,) * 2]
    assert created[1].after["bound_user"] == REDACTED


def test_rows_keep_their_figures_and_lose_their_personal_parts(runner, db, person):
    runner.invoke(args=["users", "erase", USER])
    rows = db.scalars(select(RequestLog).where(RequestLog.user_id == person.user_id)).all()
    assert len(rows) == 7
    assert {(r.identifier_id, r.generation_id, r.error_message) for r in rows} == {
        (None, None, None)
    }
    failed = [r for r in rows if r.status == 400]
    assert failed[0].error_code == "invalid_user" and failed[0].prompt_tokens == 17
    placeholder = db.get(EndUser, person.user_id)
    assert placeholder.external_id.startswith(f"erased:{person.user_id}:")
    profile = (placeholder.display_name, placeholder.email, placeholder.profile_metadata)
    assert profile + (placeholder.tags, placeholder.logo_url) == (None,) * 5


def test_keys_bound_to_them_are_revoked_unbound_and_renamed(runner, db, person):
    bound_id = db.scalar(select(ApiKey.id).where(ApiKey.name == person.key_name))
    result = runner.invoke(args=["users", "erase", USER])
    assert f"bound API keys revoked: 1 (renamed erased-key-{bound_id})" in result.output
    key = db.get(ApiKey, bound_id)
    assert key.name == f"erased-key-{bound_id}"
    assert key.revoked_at is not None and key.bound_user_id is None
    web = db.scalars(select(ApiKey).where(ApiKey.name == "web")).one()
    assert web.revoked_at is None  # an unbound key is not theirs
    assert not [s for s in db.scalars(select(LimitPolicy.scope)) if s.startswith("user:")]


def test_a_bound_keys_policy_and_audit_entries_follow_its_new_name(runner, db, person):
    set_policy(db, f"key:{person.key_name}", {"messages": 900}, "ops@example.com")
    revoke_api_key(db, person.key_name, "ops@example.com")
    bound_id = db.scalar(select(ApiKey.id).where(ApiKey.name == person.key_name))
    runner.invoke(args=["users", "erase", USER])
    db.expire_all()
    renamed = f"erased-key-{bound_id}"
    policies = {p.scope: p.fields for p in db.scalars(select(LimitPolicy))}
    assert policies[f"key:{renamed}"]["messages"] == 900
    assert f"key:{person.key_name}" not in policies
    about_it = db.scalars(
        select(AuditEntry).where(AuditEntry.action.in_(["key.create", "key.revoke", "limits.set"]))
    ).all()
    assert sorted((e.action, e.target) for e in about_it) == [
        ("key.create", renamed),
        ("key.create", "web"),
        ("key.revoke", renamed),
        ("limits.set", f"key:{renamed}"),
        ("limits.set", f"user:{REDACTED}"),
    ]
    erasure = db.scalars(select(AuditEntry).where(AuditEntry.action == "identity.erase")).one()
    assert erasure.after["keys_renamed"] == [renamed]


def test_a_taken_neutral_name_gets_a_random_tail(db):
    bound, _ = create_api_key(db, "zoe's phone", "test", bound_external_id="zoe")
    create_api_key(db, f"erased-key-{bound.id}", "test")
    erased = erase_user(db, "zoe", "cli", HASH_KEY.encode())
    db.refresh(bound)
    assert re.fullmatch(rf"erased-key-{bound.id}-[0-9a-f]{{8}}", bound.name)
    assert erased.renamed_keys == (bound.name,)


def test_their_identifiers_no_longer_trace(runner, db, person):
    runner.invoke(args=["users", "erase", USER])
    for identifier in IDENTIFIERS:
        assert trace_identifier(db, identifier) is None
        result = runner.invoke(args=["trace", identifier])
        assert result.exit_code == 1
        assert f"not found: no end user was ever sent as {identifier!r}" in result.output
    assert search_identities(db, "Zelda").total == 0
    assert search_identities(db, EMAIL).total == 0
    assert trace_identifier(db, "tally_bystander").user.external_id == OTHER


def test_the_bystander_is_untouched(runner, db, person):
    runner.invoke(args=["users", "erase", USER])
    other = db.scalars(select(EndUser).where(EndUser.external_id == OTHER)).one()
    rows = db.scalars(select(RequestLog).where(RequestLog.user_id == other.id)).all()
    assert len(rows) == 3 and all(r.identifier_id is not None for r in rows)


def test_a_new_request_with_the_same_id_makes_a_fresh_user(app, runner, db, person):
    runner.invoke(args=["users", "erase", USER])
    record_calls(db, [user_call(USER, IDENTIFIERS[0], 1, None)])
    fresh = db.scalars(select(EndUser).where(EndUser.external_id == USER)).one()
    assert fresh.id != person.user_id and fresh.display_name == NAME
    assert trace_identifier(db, IDENTIFIERS[0]).user_id == fresh.id
    assert db.get(EndUser, person.user_id).display_name is None  # the placeholder stays


@pytest.mark.parametrize(
    "internal_id,message",
    [
        ("nobody", "Error: no end user with internal id 'nobody'"),
        ("erased:1:abc", "Error: 'erased:1:abc' is an erased user already"),
    ],
)
def test_an_unknown_id_is_one_line_and_exit_2(runner, person, internal_id, message):
    result = runner.invoke(args=["users", "erase", internal_id])
    assert result.exit_code == 2
    assert result.output.strip() == message


def test_erasing_twice_is_refused_and_changes_nothing(app, db, person):
    key = HASH_KEY.encode()
    erase_user(db, USER, "ops@example.com", key)
    with pytest.raises(InvalidInput, match="no end user with internal id"):
        erase_user(db, USER, "ops@example.com", key)
    entries = db.scalars(select(AuditEntry).where(AuditEntry.action == "identity.erase")).all()
    assert len(entries) == 1 and entries[0].actor == "ops@example.com"


@pytest.mark.parametrize(
    "text,about,expected",
    [
        ("user:ada", False, "user:[erased]"),
        ("ada", False, "[erased]"),
        ("adam and ada@x.org", False, "adam and [erased]"),  # a whole word only
        ("limits for ada, ADA too", False, "limits for [erased], [erased] too"),
        ("tally_ada", False, "[erased]"),  # the identifier, whole
        ("Guest called", False, "Guest called"),  # a display name: only when about them
        ("Guest called", True, "[erased] called"),
    ],
)
def test_needles_are_scrubbed_as_whole_words(text, about, expected):
    needles = Needles.of("ada", "ada@x.org", "Guest", None, ["tally_ada"])
    assert needles.scrub(text, about) == expected


def test_a_short_id_is_scrubbed_only_where_it_is_the_whole_value():
    needles = Needles.of("7", None, None, None, [])
    assert needles.scrub("user:7") == "user:[erased]" and needles.scrub("7") == REDACTED
    assert needles.scrub("revision 7") == "revision 7"
    assert redact_entry("config.update", "revision 7", None, {"x": "on"}, needles) is None


def test_a_non_ascii_id_is_found_in_the_stored_json(db):
    create_api_key(db, "zoe-key", "test", bound_external_id="Zoë-Ünal")
    erase_user(db, "Zoë-Ünal", "cli", HASH_KEY.encode())
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "key.create")).one()
    assert entry.after["bound_user"] == REDACTED and entry.target.startswith("erased-key-")


@pytest.mark.parametrize(
    "query,found",
    [("zel", True), ("ZELDA-7", True), ("tally_5e", True), ("quinter", True), ("q@ex", True)]
    + [("ze", False), ("a", False), ("7f3q", False), ("zelda-7f3qx", False)],
)
def test_a_search_named_the_user_when_it_would_have_found_them(query, found):
    needles = Needles.of(USER, EMAIL, NAME, None, IDENTIFIERS)
    assert needles.found_by(query) is found


def test_the_cli_says_when_it_cannot_reach_the_counters(runner, person):
    result = runner.invoke(args=["users", "erase", USER])
    assert result.output.splitlines()[-1] == (
        "limit counters: not reachable from here; they expire on their own"
    )


@pytest.mark.skipif(not REDIS_URL, reason="needs TALLY_TEST_REDIS_URL")
def test_the_cli_clears_their_counters_in_redis(make_app):
    flask_app = make_app(TALLY_RATELIMIT_STORAGE_URI=REDIS_URL)
    runtime = flask_app.extensions["tally"]
    with runtime.sessions() as session:
        build_person(session)
    storage = runtime.limits.storage
    keys = subject_keys(f"user:{USER}", time.time())
    window = next(k for k in keys if k.startswith("tally/msg/"))
    counter = next(k for k in keys if k.startswith("tally/usd/m"))
    storage.acquire_entry(window, 10, 86400)
    storage.incr(counter, 3600, 7)
    try:
        result = flask_app.test_cli_runner().invoke(args=["users", "erase", USER])
        assert result.output.splitlines()[-1] == "limit counters cleared in redis://"
        assert storage.get(counter) == 0
        assert storage.get_moving_window(window, 10, 86400)[1] == 0
    finally:
        forget_redis_counters(REDIS_URL)
